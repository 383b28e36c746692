"""Any folder of labelled images: ``[<split>/][<generator>/][<more>/][<split>/]{0_real,1_fake}``."""

from __future__ import annotations

from typing import Iterator

from harness import hookimpl
from harness.suite import FAKE, REAL, Sample
from harness.plugins.suites._layout import TreeSuite, pairs_by_stem

SPLIT_NAMES = ("train", "val", "test")


class FolderSuite(TreeSuite):
    name = "folder"
    description = "Any folder tree with {0_real,1_fake}, {real,fake} or {nature,ai} class folders"
    root_env = "HARNESS_FOLDER_ROOT"
    layout = ("<root>/[{train,val,test}/][<generator>/][<more folders>/][{train,val,test}/]"
              "{0_real,1_fake | real,fake | nature,ai}/* (class folders named by label; the split folder "
              "nearest the class folders gives the split; the first other folder names the generator)")
    # generator: the name used when the class folders sit directly under the root (or split);
    # default the root folder's name. split: the split of a tree without train/val/test folders.
    defaults = {"root": None, "generator": None, "split": "test", "max_depth": 5}
    settings = {"generator": {"type": ["string", "null"]}, "max_depth": {"minimum": 1}}

    def generators(self) -> list[str]:
        return sorted(self.listed_generators())

    def scan(self) -> Iterator[Sample]:
        self.begin_scan()
        root = self.root_path()
        groups = self.class_groups(root, int(self.config.get("max_depth") or 5), split_names=SPLIT_NAMES)
        if not groups:
            raise self.layout_error(root, "no class folders (0_real/1_fake, real/fake or nature/ai) found")
        samples = []
        for parts, classes in groups:
            split, generator = split_and_generator(parts)
            split = split or self.config.get("split") or "test"
            generator = generator or self.config.get("generator") or root.name
            reals = [p for folder in classes.get(REAL, []) for p in self.images(folder)]
            fakes = [p for folder in classes.get(FAKE, []) for p in self.images(folder)]
            pairs = pairs_by_stem(reals, fakes)
            samples += [Sample(str(p), REAL, generator, split) for p in reals]
            samples += [Sample(str(p), FAKE, generator, split, str(pairs[p]) if pairs.get(p) else None)
                        for p in fakes]
        yield from samples


def split_and_generator(parts: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(split, generator) of the folders from the root down to a folder of class folders.

    The split is the train/val/test folder nearest the class folders, wherever it lies
    (``train/ganA/...``, ``ganA/test/...``, ``ganA/inner/val/...``); the generator is the
    first folder that is not a split folder. None where the path has no such folder.
    """
    split = next((part.lower() for part in reversed(parts) if part.lower() in SPLIT_NAMES), None)
    generator = next((part for part in parts if part.lower() not in SPLIT_NAMES), None)
    return split, generator


@hookimpl
def register_suites(register):
    register(FolderSuite)
