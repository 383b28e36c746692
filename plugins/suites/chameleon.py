"""Chameleon (Yan et al., AIDE, 2024): the hard Setting-II test set, real and fake photos of one pool."""

from __future__ import annotations

from typing import Iterator

from harness import hookimpl
from harness.suite import FAKE, REAL, Sample
from plugins.suites._layout import TreeSuite, child_dir, label_dirs


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
        self.ignored = []
        root = self.root_path()
        folders = []
        for split in ("train", "test"):
            folder = child_dir(root, split)
            if folder is not None and label_dirs(folder):
                folders.append((split, folder))
        if not folders and label_dirs(root):
            folders.append(("test", root))
        if not folders:
            raise self.layout_error(root, "no test/{0_real,1_fake} folders")
        for split, folder in folders:
            classes = label_dirs(folder)
            for label in (REAL, FAKE):
                for class_dir in classes.get(label, []):
                    for path in self.images(class_dir):
                        yield Sample(str(path), label, "chameleon", split)


@hookimpl
def register_suites(register):
    register(Chameleon)
