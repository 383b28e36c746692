"""``harness predict``: every input file gets exactly one row, broken files keep theirs with the
reason, scores equal the detector's own logits, the score cache answers a second call."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import tiny_detector
from harness.checkpoints import save_checkpoint, sha256_file
from harness.cli import main
from harness.images import load_image
from harness.predict import collect_inputs
from harness.registry import get_plugins
from tiny_detector import TinyResidualDetector


def _image(seed: int, size: int = 40) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.fixture
def mixed(tmp_path, monkeypatch):
    """A folder of mixed formats and broken files, a nested subfolder, and tiny-residual weights."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    tiny_detector.install(get_plugins())
    folder = tmp_path / "in"
    (folder / "sub" / "deeper").mkdir(parents=True)
    _image(0).save(folder / "a.png")
    _image(1).save(folder / "b.jpg", quality=90)
    _image(2).save(folder / "c.webp", quality=80)
    _image(3).save(folder / "sub" / "d.png")
    _image(4).save(folder / "sub" / "deeper" / "e.jpeg")
    whole = io.BytesIO()
    _image(5).save(whole, format="PNG")
    (folder / "truncated.png").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "empty.jpg").write_bytes(b"")
    det = TinyResidualDetector()
    weights = save_checkpoint(tmp_path / "w.safetensors", det.checkpoint_state(), det.config)
    TinyResidualDetector.calls = 0
    return tmp_path, folder, weights


GOOD = {"a.png", "b.jpg", "c.webp", "sub/d.png", "sub/deeper/e.jpeg"}
BAD = {"truncated.png", "notes.txt", "empty.jpg"}


def _predict(*args) -> None:
    assert main(["predict", "--detector", "tiny-residual", "--set", "eval.workers=0", *args]) == 0


def test_mixed_folder_lists_every_file_once_with_errors_for_broken_ones(mixed, capsys):
    tmp_path, folder, weights = mixed
    _predict(str(folder), "--weights", str(weights), "--out", str(tmp_path / "out.csv"))
    err = capsys.readouterr().err
    frame = pd.read_csv(tmp_path / "out.csv")

    names = [str(Path(p).relative_to(folder)) for p in frame["path"]]
    assert sorted(names) == sorted(GOOD | BAD) and len(names) == len(set(names))
    assert list(frame.columns) == ["path", "p_fake", "logit", "error", "input_policy", "weights_sha256"]
    by_name = dict(zip(names, frame.itertuples()))
    for name in BAD:
        row = by_name[name]
        assert isinstance(row.error, str) and row.error and math.isnan(row.logit) and math.isnan(row.p_fake)
    assert "zero-byte" in by_name["empty.jpg"].error
    assert "3 could not be scored" in err

    # scores equal the detector applied by hand to each decoded image
    det = TinyResidualDetector()
    det.load_weights(weights)
    for name in GOOD:
        row = by_name[name]
        x = det.preprocess([load_image(folder / name)])[0][None]
        with torch.no_grad():
            expected = float(det(x))
        assert row.logit == pytest.approx(expected, abs=1e-5)
        assert row.p_fake == pytest.approx(1 / (1 + math.exp(-expected)), abs=1e-6)
        assert isinstance(row.error, float) and math.isnan(row.error)
    assert set(frame["weights_sha256"]) == {sha256_file(weights)}
    assert json.loads(frame["input_policy"][0]) == det.input_policy(False).to_dict()


def test_second_call_reads_the_cache_and_jsonl_goes_to_stdout(mixed, capsys):
    tmp_path, folder, weights = mixed
    _predict(str(folder), "--weights", str(weights), "--out", str(tmp_path / "first.jsonl"))
    calls = TinyResidualDetector.calls
    assert calls > 0
    capsys.readouterr()
    _predict(str(folder), "--weights", str(weights), "--format", "jsonl")
    out = capsys.readouterr().out
    assert TinyResidualDetector.calls == calls  # the model was not called again
    rows = [json.loads(line) for line in out.splitlines()]
    first = [json.loads(line) for line in (tmp_path / "first.jsonl").read_text().splitlines()]
    assert rows == first and len(rows) == len(GOOD | BAD)
    assert all((r["logit"] is None) == (r["error"] is not None) for r in rows)


def test_stdin_csv_and_duplicate_inputs(mixed, monkeypatch):
    tmp_path, folder, _ = mixed
    listing = tmp_path / "list.csv"
    pd.DataFrame({"path": ["in/a.png", str(folder / "b.jpg"), "in/missing.png"]}).to_csv(listing, index=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{folder / 'a.png'}\n\n{folder / 'sub' / 'd.png'}\n"))
    import sys

    paths = collect_inputs([str(listing), "-", str(folder / "b.jpg")], sys.stdin)
    assert paths == [str(folder / "a.png"), str(folder / "b.jpg"), str(folder / "missing.png"),
                     str(folder / "sub" / "d.png")]


def test_missing_file_gets_an_error_row_and_untrained_detector_is_refused(mixed, capsys):
    tmp_path, folder, weights = mixed
    _predict(str(folder / "a.png"), str(tmp_path / "nope.png"), "--weights", str(weights), "--format", "csv")
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(frame) == 2 and frame["error"].isna().tolist() == [True, False]
    assert main(["predict", "--detector", "tiny-residual", str(folder)]) == 2
    assert "needs --weights" in capsys.readouterr().err
    assert main(["predict", "--detector", "tiny-residual", str(folder), "--weights", str(weights),
                 "--out", str(tmp_path / "x.txt")]) == 2


def test_a_harness_checkpoint_rebuilds_the_detector_it_was_trained_as(mixed, capsys):
    """A Tiny-LaDeDa saved at 64 px scores at 64 px, not at the 256-px default (the sidecar's configuration)."""
    from harness.config import merge
    from harness.plugins.detectors.ladeda import TinyLaDeDa

    tmp_path, folder, _ = mixed
    det = TinyLaDeDa(merge(TinyLaDeDa.defaults, {"load_size": 64, "crop_size": 56}))
    weights = save_checkpoint(tmp_path / "tiny64.safetensors", det.checkpoint_state(), det.config)
    out = tmp_path / "scores.jsonl"
    assert main(["predict", str(folder / "a.png"), "--detector", "tiny-ladeda", "--weights", str(weights),
                 "--set", "eval.workers=0", "--out", str(out)]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert "Resize((64, 64))" in str(row["input_policy"])
    det.eval()
    (x,) = det.preprocess([load_image(folder / "a.png")])
    with torch.no_grad():
        assert row["logit"] == pytest.approx(float(det(x[None])[0]), abs=1e-5)
