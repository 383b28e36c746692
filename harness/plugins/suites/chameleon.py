"""Chameleon (Yan et al., AIDE, 2024): the hard Setting-II test set, real and fake photos of one pool."""

from __future__ import annotations

from typing import Iterator

from harness import hookimpl
from harness.suite import FAKE, REAL, Sample
from harness.plugins.suites._layout import TreeSuite, label_dirs, split_children


class Chameleon(TreeSuite):
    name = "chameleon"
    description = "Chameleon: human-hard AI-generated images vs real photos (test only, ~26k images)"
    reference = "Yan et al., A Sanity Check for AI-generated Image Detection (AIDE), 2024"
    root_env = "HARNESS_CHAMELEON_ROOT"
    layout = "<root>/test/{0_real,1_fake}/* (a root that is the test folder itself also works)"
    defaults = {"root": None}

    def generators(self) -> list[str]:
        return ["chameleon"]

    def splits(self) -> list[str]:
        return ["test"]

    def scan(self) -> Iterator[Sample]:
        self.begin_scan()
        root = self.root_path()
        names = {"train": "train", "test": "test"}
        if any(label_dirs(folder) for folder in split_children(root, names, self.name).values()):
            folders = list(self.split_children(root, names).items())
        elif label_dirs(root):  # the root is the test folder itself
            folders = [("test", root)]
        else:
            raise self.layout_error(root, "no test/{0_real,1_fake} folders")
        for split, folder in folders:
            classes = self.label_dirs(folder)
            if not classes:
                self.ignore(folder, "folder without {0_real,1_fake} inside")
            for label in (REAL, FAKE):
                for class_dir in classes.get(label, []):
                    for path in self.images(class_dir):
                        yield Sample(str(path), label, "chameleon", split)


@hookimpl
def register_suites(register):
    register(Chameleon)
