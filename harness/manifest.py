"""Cached manifests: one walk of a suite's tree, reused while the tree is unchanged.

The first time a suite root is read its samples are written, with each file's byte size and
format (and SHA-256 on request), to ``<cache>/manifests/<suite>-<key>.csv.gz`` plus a JSON
header. The header records the modification time of every folder the scan read (generator, split
and class folders, empty ones included), of every folder that holds a sample, and of the
root and the folders between: adding, removing or renaming a file changes its folder's
time, so a later load compares a few dozen folder times instead of walking the 1.3 M
files of GenImage again. A file rewritten in place under the same name is not seen
this way: ``refresh=True`` (``harness suite info --refresh``) or checksums catch that.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any


from harness.checkpoints import sha256_file
from harness.errors import HarnessError
from harness.images import check_file, format_of_name
from harness.suite import Sample, Suite

if TYPE_CHECKING:  # pandas loads where it is used: 'harness list' imports this module
    import pandas as pd

# 2: the suite readers record folders they do not read, take the folder suite's split from any path
# component, and the header watches every folder a scan read; manifests written before are walked again.
SCHEMA = 2
CACHE_ENV = "HARNESS_CACHE_DIR"
# A folder changed this close to the walk may have changed during it, within one tick of the
# file system's clock: such a manifest is written but walked again on next use.
SETTLE_SECONDS = 2.0
COLUMNS = ["path", "label", "generator", "split", "pair", "size", "format"]

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """``$HARNESS_CACHE_DIR``, else ``~/.cache/aigi-harness``."""
    raw = os.environ.get(CACHE_ENV)
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "aigi-harness"


@dataclass
class Manifest:
    """A suite's samples with their file facts; ``table`` has :data:`COLUMNS` (+ ``sha256``)."""

    suite: str
    root: Path | None
    table: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    #: True when this load walked the tree (False: read back from the cache).
    scanned: bool = False
    #: ``table`` with paths relative to the root, as hashed and written (kept from the build).
    relative_table: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    @property
    def samples(self) -> list[Sample]:
        t = self.table
        return [
            Sample(path, int(label), generator, split, pair or None)
            for path, label, generator, split, pair in zip(t["path"], t["label"], t["generator"], t["split"], t["pair"])
        ]

    @property
    def hash(self) -> str:
        """SHA-256 of the listing (paths relative to the root, labels, generators, splits, pairs, sizes)."""
        return self.meta["hash"]

    @property
    def ignored(self) -> list[tuple[str, str]]:
        return [tuple(item) for item in self.meta.get("ignored", [])]

    @property
    def verify_path(self) -> Path | None:
        return self.path.with_name(self.path.name.replace(".csv.gz", ".verify.json")) if self.path else None

    def last_verify(self) -> dict | None:
        """The result ``harness suite verify`` recorded for this very listing, if any."""
        path = self.verify_path
        if path is None or not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return record if record.get("manifest_hash") == self.hash else None

    @property
    def verify_partial_path(self) -> Path | None:
        """Results of an unfinished ``harness suite verify``, one JSON line per file."""
        return self.path.with_name(self.path.name.replace(".csv.gz", ".verify.partial.jsonl")) if self.path else None

    def save_verify(self, record: dict) -> None:
        if self.verify_path is None:
            return
        try:
            _atomic_write(self.verify_path, json.dumps({**record, "manifest_hash": self.hash}, indent=1).encode())
        except OSError as exc:
            log.warning("could not record the verify result in %s (%s)", self.verify_path, exc)


def suite_root(suite: Suite) -> Path | None:
    root_path = getattr(suite, "root_path", None)
    return Path(root_path()) if callable(root_path) else None


def manifest_key(suite: Suite, root: Path | None) -> str:
    ident = {
        "schema": SCHEMA,
        "suite": suite.name,
        "class": f"{type(suite).__module__}.{type(suite).__qualname__}",
        "root": str(root) if root else None,
        "config": suite.config,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_manifest(suite: Suite, *, refresh: bool = False, checksums: bool = False,
                  cache_dir: str | Path | None = None) -> Manifest:
    """The suite's manifest: read from the cache while the tree is unchanged, else walked and written.

    ``checksums=True`` adds a ``sha256`` column (computed once, then cached with the rest).
    A suite without a ``root_path()`` is scanned every time (nothing to key a cache on).
    """
    root = suite_root(suite)
    if root is None:
        return _build(suite, None, checksums, None)
    base = Path(cache_dir) if cache_dir else cache_root() / "manifests"
    path = base / f"{suite.name}-{manifest_key(suite, root)}.csv.gz"
    if not refresh:
        cached = _read_if_fresh(suite, root, path)
        if cached is not None:
            if checksums and "sha256" not in cached.table.columns:
                _add_checksums(cached)
                _write(cached)
            return cached
    manifest = _build(suite, root, checksums, path)
    _write(manifest)
    return manifest


def _write(manifest: Manifest) -> None:
    """Write the cache; a cache that cannot be written costs a walk next time, not the run."""
    try:
        _write_files(manifest)
    except OSError as exc:
        log.warning("could not write the manifest cache %s (%s); the tree will be walked again next time",
                    manifest.path, exc)


def load_samples(suite: Suite, *, refresh: bool = False, checksums: bool = False) -> list[Sample]:
    """The suite's samples through the manifest cache (the function every command uses)."""
    return load_manifest(suite, refresh=refresh, checksums=checksums).samples


# -- building --------------------------------------------------------------------------------


def _build(suite: Suite, root: Path | None, checksums: bool, path: Path | None) -> Manifest:
    import pandas as pd

    started = time.time()
    samples = list(suite.scan())
    if not samples:
        raise HarnessError(f"suite '{suite.name}' found no images under {root}" if root else
                           f"suite '{suite.name}' lists no images")
    sizes = getattr(suite, "file_sizes", None) or {}  # the scan's own stat of each file, where it kept one
    rows, not_files = [], []
    for s in samples:
        size = sizes.get(s.path)
        if size is None:
            try:
                st = os.stat(s.path)
            except OSError:
                size = -1  # listed but gone: decoding reports it; the size column shows it
            else:
                if not stat.S_ISREG(st.st_mode):  # a fifo or device named like an image is no zero-byte image
                    not_files.append([s.path, "not a regular file (a fifo, socket, device or folder)"])
                    continue
                size = st.st_size
        rows.append((s.path, s.label, s.generator, s.split, s.pair or "", size, format_of_name(s.path)))
    if not rows:
        raise HarnessError(f"suite '{suite.name}' lists no regular files: {not_files[0][0]} is not one")
    table = pd.DataFrame(rows, columns=COLUMNS)
    watch = _watched_paths(suite, root, [r[0] for r in rows] + [r[4] for r in rows if r[4]])
    meta = {
        "schema": SCHEMA,
        "suite": suite.name,
        "root": str(root) if root else None,
        "config": suite.config,
        "scanned_at": started,
        "watch": {str(p): _mtime(p) for p in watch},
        "ignored": [list(item) for item in getattr(suite, "ignored", [])] + not_files,
        "count": len(table),
    }
    manifest = Manifest(suite.name, root, table, meta, path, scanned=True)
    manifest.relative_table = _relative(table, root)
    manifest.meta["hash"] = _listing_hash(manifest.relative_table)
    if checksums:
        _add_checksums(manifest)
    return manifest


def _watched_paths(suite: Suite, root: Path | None, files: list[str]) -> list[Path]:
    """Every folder the scan read (``suite.visited``: generator, split and class folders, empty
    ones too), every folder holding one of ``files`` (the samples and their pairs), the folders
    up to the root, and the suite's own files."""
    folders = {_dirname(head) for head in {p[: p.rfind(os.sep) + 1] for p in files}}
    folders |= {str(p) for p in getattr(suite, "visited", None) or ()}
    watched: set[Path] = set()
    for folder in folders:
        current = Path(folder)
        while current not in watched:
            watched.add(current)
            if root is None or current == root or root not in current.parents:
                break
            current = current.parent
    if root is not None:
        watched.add(root)
    watched.update(Path(p) for p in getattr(suite, "watch_files", lambda: [])())
    return sorted(watched)


def _dirname(head: str) -> str:
    """``os.path.dirname`` of any path whose part up to its last separator is ``head`` (so that
    a million files cost a million slices, and only each folder one call)."""
    if head and head != os.sep * len(head):
        head = head.rstrip(os.sep)
    return head


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


HASHED_COLUMNS = ["path", "label", "generator", "split", "pair", "size"]


def _listing_hash(rel: pd.DataFrame) -> str:
    """SHA-256 of the listing's CSV (:data:`HASHED_COLUMNS`, rows sorted by path) of the table with
    paths relative to the root (:func:`_relative`): the text of ``rel[HASHED_COLUMNS]
    .sort_values("path", kind="stable").to_csv(index=False)``. A stable sort keeps duplicate paths in
    listing order, so the hash does not depend on the sort pandas picks (numpy's quicksort for object
    strings, pyarrow's for its string type)."""
    order = rel["path"].to_numpy(dtype=object).argsort(kind="stable")
    return hashlib.sha256(_csv_text(rel, HASHED_COLUMNS, order).encode()).hexdigest()


def _csv_text(table: pd.DataFrame, columns: list[str], order=None) -> str:
    """``table[columns].to_csv(index=False)`` (rows in ``order``), written straight from Python
    lists with the csv module that pandas writes with: a manifest has millions of rows."""
    rows = list(zip(*(table[c].tolist() for c in columns)))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows if order is None else (rows[i] for i in order))
    return buf.getvalue()


def _add_checksums(manifest: Manifest) -> None:
    def digest(path: str) -> str:
        try:
            return sha256_file(path)
        except OSError:
            return ""

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        manifest.table["sha256"] = list(pool.map(digest, manifest.table["path"], chunksize=64))
    manifest.relative_table = None  # it lacks the new column


# -- cache file ------------------------------------------------------------------------------


def _relative(table: pd.DataFrame, root: Path | None) -> pd.DataFrame:
    """Paths under the root stored relative to it (a moved copy of the cache stays small)."""
    out = table.copy()
    if root is None:
        return out
    prefix = str(root) + os.sep

    def rel(p: str) -> str:
        return p[len(prefix):] if p.startswith(prefix) else p

    out["path"] = [rel(p) for p in out["path"].tolist()]
    out["pair"] = [rel(p) if p else "" for p in out["pair"].tolist()]
    return out


def _absolute(table: pd.DataFrame, root: Path | None) -> pd.DataFrame:
    if root is None:
        return table
    base = str(root)
    table["path"] = [p if os.path.isabs(p) else os.path.join(base, p) for p in table["path"].tolist()]
    table["pair"] = [("" if not p else p if os.path.isabs(p) else os.path.join(base, p))
                     for p in table["pair"].tolist()]
    return table


def _write_files(manifest: Manifest) -> None:
    if manifest.path is None:
        return
    manifest.path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    # Level 1: a cache file of a million rows is written in a fraction of level 9's time.
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=1) as gz:
        rel = manifest.relative_table if manifest.relative_table is not None else _relative(manifest.table, manifest.root)
        gz.write(_csv_text(rel, list(rel.columns)).encode())
    # Table first, header last: a header on disk always describes a complete table.
    _atomic_write(manifest.path, buf.getvalue())
    _atomic_write(_header_path(manifest.path), json.dumps(manifest.meta, indent=1, default=str).encode())


def _header_path(path: Path) -> Path:
    return path.with_name(path.name.replace(".csv.gz", ".json"))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _read_if_fresh(suite: Suite, root: Path, path: Path) -> Manifest | None:
    import pandas as pd

    header = _header_path(path)
    try:
        meta = json.loads(header.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if meta.get("schema") != SCHEMA or meta.get("root") != str(root):
        return None
    scanned_at = float(meta.get("scanned_at", 0))
    for folder, mtime in meta.get("watch", {}).items():
        if mtime is None or _mtime(Path(folder)) != mtime:
            return None
        if mtime / 1e9 > scanned_at - SETTLE_SECONDS:
            return None  # changed right before or during the walk: cannot be sure it saw everything
    try:
        table = pd.read_csv(path, dtype={"path": str, "generator": str, "split": str, "pair": str, "format": str,
                                         "sha256": str}, keep_default_na=False)
    except (OSError, ValueError, EOFError):
        return None
    if len(table) != meta.get("count") or list(table.columns[: len(COLUMNS)]) != COLUMNS:
        return None
    return Manifest(suite.name, root, _absolute(table, root), meta, path, scanned=False)


# -- decoding every file -----------------------------------------------------------------------


#: Files decoded between two appends to the partial verify file.
VERIFY_CHUNK = 2048


def verify(manifest: Manifest, *, workers: int = 0, progress: bool = True) -> dict[str, Any]:
    """Decode every listed file (samples and pairs) with the harness's loader.

    Returns and records ``{"checked", "unreadable": [[path, reason]], "format_mismatch":
    [[path, named, found]]}``; ``workers`` > 1 decodes in that many processes.

    Resumable: results are appended every :data:`VERIFY_CHUNK` files to
    :attr:`Manifest.verify_partial_path`, keyed by path, size and modification time; a verify
    that was interrupted decodes on its next run only the files not done (or changed since),
    and gives the same result. A finished verify deletes that file, so the next one decodes
    everything again (a disk can go bad without changing a file's time).
    """
    from tqdm import tqdm

    paths = list(dict.fromkeys(list(manifest.table["path"]) + [p for p in manifest.table["pair"] if p]))
    partial = manifest.verify_partial_path
    done = _reuse_partial(partial, set(paths))
    todo = [p for p in paths if p not in done]
    if done:
        log.info("verify: %d of %d files were decoded by an interrupted verify and are not decoded again",
                 len(done), len(paths))
    bar = tqdm(total=len(paths), initial=len(done), desc=f"verify {manifest.suite}", unit="file",
               disable=not progress)
    writer = _PartialWriter(partial)
    try:
        if workers > 1 and len(todo) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=workers) as pool:
                chunksize = max(1, min(256, len(todo) // (workers * 8) or 1))
                for entry in pool.map(_check_entry, todo, chunksize=chunksize):
                    done[entry[0]] = entry
                    writer.add(entry)
                    bar.update(1)
        else:
            for path in todo:
                entry = _check_entry(path)
                done[path] = entry
                writer.add(entry)
                bar.update(1)
    finally:
        writer.close()  # what was decoded before an interruption is kept for the next run
        bar.close()
    results = [(path, done[path][3], done[path][4]) for path in paths]
    unreadable = sorted([path, reason] for path, _, reason in results if reason is not None)
    # Pillow calls some camera JPEGs "MPO" (multi-picture JPEG): still JPEG by name.
    mismatch = sorted([path, format_of_name(path), fmt] for path, fmt, _ in results
                      if fmt is not None and {"MPO": "JPEG"}.get(fmt, fmt) != format_of_name(path))
    record = {"checked": len(paths), "unreadable": unreadable, "format_mismatch": mismatch}
    manifest.save_verify(record)
    if partial is not None:
        try:
            partial.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not delete %s (%s)", partial, exc)
    return record


def _file_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _check_entry(path: str) -> tuple[str, int | None, int | None, str | None, str | None]:
    """(path, size, mtime_ns, format found, reason unreadable): the file's key is read before
    it is decoded, so a file changed while it is decoded is decoded again next time."""
    key = _file_key(path)
    _, fmt, reason = check_file(path)
    size, mtime = key if key is not None else (None, None)
    return path, size, mtime, fmt, reason


def _reuse_partial(partial: Path | None, wanted: set[str]) -> dict[str, tuple]:
    """Entries of an interrupted verify for files still listed and unchanged (same size and time)."""
    if partial is None or not partial.is_file():
        return {}
    entries: dict[str, tuple] = {}
    try:
        with partial.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    path, size, mtime, fmt, reason = json.loads(line)
                except (ValueError, TypeError):
                    continue  # a line torn by the interruption
                if path in wanted and size is not None:
                    entries[path] = (path, size, mtime, fmt, reason)
    except OSError as exc:
        log.warning("could not read the partial verify results %s (%s); decoding every file", partial, exc)
        return {}
    return {path: entry for path, entry in entries.items() if _file_key(path) == (entry[1], entry[2])}


class _PartialWriter:
    """Appends verify entries to the partial file, :data:`VERIFY_CHUNK` at a time."""

    def __init__(self, path: Path | None):
        self.path = path
        self.buffer: list[str] = []
        self.failed = path is None

    def add(self, entry: tuple) -> None:
        if self.failed or entry[1] is None:  # no file to key the entry on: decoded again next time
            return
        self.buffer.append(json.dumps(list(entry)) + "\n")
        if len(self.buffer) >= VERIFY_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.failed or not self.buffer:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a+b") as fh:
                # A line torn by an earlier interruption is ended first, so this chunk starts clean.
                if fh.tell() > 0:
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        fh.write(b"\n")
                fh.write("".join(self.buffer).encode("utf-8"))
        except OSError as exc:
            log.warning("could not record verify progress in %s (%s); an interrupted verify will start over",
                        self.path, exc)
            self.failed = True
        self.buffer = []

    def close(self) -> None:
        self.flush()
