"""Folder-walking shared by the suites that read a tree of images.

Labels always come from a folder's name (``0_real/1_fake``, ``real/fake``, ``nature/ai``),
never from listing order; every listing is sorted so that a scan is the same on every
machine; files that do not carry an image extension are not samples, but they are recorded
(``TreeSuite.ignored``) so that nothing is dropped without a trace.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import ClassVar

from harness.errors import HarnessError
from harness.images import is_image_name
from harness.suite import FAKE, REAL, Suite

#: Class folder names seen in the wild, lower case.
LABEL_DIRS = {"0_real": REAL, "1_fake": FAKE, "real": REAL, "fake": FAKE, "nature": REAL, "ai": FAKE}


def label_of_dir(name: str) -> int | None:
    return LABEL_DIRS.get(name.lower())


def subdirs(folder: Path) -> list[Path]:
    """Child folders, sorted by name; hidden ones (``.git``, ``.ipynb_checkpoints``) are skipped."""
    try:
        with os.scandir(folder) as it:
            return sorted((Path(e.path) for e in it if e.is_dir() and not e.name.startswith(".")),
                          key=lambda p: p.name)
    except OSError:
        return []


def child_dir(folder: Path, name: str) -> Path | None:
    """The child folder called ``name``, matched without regard to case."""
    exact = folder / name
    if exact.is_dir():
        return exact
    for child in subdirs(folder):
        if child.name.lower() == name.lower():
            return child
    return None


def label_dirs(folder: Path) -> dict[int, list[Path]]:
    """The class folders directly inside ``folder`` by label."""
    found: dict[int, list[Path]] = {}
    for child in subdirs(folder):
        label = label_of_dir(child.name)
        if label is not None:
            found.setdefault(label, []).append(child)
    return found


def stable_fraction(key: str) -> float:
    """A number in [0, 1) that depends on ``key`` alone (not on the machine or the listing)."""
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def describe(folder: Path, limit: int = 12) -> str:
    """What is in ``folder``, for error messages."""
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        return f"cannot list {folder}: {exc.strerror or exc}"
    if not names:
        return f"{folder} is empty"
    shown = ", ".join(n + ("/" if (folder / n).is_dir() else "") for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{folder} holds {shown}{more}"


class TreeSuite(Suite):
    """A suite read from a folder tree under one root.

    Subclasses set ``layout`` (the expected tree, shown in errors) and ``root_env``.
    """

    layout: ClassVar[str] = ""
    defaults: ClassVar[dict] = {"root": None}

    def __init__(self, config=None):
        super().__init__(config)
        #: (path, reason) for the files in class folders that are not listed as samples.
        self.ignored: list[tuple[str, str]] = []

    def root_path(self) -> Path:
        """The suite's root folder: ``suite.root``, else the ``root_env`` variable."""
        raw = self.config.get("root")
        source = "suite.root"
        if not raw and self.root_env:
            raw = os.environ.get(self.root_env)
            source = self.root_env
        if not raw:
            env = f" or set {self.root_env}" if self.root_env else ""
            raise HarnessError(
                f"suite '{self.name}' needs the folder it is stored in: pass --set suite.root=PATH{env}. "
                f"Expected layout: {self.layout}")
        root = Path(raw).expanduser().resolve()
        if not root.is_dir():
            raise HarnessError(f"suite '{self.name}': root {root} (from {source}) is not a folder. "
                               f"Expected layout: {self.layout}")
        return root

    def layout_error(self, root: Path, problem: str, look_in: Path | None = None) -> HarnessError:
        return HarnessError(f"suite '{self.name}': {problem}. Expected layout: {self.layout}. "
                            f"Found: {describe(look_in or root)}")

    def images(self, folder: Path) -> list[Path]:
        """Image files under ``folder`` (recursively), sorted; other files go to ``ignored``."""
        found: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if is_image_name(name):
                    found.append(Path(path))
                else:
                    self.ignored.append((path, "not an image file name"))
        found.sort()
        return found

    def listed_generators(self) -> list[str]:
        """Generators in first-listed order, read through the manifest cache (no second walk)."""
        from harness.manifest import load_manifest

        return list(dict.fromkeys(load_manifest(self).table["generator"]))

    def watch_files(self) -> list[Path]:
        """Files besides the sample folders whose change invalidates the manifest."""
        return []


def find_class_groups(root: Path, max_depth: int = 4) -> list[tuple[tuple[str, ...], dict[int, list[Path]]]]:
    """Every folder under ``root`` that holds class folders, as (path parts from root, class folders).

    The walk does not enter class folders (they hold the images) and stops ``max_depth``
    levels down, so that it lists folders, not files.
    """
    groups = []

    def visit(folder: Path, parts: tuple[str, ...]) -> None:
        classes = label_dirs(folder)
        if classes:
            groups.append((parts, classes))
            return
        if len(parts) >= max_depth:
            return
        for child in subdirs(folder):
            visit(child, parts + (child.name,))

    visit(root, ())
    return groups


def pairs_by_stem(reals: list[Path], fakes: list[Path]) -> dict[Path, Path]:
    """fake -> the real image with the same file stem (how reconstructions are named)."""
    by_stem = {p.stem: p for p in reals}
    return {f: by_stem[f.stem] for f in fakes if f.stem in by_stem}
