"""The scandir-based tree walk and manifest build against the pathlib/os.walk code they replaced,
and what the walk does with entries it does not list (issue 15: fifos, .heic files, loops)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePath

import numpy as np
import pandas as pd
import pytest

import tiny_detector
from fakedata import write_pairs
from harness.checkpoints import save_checkpoint
from harness.cli import main
from harness.images import IMAGE_EXTENSIONS, format_of_name, is_image_name, name_suffix
from harness.manifest import load_manifest
from harness.plugins.suites._layout import TreeSuite, _ancestor_keys
from harness.plugins.suites.folder import FolderSuite
from harness.registry import get_plugins
from tiny_detector import TinyResidualDetector


def walk_reference(suite: TreeSuite, folder: Path) -> list[Path]:
    """``TreeSuite.images`` as it was: os.walk and one Path per file."""
    found: list[Path] = []
    ancestors = _ancestor_keys(folder)
    seen = set(ancestors)

    def unlistable(exc: OSError) -> None:
        suite.ignore(exc.filename or str(folder), f"cannot list this folder: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unlistable, followlinks=True):
        suite.visit(dirpath)
        keep = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            sub = os.path.join(dirpath, name)
            st = os.stat(sub)
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                suite.ignore(sub, "symlink loop: leads to a folder that contains it; not followed")
            elif key in seen:
                suite.ignore(sub, "second path to a folder already read (symlink); not read twice")
            else:
                seen.add(key)
                keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if PurePath(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(path))
            else:
                suite.ignore(path, "not an image file name")
    found.sort()
    return found


ODD_NAMES = ["b.png", "a.PNG", "..png", ".hidden.png", ".png", "x.", "x.jpeg.txt", "z.tar.gz", "c d.webp",
             "a-b.jpg", "noext", "y.heic", "9.TIFF"]


def odd_tree(root: Path) -> Path:
    """Nested folders whose names sort differently as strings and as paths (``a-b`` vs ``a/``),
    odd file names, a hidden folder, a symlink loop and a second path to a folder."""
    cls = root / "gen" / "1_fake"
    for folder in (cls, cls / "a", cls / "a-b", cls / "a.d", cls / ".cache", root / "elsewhere"):
        folder.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(ODD_NAMES):
            (folder / name).write_bytes(b"x" * (i + len(folder.name)))
    (cls / "a" / "up").symlink_to(root / "gen", target_is_directory=True)
    (cls / "link1").symlink_to(root / "elsewhere", target_is_directory=True)
    (cls / "link2").symlink_to(root / "elsewhere", target_is_directory=True)
    return cls


def test_names_read_by_string_operations_match_pathlib():
    for name in ODD_NAMES + ["dir.d/file", "/r/x.d/y.JPG", "a..b", ".", ".."]:
        assert name_suffix(name) == PurePath(name).suffix
        assert is_image_name(name) == (PurePath(name).suffix.lower() in IMAGE_EXTENSIONS)
        suffix = PurePath(name).suffix.lower()
        assert format_of_name(name) in (suffix.lstrip(".").upper() or "none", "JPEG", "TIFF")


def test_scandir_walk_lists_ignores_and_visits_what_the_old_walk_did(tmp_path):
    cls = odd_tree(tmp_path)
    new, old = TreeSuite(), TreeSuite()
    listed = new.images(cls)
    reference = walk_reference(old, cls)
    assert [str(p) for p in listed] == [str(p) for p in reference]
    assert [(p.name, p.stem) for p in listed] == [(p.name, p.stem) for p in reference]
    assert new.ignored == old.ignored
    assert new.visited == old.visited
    assert new.file_sizes == {str(p): os.stat(p).st_size for p in reference}
    assert any("symlink loop" in reason for _, reason in new.ignored)


def old_listing_hash(table: pd.DataFrame, root: Path) -> str:
    rel = table.copy()
    prefix = str(root) + os.sep
    rel["path"] = [p[len(prefix):] if p.startswith(prefix) else p for p in rel["path"]]
    rel["pair"] = [(p[len(prefix):] if p.startswith(prefix) else p) if p else "" for p in rel["pair"]]
    text = rel[["path", "label", "generator", "split", "pair", "size"]].sort_values("path").to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()


def test_manifest_rows_hash_and_cache_match_the_old_build(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    write_pairs(data / "g1" / "0_real", data / "g1" / "1_fake", 5, seed=1)
    write_pairs(data / "g2" / "0_real", data / "g2" / "1_fake", 4, seed=2)
    (data / "g2" / "1_fake" / "notes.txt").write_text("not an image")
    odd_tree(data / "g3")
    suite = FolderSuite({"root": str(data)})
    manifest = load_manifest(suite, refresh=True)
    table = manifest.table
    assert list(table["size"]) == [os.stat(p).st_size for p in table["path"]]
    assert list(table["format"]) == [format_of_name(str(PurePath(p))) for p in table["path"]]
    assert manifest.hash == old_listing_hash(table, Path(suite.root_path()))
    reread = load_manifest(FolderSuite({"root": str(data)}))
    pd.testing.assert_frame_equal(reread.table, table)
    assert reread.hash == manifest.hash


def test_a_fifo_with_an_image_name_is_not_a_zero_byte_image(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data"
    write_pairs(data / "g1" / "0_real", data / "g1" / "1_fake", 3, seed=1)
    fifo = data / "g1" / "1_fake" / "stuck.png"
    os.mkfifo(fifo)
    manifest = load_manifest(FolderSuite({"root": str(data)}), refresh=True)
    assert str(fifo) not in set(manifest.table["path"])
    assert (str(fifo), "not a regular file (a fifo)") in manifest.ignored
    assert main(["suite", "info", "folder", "--set", f"suite.root={data}"]) == 0
    out = capsys.readouterr().out
    assert "zero-byte" not in out and f"{fifo}: not a regular file (a fifo)" in out


def test_every_entry_the_scan_does_not_read_reaches_results_json(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    write_pairs(data / "test" / "g1" / "0_real", data / "test" / "g1" / "1_fake", 4, seed=1)
    heic = data / "test" / "g1" / "1_fake" / "phone.heic"
    heic.write_bytes(b"not decodable here")
    loop = data / "test" / "g1" / "0_real" / "again"
    loop.symlink_to(data / "test" / "g1", target_is_directory=True)
    os.mkfifo(data / "test" / "g1" / "0_real" / "pipe.jpg")
    tiny_detector.install(get_plugins())
    det = TinyResidualDetector()
    weights = save_checkpoint(tmp_path / "w.safetensors", det.checkpoint_state(), det.config)
    assert main(["run", "--detector", "tiny-residual", "--suite", "folder", "--set", f"suite.root={data}",
                 "--out", str(tmp_path / "runs"), "--set", "eval.workers=0", "--set", "eval.bootstrap=20",
                 "--weights", str(weights)]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    ignored = {item["path"]: item["reason"] for item in results["ignored"]}
    assert ignored[str(heic)] == "not an image file name"
    assert ignored[str(loop)].startswith("symlink loop")
    assert ignored[str(data / "test" / "g1" / "0_real" / "pipe.jpg")] == "not a regular file (a fifo)"
    assert results["counts"]["test"] == 8


@pytest.mark.parametrize("name", ["a.png", "..png", ".png", "x.y.jpg", "noext", "a."])
def test_listed_paths_answer_name_and_stem_as_pathlib(tmp_path, name):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / name).write_bytes(b"x")
    suite = TreeSuite()
    listed = suite.images(folder)
    if is_image_name(name):
        (path,) = listed
        assert (path.name, path.stem, str(path)) == (Path(path).name, Path(path).stem, str(folder / name))
        assert type(str(path)) is str
    else:
        assert listed == [] and suite.ignored == [(str(folder / name), "not an image file name")]


def test_a_listed_fifo_is_moved_to_the_ignored_entries(tmp_path, monkeypatch):
    """A suite that lists paths itself (a CSV manifest) may name a fifo: the manifest does not
    count it as a zero-byte image."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    write_pairs(tmp_path / "real", tmp_path / "fake", 2, seed=3)
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "list.csv").write_text("path,label\nreal/00000.png,0\nfake/00000.png,1\npipe.png,1\n")
    manifest = load_manifest(get_plugins().get("suite", "csv")({"root": str(tmp_path / "list.csv")}), refresh=True)
    assert sorted(manifest.table["path"]) == [str(tmp_path / "fake" / "00000.png"), str(tmp_path / "real" / "00000.png")]
    assert [str(tmp_path / "pipe.png"), "not a regular file (a fifo, socket, device or folder)"] in \
        [list(item) for item in manifest.ignored]


def test_listing_hash_and_cache_text_are_what_pandas_writes():
    from harness.manifest import _csv_text, _listing_hash

    names = ['b.png', 'a,comma.png', 'q"uote.png', 'new\nline.png', 'é.png', 'b.png', 'a.png', 'b.png', ' sp.png']
    frame = pd.DataFrame({
        "path": names, "label": [i % 2 for i in range(len(names))],
        "generator": [f"g{i}" for i in range(len(names))],  # duplicates of b.png differ: their order counts
        "split": ["test"] * len(names), "pair": ["", "x.png", "", "", "", "y,z.png", "", "", ""],
        "size": list(range(-1, len(names) - 1)), "format": ["PNG"] * len(names),
    })
    cols = ["path", "label", "generator", "split", "pair", "size"]
    want = frame[cols].sort_values("path", kind="stable").to_csv(index=False)
    assert _listing_hash(frame) == hashlib.sha256(want.encode()).hexdigest()
    assert _csv_text(frame, list(frame.columns)) == frame.to_csv(index=False)
    # many ties in a long listing: listing order kept, whichever string type pandas uses
    rng = np.random.default_rng(0)
    big = pd.DataFrame({"path": [f"p{i}.png" for i in rng.integers(0, 300, 5000)], "label": rng.integers(0, 2, 5000),
                        "generator": [f"g{i}" for i in range(5000)], "split": "train", "pair": "",
                        "size": rng.integers(0, 10**6, 5000)})
    want = big[cols].sort_values("path", kind="stable").to_csv(index=False)
    assert _listing_hash(big) == hashlib.sha256(want.encode()).hexdigest()
