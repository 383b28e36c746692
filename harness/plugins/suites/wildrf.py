"""WildRF (Cavia et al., "Real-Time Deepfake Detection in the Real-World", 2024): real and fake
images collected from social platforms; train on one platform, test on the others.

Layout, from the official README (github.com/barcavia/RealTime-DeepfakeDetection-in-the-RealWorld)::

    train/{0_real,1_fake}    val/{0_real,1_fake}
    test/{reddit,twitter,facebook}/{0_real,1_fake}

The train and val folders are not named by platform in the archive: the README's protocol is
"train on one platform (e.g., Reddit) and test on the others", so they are listed under the
platform ``suite.train_platform`` (default ``reddit``), and the shipped ``wildrf`` protocol
trains on it and tests on all three test folders (the authors' ``test_config.py`` evaluates
reddit, twitter and facebook).
"""

from __future__ import annotations

from typing import Iterator

from harness import hookimpl
from harness.suite import Sample
from harness.plugins.suites._layout import TreeSuite
from harness.plugins.suites._subsets import class_samples, published_folders

PLATFORMS = ["reddit", "twitter", "facebook"]


class WildRF(TreeSuite):
    name = "wildrf"
    description = "WildRF: real/fake images from Reddit, Twitter and Facebook; train on one platform, test on all"
    reference = "Cavia et al., Real-Time Deepfake Detection in the Real-World, arXiv 2406.09398"
    root_env = "HARNESS_WILDRF_ROOT"
    layout = "<root>/{train,val}/{0_real,1_fake}/*, <root>/test/{reddit,twitter,facebook}/{0_real,1_fake}/*"
    defaults = {"root": None, "train_platform": "reddit"}

    def generators(self) -> list[str]:
        return list(PLATFORMS)

    def scan(self) -> Iterator[Sample]:
        self.begin_scan()
        root = self.root_path()
        train_platform = self.config.get("train_platform") or "reddit"
        top = self.split_children(root, {"train": "train", "val": "val", "test": "test"}, "WildRF")
        listed = False
        for split in ("train", "val"):
            if split in top:
                listed |= yield from class_samples(self, top[split], train_platform, split)
        if "test" in top:
            for platform, folder in published_folders(self, top["test"], PLATFORMS, "test platforms").items():
                listed |= yield from class_samples(self, folder, platform, "test")
        if not listed:
            raise self.layout_error(root, "no {train,val}/{0_real,1_fake} or test/<platform>/{0_real,1_fake} "
                                          "folders holding images")


@hookimpl
def register_suites(register):
    register(WildRF)
