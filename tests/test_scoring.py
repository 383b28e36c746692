"""Scoring: equals a brute-force loop, stores every score, resumes after a hard kill."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fakedata import write_pairs
from harness.errors import HarnessError
from harness.images import load_image
from harness.metrics import evaluate
from harness.scoring import score_samples
from harness.suite import Sample
from tiny_detector import TinyResidualDetector

TESTS = Path(__file__).resolve().parent


def make_samples(root: Path, n: int = 12, gens=("g1", "g2")) -> list[Sample]:
    samples = []
    for k, gen in enumerate(gens):
        for real, fake in write_pairs(root / gen / "real", root / gen / "fake", n, seed=k):
            samples.append(Sample(str(real), 0, gen, "test"))
            samples.append(Sample(str(fake), 1, gen, "test", pair=str(real)))
    return samples


@pytest.fixture(autouse=True)
def reset_counters():
    TinyResidualDetector.calls = 0
    TinyResidualDetector.kill_at_call = None
    yield
    TinyResidualDetector.kill_at_call = None


def brute_force(detector, samples):
    out = []
    with torch.no_grad():
        for s in samples:
            x = detector.preprocess([load_image(s.path)])[0]
            out.append(float(detector(x[None])[0]))
    return np.array(out)


def test_scores_equal_a_one_image_loop_and_keep_order(tmp_path):
    samples = make_samples(tmp_path / "data")
    det = TinyResidualDetector()
    df = score_samples(det, samples, device="cpu", batch_size=5)
    assert list(df.columns) == ["path", "generator", "split", "label", "logit"]
    assert df["path"].tolist() == [s.path for s in samples]
    assert df["label"].tolist() == [s.label for s in samples]
    np.testing.assert_allclose(df["logit"].to_numpy(), brute_force(det, samples), rtol=1e-6, atol=1e-6)
    assert df.attrs["skipped"] == [] and df.attrs["cached"] == 0
    # and the tiny detector really separates the classes (else later tests prove little)
    assert (df.loc[df.label == 1, "logit"] > 0).all() and (df.loc[df.label == 0, "logit"] < 0).all()


def test_second_identical_run_never_calls_the_model(tmp_path):
    samples = make_samples(tmp_path / "data")
    cache = tmp_path / "cache"
    det = TinyResidualDetector()
    first = score_samples(det, samples, device="cpu", batch_size=8, cache_dir=cache)
    calls = TinyResidualDetector.calls
    assert calls == -(-len(samples) // 8)
    second = score_samples(det, samples, device="cpu", batch_size=8, cache_dir=cache)
    assert TinyResidualDetector.calls == calls  # not one forward
    assert second.attrs["cached"] == len(samples) and second.attrs["scored"] == 0
    pd.testing.assert_frame_equal(first, second)


def test_cache_key_follows_weights_transform_and_file_changes(tmp_path):
    samples = make_samples(tmp_path / "data", n=4)
    cache = tmp_path / "cache"
    det = TinyResidualDetector()
    score_samples(det, samples, device="cpu", cache_dir=cache)
    # other weights -> other key -> everything scored again, with the new weights' values
    other = TinyResidualDetector({"bias": 2.0})
    df = score_samples(other, samples, device="cpu", cache_dir=cache)
    assert df.attrs["scored"] == len(samples)
    np.testing.assert_allclose(df["logit"], brute_force(other, samples), rtol=1e-6)
    # a transform needs a key, and a keyed transform gets its own scores
    flip = lambda img: img.transpose(0)  # noqa: E731
    with pytest.raises(HarnessError):
        score_samples(det, samples, device="cpu", cache_dir=cache, transform=flip)
    df = score_samples(det, samples, device="cpu", cache_dir=cache, transform=flip, transform_key="flip")
    assert df.attrs["scored"] == len(samples)
    # a file that changed on disk (new mtime) is scored again, alone
    path = Path(samples[0].path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    df = score_samples(det, samples, device="cpu", cache_dir=cache)
    assert df.attrs["scored"] == 1 and df.attrs["cached"] == len(samples) - 1


class HeadOnlyCheckpoint(TinyResidualDetector):
    """Saves only ``bias`` (like UnivFD's head or PPL's adapters); ``gain`` is a frozen
    "backbone" that comes from elsewhere (a file, a seed)."""

    def checkpoint_state(self):
        return {"bias": self.bias.detach().clone()}


def test_cache_key_tells_apart_frozen_weights_a_head_only_checkpoint_leaves_out(tmp_path):
    samples = make_samples(tmp_path / "data", n=3)
    cache = tmp_path / "cache"
    det = HeadOnlyCheckpoint()
    score_samples(det, samples, device="cpu", cache_dir=cache)
    other_backbone = HeadOnlyCheckpoint({"gain": 30.0})
    assert other_backbone.checkpoint_state().keys() == {"bias"}
    torch.testing.assert_close(other_backbone.checkpoint_state()["bias"], det.checkpoint_state()["bias"])
    df = score_samples(other_backbone, samples, device="cpu", cache_dir=cache)
    assert df.attrs["scored"] == len(samples)  # not the first backbone's scores
    np.testing.assert_allclose(df["logit"], brute_force(other_backbone, samples), rtol=1e-6)
    # an in-place change of the same tensor is seen too (the digest is memoised, not stale)
    with torch.no_grad():
        det.gain.mul_(0.5)
    df = score_samples(det, samples, device="cpu", cache_dir=cache)
    assert df.attrs["scored"] == len(samples)
    np.testing.assert_allclose(df["logit"], brute_force(det, samples), rtol=1e-6)


def test_broken_files_are_reported_not_dropped_silently(tmp_path):
    samples = make_samples(tmp_path / "data", n=3)
    Path(samples[0].path).write_bytes(b"")
    Path(samples[3].path).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    gone = Sample(str(tmp_path / "missing.png"), 1, "g1", "test")
    cache = tmp_path / "cache"
    for _ in range(2):  # the second run answers the bad files from the cache too
        df = score_samples(TinyResidualDetector(), samples + [gone], device="cpu", batch_size=4, cache_dir=cache)
        skipped = dict(df.attrs["skipped"])
        assert set(skipped) == {samples[0].path, samples[3].path, gone.path}
        assert "zero-byte" in skipped[samples[0].path] and "cannot stat" in skipped[gone.path]
        assert len(df) == len(samples) - 2


def test_an_image_the_transform_fails_on_is_a_reported_skip_not_cached(tmp_path):
    samples = make_samples(tmp_path / "data", n=3)
    bad = samples[2].path
    cache = tmp_path / "cache"

    def fragile(img):  # fails on one image only, as a JPEG augmentation does on a 3000 x 3 strip
        if img.tobytes() == Image.open(bad).convert("RGB").tobytes():
            raise OSError("broken data stream when writing image file")
        return img

    df = score_samples(TinyResidualDetector(), samples, device="cpu", batch_size=4, transform=fragile,
                       transform_key="t", cache_dir=cache)
    skipped = dict(df.attrs["skipped"])
    assert list(skipped) == [bad]
    assert skipped[bad] == "preprocessing failed: OSError: broken data stream when writing image file"
    assert df["path"].tolist() == [s.path for s in samples if s.path != bad]
    np.testing.assert_allclose(df["logit"], brute_force(TinyResidualDetector(), [s for s in samples if s.path != bad]),
                               rtol=1e-6, atol=1e-6)
    # the failure came from code, not from the file: once the transform is fixed, the image is scored
    df = score_samples(TinyResidualDetector(), samples, device="cpu", batch_size=4, transform=lambda img: img,
                       transform_key="t", cache_dir=cache)
    assert df.attrs["skipped"] == [] and df.attrs["scored"] == 1 and len(df) == len(samples)


def test_preprocessing_that_fails_on_most_images_stops_the_run(tmp_path):
    samples = make_samples(tmp_path / "data", n=10)

    def broken(img):
        raise RuntimeError("a bug in the transform")

    with pytest.raises(HarnessError, match="preprocessing fails on most images"):
        score_samples(TinyResidualDetector(), samples, device="cpu", batch_size=4, transform=broken)


def test_duplicate_paths_are_scored_once(tmp_path):
    samples = make_samples(tmp_path / "data", n=4, gens=("g1",))
    shared_real = samples[0]
    doubled = samples + [Sample(shared_real.path, 0, "g2", "test")]
    TinyResidualDetector.calls = 0
    df = score_samples(TinyResidualDetector(), doubled, device="cpu", batch_size=100)
    assert len(df) == len(doubled) and df.attrs["scored"] == len(samples)
    assert df.iloc[-1]["generator"] == "g2" and df.iloc[-1]["logit"] == df.iloc[0]["logit"]


def test_bad_logit_shape_is_a_clear_error(tmp_path):
    samples = make_samples(tmp_path / "data", n=2, gens=("g1",))

    class TwoLogits(TinyResidualDetector):
        def forward(self, x):
            return torch.stack([super().forward(x)] * 2, dim=1)

    with pytest.raises(HarnessError, match="shape"):
        score_samples(TwoLogits(), samples, device="cpu")


KILLED_RUN = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import torch
    torch.set_num_threads(1)
    from harness.scoring import score_samples
    from harness.suite import Sample
    from tiny_detector import TinyResidualDetector
    samples = [Sample(p, int(l), g, "test") for p, l, g in (line.split("|") for line in open({listing!r}).read().splitlines())]
    TinyResidualDetector.kill_at_call = {kill_at}
    score_samples(TinyResidualDetector(), samples, device="cpu", batch_size={batch}, cache_dir={cache!r})
    print("finished without being killed")
    """
)


def test_killed_run_resumes_scoring_only_the_rest(tmp_path):
    samples = make_samples(tmp_path / "data", n=10)  # 40 images
    listing = tmp_path / "samples.txt"
    listing.write_text("\n".join(f"{s.path}|{s.label}|{s.generator}" for s in samples))
    cache, batch, kill_at = tmp_path / "cache", 6, 4
    script = KILLED_RUN.format(tests=str(TESTS), listing=str(listing), kill_at=kill_at, batch=batch, cache=str(cache))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr  # SIGKILL, mid-run
    assert "finished" not in proc.stdout

    done = (kill_at - 1) * batch  # batches finished (and flushed) before the kill
    TinyResidualDetector.calls = 0
    resumed = score_samples(TinyResidualDetector(), samples, device="cpu", batch_size=batch, cache_dir=cache)
    assert resumed.attrs["cached"] == done
    assert resumed.attrs["scored"] == len(samples) - done
    assert TinyResidualDetector.calls == -(-(len(samples) - done) // batch)

    reference = score_samples(TinyResidualDetector(), samples, device="cpu", batch_size=batch)
    pd.testing.assert_frame_equal(resumed, reference, check_exact=False, rtol=1e-6)
    assert evaluate(resumed, n_boot=200) == evaluate(reference, n_boot=200)


def test_bf16_on_cpu_scores_a_bf16_copy_and_keeps_the_callers_weights(tmp_path):
    samples = make_samples(tmp_path / "data", n=4)
    det = TinyResidualDetector()
    fp32 = score_samples(det, samples, device="cpu", cache_dir=tmp_path / "cache")
    bf16 = score_samples(det, samples, device="cpu", cache_dir=tmp_path / "cache", precision="bf16")
    assert bf16.attrs["scored"] == len(samples)  # another precision is another cache key
    assert bf16.attrs["cache_key"] != fp32.attrs["cache_key"]
    assert det.gain.dtype == torch.float32 and det.gain.item() == 60.0
    np.testing.assert_allclose(bf16["logit"], fp32["logit"], atol=0.1)
    assert not np.array_equal(bf16["logit"].to_numpy(), fp32["logit"].to_numpy())  # really ran in bf16
    with pytest.raises(HarnessError, match="precision"):
        score_samples(det, samples, device="cpu", precision="fp16")


# -- a cache that cannot be used never stops scoring (issue 15) ---------------------------------------------


def _full_disk_on_append(monkeypatch):
    """Opening a cache file for appending works; every write to it fails as on a full disk."""
    import errno

    class FullFile:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

        def close(self):
            self.fh.close()

    original = Path.open

    def opener(self, mode="r", *args, **kwargs):
        fh = original(self, mode, *args, **kwargs)
        return FullFile(fh) if "a" in mode and self.suffix == ".jsonl" else fh

    monkeypatch.setattr(Path, "open", opener)


def _read_only(monkeypatch):
    import errno

    def refuse(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)


@pytest.mark.parametrize("problem", ["cache folder is a file", "full disk", "read-only"])
def test_an_unusable_score_cache_is_a_warning_and_scoring_goes_on(tmp_path, monkeypatch, caplog, problem):
    samples = make_samples(tmp_path / "data", n=4)
    reference = score_samples(TinyResidualDetector(), samples, device="cpu", batch_size=4)
    cache = tmp_path / "cache"
    if problem == "cache folder is a file":
        cache.write_text("in the way")
    elif problem == "full disk":
        _full_disk_on_append(monkeypatch)
    else:
        _read_only(monkeypatch)
    with caplog.at_level("WARNING", logger="harness.scoring"):
        frame = score_samples(TinyResidualDetector(), samples, device="cpu", batch_size=4, cache_dir=cache)
    pd.testing.assert_frame_equal(frame, reference)
    warnings = [r.getMessage() for r in caplog.records if "cannot write the score cache" in r.getMessage()]
    assert len(warnings) == 1 and "scoring goes on" in warnings[0]


def test_malformed_cache_lines_are_skipped_counted_and_rescored(tmp_path, caplog):
    import json

    samples = make_samples(tmp_path / "data", n=4)  # 16 images
    cache = tmp_path / "cache"
    reference = score_samples(TinyResidualDetector(), samples, device="cpu", batch_size=4, cache_dir=cache)
    (part,) = cache.glob("*/scores-*.jsonl")
    lines = part.read_text().splitlines()
    first = json.loads(lines[0])
    bad = [json.dumps({"path": 5}), "[1, 2]", "not json", json.dumps({**first, "size": "big"}),
           json.dumps({**first, "logit": None, "error": None}), '"just a string"', "null",
           json.dumps({**first, "logit": None})[:-1].replace('"logit": null', '"logit": ' + "9" * 400) + "}"]
    part.write_text("\n".join(bad[:4] + lines[1:] + bad[4:]) + "\n")  # the first image's good line is gone
    TinyResidualDetector.calls = 0
    with caplog.at_level("WARNING", logger="harness.scoring"):
        again = score_samples(TinyResidualDetector(), samples, device="cpu", batch_size=4, cache_dir=cache)
    pd.testing.assert_frame_equal(again, reference)
    assert again.attrs["cached"] == len(samples) - 1 and again.attrs["scored"] == 1
    assert TinyResidualDetector.calls == 1  # only the image whose line was broken
    assert any(f"{len(bad)} malformed line(s) skipped" in r.getMessage() for r in caplog.records)
