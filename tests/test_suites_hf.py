"""The Hugging Face datasets reader on parquet datasets the tests write themselves."""

from __future__ import annotations

import collections
import hashlib
import io
import os

import datasets
import numpy as np
import pytest
from PIL import Image

from harness.errors import HarnessError
from harness.images import check_file
from harness.manifest import load_manifest
from harness.plugins.suites.hf import HFDataset

FEATURES = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string"),
                              "model": datasets.Value("string"), "release_date": datasets.Value("string")})


def _image(seed: int, fmt: str) -> bytes:
    """Noise images: distinct seeds give distinct bytes (flat colours can encode alike in JPEG)."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def _png(seed: int) -> bytes:
    return _image(seed, "PNG")


def _jpeg(seed: int) -> bytes:
    return _image(seed, "JPEG")


def _rows(split: str):
    """(image bytes, label, model, release date): reals, fakes of two models, one corrupt image, one
    row without a label and one without an image."""
    offset = 0 if split == "train" else 100
    rows = [(_jpeg(offset + i), "real", None, None) for i in range(4)]
    rows += [(_png(offset + i), "fake", "sdxl", "2023-07-26") for i in range(3)]
    rows += [(_png(offset + 50 + i), "fake", "flux-dev", "2024-08-01") for i in range(2)]
    rows.append((b"not an image at all", "fake", "flux-dev", "2024-08-01"))  # corrupt
    rows.append((_png(offset + 90), None, "sdxl", "2023-07-26"))  # missing label
    rows.append((None, "real", None, None))  # missing image
    return rows


def _write(folder, split: str, rows) -> None:
    data = datasets.Dataset.from_dict({
        "image": [{"bytes": b, "path": None} if b is not None else None for b, *_ in rows],
        "label": [r[1] for r in rows], "model": [r[2] for r in rows], "release_date": [r[3] for r in rows],
    }, features=FEATURES)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    data.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))


@pytest.fixture
def dataset_dir(tmp_path):
    folder = tmp_path / "openfake-mini"
    for split in ("train", "test"):
        _write(folder, split, _rows(split))
    return folder


def _suite(dataset_dir, tmp_path, **extra):
    config = {"root": str(dataset_dir), "store": str(tmp_path / "store"), "generator_column": "model",
              "fake_values": ["fake"], "real_values": ["real"], "shared_reals": True,
              "metadata_columns": {"released": "release_date"}, **extra}
    return HFDataset(config)


def test_rows_become_content_addressed_files_with_labels_generators_and_splits(dataset_dir, tmp_path):
    suite = _suite(dataset_dir, tmp_path)
    samples = list(suite.scan())
    # Reference: a brute-force count from the rows written above.
    expected = collections.Counter()
    for split, harness_split in (("train", "train"), ("test", "test")):
        rows = _rows(split)
        fakes = [r for r in rows if r[0] is not None and r[1] == "fake"]
        reals = [r for r in rows if r[0] is not None and r[1] == "real"]
        for model in ("sdxl", "flux-dev"):
            expected[(model, harness_split, 1)] = sum(r[2] == model for r in fakes)
            expected[(model, harness_split, 0)] = len(reals)  # shared reals: listed under every generator
    assert collections.Counter((s.generator, s.split, s.label) for s in samples) == expected
    for s in samples:
        data = open(s.path, "rb").read()
        assert os.path.basename(s.path).split(".")[0] == hashlib.sha256(data).hexdigest()
        assert os.path.dirname(s.path).endswith(hashlib.sha256(data).hexdigest()[:2])
    # The corrupt image is listed (verify reports it), under a name that does not claim a format.
    corrupt = [s for s in samples if s.path.endswith(".bin")]
    assert len(corrupt) == 2 and all(check_file(s.path)[2] for s in corrupt)
    assert all(check_file(s.path)[2] is None for s in samples if not s.path.endswith(".bin"))
    assert {os.path.splitext(s.path)[1] for s in samples if s.label == 0} == {".jpg"}
    # The row without a label and the row without an image are reported, one each per split.
    reasons = collections.Counter(reason.split(":")[0] for _, reason in suite.ignored)
    assert reasons == {"label missing": 2, "image missing (no bytes and no readable file)": 2}
    assert any(path.endswith(":test[10]") for path, _ in suite.ignored)
    # Release dates read from the column.
    assert suite.generator_info() == {"sdxl": {"released": "2023-07-26"}, "flux-dev": {"released": "2024-08-01"}}


def test_a_second_scan_rewrites_nothing_and_the_manifest_sees_a_rewritten_parquet(dataset_dir, tmp_path):
    suite = _suite(dataset_dir, tmp_path)
    first = load_manifest(suite, cache_dir=tmp_path / "manifests")
    times = {p: os.stat(p).st_mtime_ns for p in first.table["path"]}
    again = load_manifest(_suite(dataset_dir, tmp_path), refresh=True, cache_dir=tmp_path / "manifests")
    assert {p: os.stat(p).st_mtime_ns for p in again.table["path"]} == times  # score cache keys unchanged
    assert again.hash == first.hash
    rows = _rows("test")[:2] + [(_png(999), "fake", "sdxl", "2023-07-26")]
    _write(dataset_dir, "test", rows)
    os.utime(dataset_dir / "data" / "test-00000-of-00001.parquet", ns=(1, 1))  # a time the manifest never saw
    third = load_manifest(_suite(dataset_dir, tmp_path), cache_dir=tmp_path / "manifests")
    assert third.scanned and len(third.table[third.table["split"] == "test"]) == 2 * 1 + 1  # 2 reals x sdxl + 1


def test_integer_labels_need_the_fake_value_named(tmp_path):
    folder = tmp_path / "ints"
    data = datasets.Dataset.from_dict({"img": [_png(1), _png(2), _png(3)], "target": [0, 1, 1]},
                                      features=datasets.Features({"img": datasets.Value("binary"),
                                                                  "target": datasets.Value("int64")}))
    folder.mkdir()
    data.to_parquet(str(folder / "test.parquet"))
    base = {"root": str(folder), "store": str(tmp_path / "store"), "image_column": "img", "label_column": "target"}
    with pytest.raises(HarnessError, match="which label values are fake"):
        list(HFDataset(base).scan())
    samples = list(HFDataset({**base, "fake_values": [0], "real_values": [1]}).scan())
    assert [s.label for s in samples] == [1, 0, 0]  # as stated, even where it is the unusual way round
    assert {s.generator for s in samples} == {"ints"}


def test_unknown_column_and_split_are_named(dataset_dir, tmp_path):
    with pytest.raises(HarnessError, match="no label column 'is_fake'.*image, label, model"):
        list(_suite(dataset_dir, tmp_path, label_column="is_fake").scan())
    suite = _suite(dataset_dir, tmp_path, splits={"test": "test"})
    samples = list(suite.scan())
    assert {s.split for s in samples} == {"test"}
    assert any(reason.startswith("dataset split not read") and path.endswith(":train")
               for path, reason in suite.ignored)


def test_offline_without_a_local_copy_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    suite = HFDataset({"dataset": "nobody/no-such-dataset", "store": str(tmp_path / "store"),
                       "fake_values": [1], "real_values": [0]})
    with pytest.raises(HarnessError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE"):
        list(suite.scan())


def test_identical_bytes_are_listed_once_and_a_label_conflict_is_reported(tmp_path, caplog):
    folder = tmp_path / "dups"
    rows = [(_png(1), "fake", "sdxl", None), (_png(1), "fake", "sdxl", None),  # a repeat: listed once
            (_png(1), "real", None, None),  # the same bytes called real: a conflict, reported
            (_png(2), "fake", "flux", None), (_jpeg(3), "real", None, None)]
    _write(folder, "test", rows)
    _write(folder, "train", [(_png(2), "fake", "flux", None), (_jpeg(4), "real", None, None)])
    suite = _suite(folder, tmp_path)
    samples = list(suite.scan())
    assert collections.Counter((s.generator, s.split, s.label) for s in samples) == {
        ("sdxl", "test", 1): 1, ("sdxl", "test", 0): 1, ("flux", "test", 1): 1, ("flux", "test", 0): 1,
        ("flux", "train", 1): 1, ("flux", "train", 0): 1}
    reasons = {path.rsplit(":", 1)[1]: reason for path, reason in suite.ignored}
    assert reasons["test[1]"].startswith("the same image bytes as") and reasons["test[1]"].endswith("listed once")
    assert "labelled real here and fake there" in reasons["test[2]"]
    assert "1 image(s) are in the test split and in a training split" in caplog.text


def test_streaming_and_the_arrow_cache_list_the_same_samples(dataset_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    streamed = sorted(map(tuple, (s.to_dict().values() for s in _suite(dataset_dir, tmp_path).scan())))
    loaded = sorted(map(tuple, (s.to_dict().values() for s in _suite(dataset_dir, tmp_path, streaming=False).scan())))
    assert streamed == loaded and len(streamed) == 28


def test_an_image_path_in_a_row_is_read_only_beside_the_local_copy(tmp_path):
    folder = tmp_path / "paths"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "inside.png").write_bytes(_png(7))
    outside = tmp_path / "secret.png"
    outside.write_bytes(_png(8))
    rows = [{"bytes": None, "path": "img/inside.png"}, {"bytes": None, "path": str(outside)},
            {"bytes": None, "path": "../secret.png"}]
    data = datasets.Dataset.from_dict({"image": rows, "label": ["fake"] * 3},
                                      features=datasets.Features({
                                          # the Image feature's storage: a struct of bytes and path
                                          "image": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                                          "label": datasets.Value("string")}))
    data.to_parquet(str(folder / "test.parquet"))
    suite = HFDataset({"root": str(folder), "store": str(tmp_path / "store"), "fake_values": ["fake"],
                       "real_values": ["real"]})
    samples = list(suite.scan())
    assert [open(s.path, "rb").read() for s in samples] == [_png(7)]
    assert sum(reason.startswith("image missing") for _, reason in suite.ignored) == 2
