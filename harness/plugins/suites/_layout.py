"""Folder-walking shared by the suites that read a tree of images.

Labels always come from a folder's name (``0_real/1_fake``, ``real/fake``, ``nature/ai``),
never from listing order; every listing is sorted so that a scan is the same on every
machine; files that do not carry an image extension are not samples, but they are recorded
(``TreeSuite.ignored``) so that nothing is dropped without a trace. So are folders the layout
does not read: a folder beside class folders (or split folders) whose name is not a class
(split) name (``1_fakes``, ``natrue``, ``tarin``), folders that cannot be listed, and symlinked
folders that lead back into the walk (other symlinked folders are followed).
"""

from __future__ import annotations

import hashlib
import operator
import os
import stat
from pathlib import Path
from typing import Callable, ClassVar

from harness.errors import HarnessError
from harness.images import is_image_name
from harness.suite import FAKE, REAL, Suite

#: Class folder names seen in the wild, lower case.
LABEL_DIRS = {"0_real": REAL, "1_fake": FAKE, "real": REAL, "fake": FAKE, "nature": REAL, "ai": FAKE}
#: Why a folder beside class folders is not read.
NOT_A_CLASS_FOLDER = "folder name is not a class folder (0_real/1_fake, real/fake, nature/ai)"
#: Why a folder without class folders (beside one that has them) is not read.
NO_CLASS_FOLDERS = "no class folders (0_real/1_fake, real/fake, nature/ai) inside"

#: ``ignore(path, reason)``: records a folder or file that is not listed (``TreeSuite.ignore``).
Ignore = Callable[[str, str], None]
#: ``visit(folder)``: records a folder whose listing the scan depends on (``TreeSuite.visit``).
Visit = Callable[[Path], None]


class ImagePath(str):
    """A listed image's path: a plain ``str`` that also answers ``name`` and ``stem`` as
    ``pathlib`` does, without building a ``Path`` per file (GenImage has over a million)."""

    __slots__ = ()

    @property
    def name(self) -> str:
        return self.rpartition(os.sep)[2]

    @property
    def stem(self) -> str:
        name = self.name
        dot = name.rfind(".")
        return name[:dot] if 0 < dot < len(name) - 1 else name


_entry_name = operator.attrgetter("name")


def _path_order(path: str) -> list[str]:
    """Sort key giving ``pathlib``'s order (component by component) for plain strings."""
    return path.split(os.sep)


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


def label_of_dir(name: str) -> int | None:
    return LABEL_DIRS.get(name.lower())


def subdirs(folder: Path, *, ignore: Ignore | None = None, visit: Visit | None = None) -> list[Path]:
    """Child folders, sorted by name; hidden ones (``.git``, ``.ipynb_checkpoints``) are skipped.

    A folder that cannot be listed gives ``[]``, and is passed to ``ignore`` with the reason;
    a listed folder is passed to ``visit``.
    """
    found = _list_dirs(folder, ignore, visit)
    return [] if found is None else found


def _list_dirs(folder: Path, ignore: Ignore | None, visit: Visit | None) -> list[Path] | None:
    """:func:`subdirs`, with None for a folder that cannot be listed."""
    found = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                try:
                    is_dir = entry.is_dir()  # follows symlinks
                except OSError:
                    is_dir = False
                if is_dir:
                    found.append(Path(entry.path))
    except OSError as exc:
        if ignore is not None:
            ignore(str(folder), f"cannot list this folder: {exc.strerror or exc}")
        return None
    if visit is not None:
        visit(Path(folder))
    return sorted(found, key=lambda p: p.name)


def child_dir(folder: Path, name: str, *, ignore: Ignore | None = None, visit: Visit | None = None) -> Path | None:
    """The child folder called ``name``, matched without regard to case."""
    exact = folder / name
    if exact.is_dir():
        if visit is not None:
            visit(Path(folder))  # a sibling spelled differently would change this folder's time too
        return exact
    for child in subdirs(folder, ignore=ignore, visit=visit):
        if child.name.lower() == name.lower():
            return child
    return None


def _classes(children: list[Path]) -> tuple[dict[int, list[Path]], list[Path]]:
    found: dict[int, list[Path]] = {}
    others = []
    for child in children:
        label = label_of_dir(child.name)
        if label is None:
            others.append(child)
        else:
            found.setdefault(label, []).append(child)
    return found, others


def label_dirs(folder: Path, *, ignore: Ignore | None = None, visit: Visit | None = None) -> dict[int, list[Path]]:
    """The class folders directly inside ``folder`` by label.

    When there are class folders, every other folder beside them (``1_fakes``, ``natrue``,
    ``1_fake (1)``) is passed to ``ignore``: it is not read, and says so.
    """
    found, others = _classes(subdirs(folder, ignore=ignore, visit=visit))
    if found and ignore is not None:
        for child in others:
            ignore(str(child), NOT_A_CLASS_FOLDER)
    return found


def split_children(folder: Path, names: dict[str, str], what: str, *, kind: str = "split folder",
                   ignore: Ignore | None = None, visit: Visit | None = None) -> dict[str, Path]:
    """The split folders of ``folder`` (``names``: folder name -> split), by split.

    When there is one, every other folder beside it is passed to ``ignore`` as "not a
    ``kind`` of ``what``". Names are matched without regard to case.
    """
    lower = {name.lower(): split for name, split in names.items()}
    found: dict[str, Path] = {}
    others = []
    for child in subdirs(folder, ignore=ignore, visit=visit):
        split = lower.get(child.name.lower())
        if split is not None and split not in found:
            found[split] = child
        else:
            others.append(child)
    if found and ignore is not None:
        shown = ", ".join(names)
        for child in others:
            ignore(str(child), f"folder name is not a {kind} of {what} ({shown})")
    return found


def published_name(name: str, published: list[str]) -> str | None:
    """``name`` as spelled in ``published`` (matched without regard to case), or None."""
    if name in published:
        return name
    lower = {p.lower(): p for p in published}
    return lower.get(name.lower())


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

    Subclasses set ``layout`` (the expected tree, shown in errors) and ``root_env``, call
    :meth:`begin_scan` first in ``scan()``, and list folders through the methods below
    (:meth:`subdirs`, :meth:`child_dir`, :meth:`label_dirs`, :meth:`class_groups`,
    :meth:`images`), which record what is not read in ``ignored`` and every folder read in
    ``visited`` (the manifest watches those folders for changes).
    """

    layout: ClassVar[str] = ""
    defaults: ClassVar[dict] = {"root": None}

    def __init__(self, config=None):
        super().__init__(config)
        #: (path, reason) for the files and folders in the tree that are not listed as samples.
        self.ignored: list[tuple[str, str]] = []
        #: Every folder the last scan listed (the manifest is stale when one of them changes).
        self.visited: set[str] = set()
        #: Byte size of every file :meth:`images` listed, from its one ``stat``.
        self.file_sizes: dict[str, int] = {}
        self._ignored_seen: set[tuple[str, str]] = set()

    def begin_scan(self) -> None:
        """Forget what the previous scan recorded."""
        self.ignored = []
        self.visited = set()
        self.file_sizes = {}
        self._ignored_seen = set()

    def ignore(self, path, reason: str) -> None:
        """Record ``path`` as not listed, for ``reason`` (once, however often it is met)."""
        key = (str(path), reason)
        if key not in self._ignored_seen:
            self._ignored_seen.add(key)
            self.ignored.append(key)

    def visit(self, folder) -> None:
        self.visited.add(str(folder))

    # -- listing folders, with what is left out recorded ------------------------------------

    def subdirs(self, folder: Path) -> list[Path]:
        return subdirs(folder, ignore=self.ignore, visit=self.visit)

    def child_dir(self, folder: Path, name: str) -> Path | None:
        return child_dir(folder, name, ignore=self.ignore, visit=self.visit)

    def label_dirs(self, folder: Path) -> dict[int, list[Path]]:
        return label_dirs(folder, ignore=self.ignore, visit=self.visit)

    def split_children(self, folder: Path, names: dict[str, str], what: str | None = None,
                       kind: str = "split folder") -> dict[str, Path]:
        return split_children(folder, names, what or self.name, kind=kind, ignore=self.ignore, visit=self.visit)

    def class_groups(self, root: Path, max_depth: int = 4, split_names: tuple[str, ...] = ()):
        return find_class_groups(root, max_depth, split_names=split_names, ignore=self.ignore, visit=self.visit)

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

    def images(self, folder: Path) -> list[ImagePath]:
        """Image files under ``folder`` (recursively), sorted as paths; other entries go to ``ignored``.

        Read with ``os.scandir``: each file costs one ``stat``, whose size is kept in
        :attr:`file_sizes` for the manifest. Symlinked folders are followed; one that leads back
        to a folder of this walk (or to a folder that contains it) is recorded and not entered
        again. Folders that cannot be listed, and image-named entries that are not regular files
        (a fifo, a socket, a device, a broken link), are recorded with the reason.
        """
        found: list[ImagePath] = []
        ancestors = _ancestor_keys(folder)
        seen = set(ancestors)

        def walk(dirpath: str) -> None:
            try:
                with os.scandir(dirpath) as it:
                    entries = sorted(it, key=_entry_name)
            except OSError as exc:
                self.ignore(exc.filename or dirpath, f"cannot list this folder: {exc.strerror or exc}")
                return
            self.visit(dirpath)
            subdirs, files = [], []
            for entry in entries:
                try:
                    is_dir = entry.is_dir()  # follows symlinks
                except OSError:
                    is_dir = False
                (subdirs if is_dir else files).append(entry)
            keep = []
            for entry in subdirs:
                if entry.name.startswith("."):
                    continue
                try:
                    st = entry.stat()
                except OSError as exc:
                    self.ignore(entry.path, f"cannot read this folder: {exc.strerror or exc}")
                    continue
                key = (st.st_dev, st.st_ino)
                if key in ancestors:
                    self.ignore(entry.path, "symlink loop: leads to a folder that contains it; not followed")
                elif key in seen:
                    self.ignore(entry.path, "second path to a folder already read (symlink); not read twice")
                else:
                    seen.add(key)
                    keep.append(entry.path)
            for entry in files:
                if not is_image_name(entry.name):
                    self.ignore(entry.path, "not an image file name")
                    continue
                try:
                    st = entry.stat()  # follows symlinks
                except OSError as exc:
                    self.ignore(entry.path, f"cannot read this file: {exc.strerror or exc}")
                    continue
                if not stat.S_ISREG(st.st_mode):
                    self.ignore(entry.path, f"not a regular file ({_file_kind(st.st_mode)})")
                    continue
                found.append(ImagePath(entry.path))
                self.file_sizes[entry.path] = st.st_size
            nested.extend(keep)
            for sub in keep:
                walk(sub)

        nested: list[str] = []
        walk(os.fspath(folder))
        if nested:  # one folder's files come out in name order already
            found.sort(key=_path_order)
        return found

    def listed_generators(self) -> list[str]:
        """Generators in first-listed order, read through the manifest cache (no second walk)."""
        from harness.manifest import load_manifest

        return list(dict.fromkeys(load_manifest(self).table["generator"]))

    def watch_files(self) -> list[Path]:
        """Files besides the sample folders whose change invalidates the manifest."""
        return []


def _ancestor_keys(folder: Path) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of ``folder`` (symlinks resolved) and of every folder above it."""
    keys = set()
    current = Path(os.path.realpath(folder))
    while True:
        try:
            st = os.stat(current)
            keys.add((st.st_dev, st.st_ino))
        except OSError:
            pass
        if current.parent == current:
            return keys
        current = current.parent


def find_class_groups(root: Path, max_depth: int = 4, *, split_names: tuple[str, ...] = (),
                      ignore: Ignore | None = None, visit: Visit | None = None,
                      ) -> list[tuple[tuple[str, ...], dict[int, list[Path]]]]:
    """Every folder under ``root`` that holds class folders, as (path parts from root, class folders).

    The walk does not enter class folders (they hold the images) and stops ``max_depth``
    levels down, so that it lists folders, not files. With ``ignore``, what is not read is
    recorded: folders beside class folders, folders beside split folders (``split_names``,
    lower case) whose name is not a split, and folders without class folders beside ones
    that have them.
    """
    groups = []
    found, empty, too_deep, unlistable = 0, 1, 2, 3

    def walk(folder: Path, parts: tuple[str, ...]) -> int:
        children = _list_dirs(folder, ignore, visit)
        if children is None:
            return unlistable  # recorded as such
        classes, others = _classes(children)
        if classes:
            groups.append((parts, classes))
            if ignore is not None:
                for child in others:
                    ignore(str(child), NOT_A_CLASS_FOLDER)
            return found
        if len(parts) >= max_depth:
            return too_deep if children else empty
        if split_names:
            splits = [c for c in children if c.name.lower() in split_names]
            if splits:
                if ignore is not None:
                    for child in children:
                        if child not in splits:
                            ignore(str(child), f"folder name is not a split folder ({', '.join(split_names)}) "
                                               f"but lies beside one")
                children = splits
        results = [(child, walk(child, parts + (child.name,))) for child in children]
        if any(r == found for _, r in results):
            if ignore is not None:
                for child, r in results:
                    if r == empty:
                        ignore(str(child), NO_CLASS_FOLDERS)
                    elif r == too_deep:
                        ignore(str(child), f"{NO_CLASS_FOLDERS} (searched {max_depth} folder level(s) below "
                                           f"{root}; deeper ones are not)")
            return found
        return too_deep if any(r == too_deep for _, r in results) else empty

    walk(root, ())
    return groups


def pairs_by_stem(reals: list[Path], fakes: list[Path]) -> dict[Path, Path]:
    """fake -> the real image with the same file stem (how reconstructions are named)."""
    by_stem = {p.stem: p for p in reals}
    return {f: by_stem[f.stem] for f in fakes if f.stem in by_stem}
