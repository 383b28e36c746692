"""The manifest cache: written once, reused without a walk, refreshed when the tree changes."""

from __future__ import annotations

import gzip
import os

import pandas as pd
import pytest

from harness import manifest as mf
from harness.checkpoints import sha256_file
from harness.plugins.suites.folder import FolderSuite
from harness.plugins.suites.genimage import GenImage
from tests.suite_trees import numbered, touch_images

OLD = 1_600_000_000  # 2020: folders look settled, as a real dataset's do


def _age(root):
    for dirpath, _, _ in os.walk(root):
        os.utime(dirpath, (OLD, OLD))


def _tree(root):
    touch_images(root / "glide" / "imagenet_glide" / "val" / "ai", numbered("g", 3, ".png"))
    touch_images(root / "glide" / "imagenet_glide" / "val" / "nature", numbered("n", 2, ".JPEG"))
    (root / "glide" / "imagenet_glide" / "val" / "nature" / "n00000.JPEG").write_bytes(b"")
    _age(root)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(mf.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


class CountingGenImage(GenImage):
    scans = 0

    def scan(self):
        type(self).scans += 1
        yield from super().scan()


def test_manifest_is_written_then_reused_without_a_walk(tmp_path, cache):
    root = tmp_path / "GenImage"
    _tree(root)
    CountingGenImage.scans = 0
    suite = CountingGenImage({"root": str(root)})
    first = mf.load_manifest(suite)
    assert first.scanned and CountingGenImage.scans == 1
    assert first.path.parent == cache / "manifests" and first.path.is_file()
    table = first.table.set_index("path")
    empty = str(root / "glide" / "imagenet_glide" / "val" / "nature" / "n00000.JPEG")
    assert table.loc[empty, "size"] == 0 and table.loc[empty, "format"] == "JPEG"
    assert set(table["format"]) == {"JPEG", "PNG"}
    assert all(table.loc[p, "size"] == os.path.getsize(p) for p in table.index)

    again = mf.load_manifest(CountingGenImage({"root": str(root)}))
    assert not again.scanned and CountingGenImage.scans == 1
    assert again.samples == first.samples and again.hash == first.hash
    # Stored relative to the root: the cache does not repeat the root 1.3 M times.
    with gzip.open(first.path, "rt") as fh:
        assert str(root) not in fh.read()


def test_a_changed_tree_is_noticed(tmp_path, cache):
    root = tmp_path / "GenImage"
    _tree(root)
    first = mf.load_manifest(GenImage({"root": str(root)}))
    ai = root / "glide" / "imagenet_glide" / "val" / "ai"
    touch_images(ai, ["g99999.png"])
    added = mf.load_manifest(GenImage({"root": str(root)}))
    assert added.scanned and len(added.samples) == len(first.samples) + 1 and added.hash != first.hash
    _age(root)
    mf.load_manifest(GenImage({"root": str(root)}))
    (ai / "g00000.png").unlink()
    removed = mf.load_manifest(GenImage({"root": str(root)}))
    assert removed.scanned and len(removed.samples) == len(first.samples)
    # A new generator folder changes the root's own time.
    _age(root)
    mf.load_manifest(GenImage({"root": str(root)}))
    touch_images(root / "ADM" / "val" / "ai", ["a.png"])
    assert "ADM" in {s.generator for s in mf.load_samples(GenImage({"root": str(root)}))}


def test_freshly_changed_folders_are_walked_again_once(tmp_path, cache):
    root = tmp_path / "GenImage"
    touch_images(root / "glide" / "val" / "ai", ["g.png"])  # mtimes are "now"
    assert mf.load_manifest(GenImage({"root": str(root)})).scanned
    assert mf.load_manifest(GenImage({"root": str(root)})).scanned  # still within the settle window
    _age(root)
    mf.load_manifest(GenImage({"root": str(root)}))
    assert not mf.load_manifest(GenImage({"root": str(root)})).scanned


def test_refresh_and_config_change_walk_again(tmp_path, cache):
    root = tmp_path / "GenImage"
    _tree(root)
    mf.load_manifest(GenImage({"root": str(root)}))
    assert mf.load_manifest(GenImage({"root": str(root)}), refresh=True).scanned
    assert mf.load_manifest(GenImage({"root": str(root), "val_fraction": 0.5})).scanned


def test_checksums_on_request(tmp_path, cache):
    root = tmp_path / "GenImage"
    _tree(root)
    plain = mf.load_manifest(GenImage({"root": str(root)}))
    assert "sha256" not in plain.table.columns
    summed = mf.load_manifest(GenImage({"root": str(root)}), checksums=True)
    assert not summed.scanned
    for path, digest in zip(summed.table["path"], summed.table["sha256"]):
        assert digest == sha256_file(path)
    reread = mf.load_manifest(GenImage({"root": str(root)}))
    assert list(reread.table["sha256"]) == list(summed.table["sha256"]) and reread.hash == plain.hash


def test_hash_does_not_depend_on_where_the_tree_lives(tmp_path, cache):
    for name in ("a", "b"):
        _tree(tmp_path / name)
    ha = mf.load_manifest(GenImage({"root": str(tmp_path / "a")})).hash
    hb = mf.load_manifest(GenImage({"root": str(tmp_path / "b")})).hash
    assert ha == hb


def test_a_corrupt_cache_file_is_rebuilt(tmp_path, cache):
    root = tmp_path / "GenImage"
    _tree(root)
    first = mf.load_manifest(GenImage({"root": str(root)}))
    first.path.write_bytes(b"not gzip")
    again = mf.load_manifest(GenImage({"root": str(root)}))
    assert again.scanned and again.samples == first.samples
    assert isinstance(pd.read_csv(again.path), pd.DataFrame)


def test_an_unwritable_cache_costs_a_walk_not_the_run(tmp_path, monkeypatch, caplog):
    root = tmp_path / "GenImage"
    _tree(root)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv(mf.CACHE_ENV, str(blocker))
    manifest = mf.load_manifest(GenImage({"root": str(root)}))
    assert manifest.scanned and len(manifest.samples) == 5
    assert "could not write the manifest cache" in caplog.text
    assert mf.load_manifest(GenImage({"root": str(root)})).scanned


# -- folders that were empty at the first scan are watched too --------------------------------


def test_files_added_to_a_folder_empty_at_the_first_scan_are_listed(tmp_path, cache):
    root = tmp_path / "GenImage"
    touch_images(root / "glide" / "val" / "ai", numbered("g", 2, ".png"))
    (root / "glide" / "val" / "nature").mkdir()  # reals still downloading
    _age(root)
    first = mf.load_manifest(GenImage({"root": str(root)}))
    assert first.scanned and {s.label for s in first.samples} == {1}
    assert not mf.load_manifest(GenImage({"root": str(root)})).scanned
    touch_images(root / "glide" / "val" / "nature", numbered("n", 3, ".JPEG"))
    again = mf.load_manifest(GenImage({"root": str(root)}))
    assert again.scanned and len([s for s in again.samples if s.label == 0]) == 3


def test_files_added_to_an_empty_generator_folder_are_listed(tmp_path, cache):
    root = tmp_path / "data"
    touch_images(root / "ganA" / "0_real", ["r.png"])
    touch_images(root / "ganA" / "1_fake", ["f.png"])
    for cls in ("0_real", "1_fake"):
        (root / "ganB" / cls).mkdir(parents=True)
    _age(root)
    assert len(mf.load_manifest(FolderSuite({"root": str(root)})).samples) == 2
    assert not mf.load_manifest(FolderSuite({"root": str(root)})).scanned
    touch_images(root / "ganB" / "1_fake", ["f.png"])
    again = mf.load_manifest(FolderSuite({"root": str(root)}))
    assert again.scanned and ("ganB", 1) in {(s.generator, s.label) for s in again.samples}


# -- an interrupted verify resumes ------------------------------------------------------------


class Interrupted(Exception):
    pass


def _verify_tree(root):
    touch_images(root / "glide" / "val" / "ai", numbered("g", 6, ".png"))
    touch_images(root / "glide" / "val" / "nature", numbered("n", 5, ".JPEG"))
    (root / "glide" / "val" / "ai" / "g00002.png").write_bytes(b"")
    (root / "glide" / "val" / "nature" / "n00003.JPEG").write_bytes(b"not an image")
    _age(root)


def test_an_interrupted_verify_decodes_only_the_rest_on_the_next_run(tmp_path, cache, monkeypatch):
    root = tmp_path / "GenImage"
    _verify_tree(root)
    manifest = mf.load_manifest(GenImage({"root": str(root)}))
    reference = mf.verify(mf.load_manifest(GenImage({"root": str(root)}), cache_dir=tmp_path / "other"),
                          progress=False)
    assert reference["checked"] == 11 and len(reference["unreadable"]) == 2

    decoded = []
    interrupt_after = [4]
    real_check = mf.check_file

    def check(path):
        if len(decoded) == interrupt_after[0]:
            raise Interrupted  # killed after the first chunk and one more file
        decoded.append(path)
        return real_check(path)

    monkeypatch.setattr(mf, "VERIFY_CHUNK", 3)
    monkeypatch.setattr(mf, "check_file", check)
    with pytest.raises(Interrupted):
        mf.verify(manifest, progress=False)
    assert manifest.last_verify() is None  # no result for an unfinished verify
    partial = manifest.verify_partial_path
    assert len(partial.read_text().splitlines()) == 4
    first_run = list(decoded)
    interrupt_after[0] = None

    # A file rewritten since it was decoded is decoded again.
    changed = first_run[0]
    os.utime(changed, ns=(OLD * 10**9 + 5, OLD * 10**9 + 5))
    decoded.clear()
    record = mf.verify(manifest, progress=False)
    assert sorted(decoded) == sorted((set(manifest.table["path"]) - set(first_run)) | {changed})
    assert record == reference
    assert manifest.last_verify()["unreadable"] == reference["unreadable"]
    assert not partial.exists()  # a finished verify leaves nothing to resume

    decoded.clear()
    assert mf.verify(manifest, progress=False) == reference and len(decoded) == 11  # the next one decodes all


def test_a_torn_partial_line_is_decoded_again(tmp_path, cache, monkeypatch):
    root = tmp_path / "GenImage"
    _verify_tree(root)
    manifest = mf.load_manifest(GenImage({"root": str(root)}))
    reference = mf.verify(manifest, progress=False)
    paths = sorted(manifest.table["path"])
    size, mtime = os.stat(paths[0]).st_size, os.stat(paths[0]).st_mtime_ns
    manifest.verify_partial_path.write_text(
        f'["{paths[0]}", {size}, {mtime}, "PNG", null]\n["{paths[1]}", 12')  # killed mid-line
    decoded = []
    real_check = mf.check_file
    monkeypatch.setattr(mf, "check_file", lambda p: decoded.append(p) or real_check(p))
    assert mf.verify(manifest, progress=False) == reference
    assert sorted(decoded) == paths[1:]
