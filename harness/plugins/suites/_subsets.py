"""Subset folders named as a paper publishes them, for the suites that reproduce a published table."""

from __future__ import annotations

from pathlib import Path

from harness.suite import FAKE, REAL, Sample
from harness.plugins.suites._layout import TreeSuite, published_name


def published_folders(suite: TreeSuite, parent: Path, published: list[str], what: str) -> dict[str, Path]:
    """The child folders of ``parent`` whose names are in ``published`` (matched without regard
    to case), by published name, in published order.

    Any other folder is recorded in ``suite.ignored`` as not one of ``what`` (a misspelled
    ``Midjouney`` is reported, not read); a second folder whose name differs only in case is
    recorded too.
    """
    found: dict[str, Path] = {}
    for child in suite.subdirs(parent):
        name = published_name(child.name, published)
        if name is None:
            suite.ignore(child, f"not one of the published {what} of {suite.name} ({', '.join(published)})")
        elif name in found:
            suite.ignore(child, f"a second folder for {name} (names differ only in case)")
        else:
            found[name] = child
    return {name: found[name] for name in published if name in found}


def class_samples(suite: TreeSuite, folder: Path, generator: str, split: str):
    """Yield the samples of ``folder/{0_real,1_fake}`` as ``generator`` / ``split``; return whether
    there were any. A folder without class folders, or with one class only, or whose class
    folders hold no images, is recorded in ``suite.ignored``."""
    classes = suite.label_dirs(folder)
    if not classes:
        inside = ", ".join(f"{child.name}/" for child in suite.subdirs(folder)[:5])
        suite.ignore(folder, "folder without {0_real,1_fake} inside" + (f" (it holds {inside})" if inside else ""))
        return False
    listed = False
    for label in (REAL, FAKE):
        if not classes.get(label):
            suite.ignore(folder, f"no {'0_real' if label == REAL else '1_fake'} folder inside: "
                                 f"{generator} {split} has one class only")
        for class_dir in classes.get(label, []):
            for path in suite.images(class_dir):
                listed = True
                yield Sample(str(path), label, generator, split)
    if not listed:
        suite.ignore(folder, "class folders hold no images")
    return listed
