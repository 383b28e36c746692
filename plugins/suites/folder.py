"""Any folder of labelled images: ``[<split>/][<generator>/][<class>/...]{0_real,1_fake}``."""

from __future__ import annotations

from typing import Iterator

from harness import hookimpl
from harness.suite import FAKE, REAL, Sample
from plugins.suites._layout import TreeSuite, find_class_groups, pairs_by_stem

SPLIT_NAMES = ("train", "val", "test")


class FolderSuite(TreeSuite):
    name = "folder"
    description = "Any folder tree with {0_real,1_fake}, {real,fake} or {nature,ai} class folders"
    root_env = "HARNESS_FOLDER_ROOT"
    layout = ("<root>/[{train,val,test}/][<generator>/][<more folders>/]{0_real,1_fake | real,fake | nature,ai}/* "
              "(class folders named by label; the first folder below the split names the generator)")
    # generator: the name used when the class folders sit directly under the root (or split);
    # default the root folder's name. split: the split of a tree without train/val/test folders.
    defaults = {"root": None, "generator": None, "split": "test", "max_depth": 5}

    def generators(self) -> list[str]:
        return sorted(self.listed_generators())

    def scan(self) -> Iterator[Sample]:
        self.ignored = []
        root = self.root_path()
        groups = find_class_groups(root, int(self.config.get("max_depth") or 5))
        if not groups:
            raise self.layout_error(root, "no class folders (0_real/1_fake, real/fake or nature/ai) found")
        samples = []
        for parts, classes in groups:
            split = self.config.get("split") or "test"
            if parts and parts[0].lower() in SPLIT_NAMES:
                split, parts = parts[0].lower(), parts[1:]
            generator = parts[0] if parts else (self.config.get("generator") or root.name)
            reals = [p for folder in classes.get(REAL, []) for p in self.images(folder)]
            fakes = [p for folder in classes.get(FAKE, []) for p in self.images(folder)]
            pairs = pairs_by_stem(reals, fakes)
            samples += [Sample(str(p), REAL, generator, split) for p in reals]
            samples += [Sample(str(p), FAKE, generator, split, str(pairs[p]) if p in pairs else None) for p in fakes]
        yield from samples


@hookimpl
def register_suites(register):
    register(FolderSuite)
