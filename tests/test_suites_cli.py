"""``harness suite info`` and ``harness suite verify`` on a tree with hostile files."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from harness.cli import main
from harness.manifest import CACHE_ENV, load_manifest
from harness.plugins.suites.csv_manifest import CSVSuite
from tests.suite_trees import numbered, touch_images

OLD = 1_600_000_000


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """GenImage-style: JPEG reals, PNG fakes (the known format shortcut) and broken files."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    root = tmp_path / "GenImage"
    base = root / "ADM" / "imagenet_ai_0508_adm" / "val"
    touch_images(base / "nature", numbered("ILSVRC2012_val_", 6, ".JPEG"))
    touch_images(base / "ai", numbered("adm_", 5, ".PNG"))
    (base / "ai" / "empty.png").write_bytes(b"")
    (base / "ai" / "text.png").write_text("hello")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buf, "PNG")
    (base / "nature" / "cut.JPEG").write_bytes(buf.getvalue()[:40])  # a truncated PNG named .JPEG
    (base / "nature" / "Thumbs.db").write_bytes(b"\0")
    for dirpath, _, _ in os.walk(root):
        os.utime(dirpath, (OLD, OLD))
    return root


def test_info_shows_counts_format_mix_and_zero_byte_files(tree, capsys):
    assert main(["suite", "info", "genimage", "--set", f"suite.root={tree}"]) == 0
    out = capsys.readouterr().out
    assert "walked the tree" in out and "14 images" in out
    line = next(l for l in out.splitlines() if l.startswith("ADM"))
    assert line.split() == ["ADM", "test", "7", "7", "0"]
    assert "format shortcut: 100% of reals are JPEG but 100% of fakes are PNG" in out
    assert "unreadable files: 1 (file sizes only" in out and "empty.png: zero-byte file" in out
    assert "Thumbs.db: not an image file name" in out
    facts = next(l for l in out.split("generators (family")[1].splitlines() if l.startswith("ADM"))
    assert facts.split() == ["ADM", "diffusion", "2021-05-11"]  # ADM's paper (arXiv 2105.05233)

    assert main(["suite", "info", "genimage", "--set", f"suite.root={tree}"]) == 0
    assert "read from cache, tree unchanged" in capsys.readouterr().out


def test_verify_lists_unreadable_files_with_reasons_and_info_remembers(tree, capsys):
    assert main(["suite", "verify", "genimage", "--set", f"suite.root={tree}", "--workers", "2"]) == 1
    out = capsys.readouterr().out
    assert "decoded 14 files: 3 unreadable" in out
    assert "empty.png: zero-byte file" in out
    assert "text.png: not an image file (unknown format)" in out
    assert "cut.JPEG: corrupt or truncated image" in out or "cut.JPEG: not an image" in out
    assert main(["suite", "info", "genimage", "--set", f"suite.root={tree}"]) == 0
    out = capsys.readouterr().out
    assert "unreadable files: 3 (from the last 'harness suite verify'" in out and "text.png" in out


def test_verify_reports_files_whose_content_is_another_format(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    touch_images(tmp_path / "data" / "real", ["a.png"])
    Image.new("RGB", (4, 4)).save(tmp_path / "data" / "real" / "b.png", "JPEG")
    touch_images(tmp_path / "data" / "fake", ["c.png"])
    assert main(["suite", "verify", "folder", "--set", f"suite.root={tmp_path / 'data'}", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "decoded 3 files: 0 unreadable" in out and "b.png: named PNG, holds JPEG" in out


def test_unknown_suite_and_missing_root_are_one_line_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("HARNESS_CHAMELEON_ROOT", raising=False)
    assert main(["suite", "info", "genimag"]) == 2
    assert "Did you mean: genimage" in capsys.readouterr().err
    assert main(["suite", "info", "chameleon"]) == 2
    err = capsys.readouterr().err
    assert "HARNESS_CHAMELEON_ROOT" in err and "test/{0_real,1_fake}" in err
    assert main(["suite", "build", "genimage"]) == 2
    assert "only the mini suite" in capsys.readouterr().err


def test_csv_manifest_notices_an_edited_csv(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    touch_images(tmp_path / "imgs", ["a.png", "b.png"])
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,label\nimgs/a.png,0\n")
    os.utime(csv_path, (OLD, OLD))
    for folder in (tmp_path, tmp_path / "imgs"):
        os.utime(folder, (OLD, OLD))
    assert len(load_manifest(CSVSuite({"root": str(csv_path)})).samples) == 1
    assert not load_manifest(CSVSuite({"root": str(csv_path)})).scanned
    csv_path.write_text("path,label\nimgs/a.png,0\nimgs/b.png,1\n")
    again = load_manifest(CSVSuite({"root": str(csv_path)}))
    assert again.scanned and [s.label for s in again.samples] == [0, 1]


def test_info_lists_folders_that_are_not_read_with_the_reason(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    root = tmp_path / "data"
    touch_images(root / "ganA" / "0_real", ["r.png"])
    touch_images(root / "ganA" / "1_fake", ["f.png"])
    touch_images(root / "ganA" / "1_fakes", ["g.png", "h.png"])
    assert main(["suite", "info", "folder", "--set", f"suite.root={root}"]) == 0
    out = capsys.readouterr().out
    assert "2 images" in out
    assert (f"{root / 'ganA' / '1_fakes'}: folder name is not a class folder (0_real/1_fake, real/fake, nature/ai)"
            in out)
    assert main(["suite", "info", "folder", "--set", f"suite.root={root}"]) == 0  # from the cache, or walked again
    assert "1_fakes: folder name is not a class folder" in capsys.readouterr().out
