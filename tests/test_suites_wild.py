"""Synthbuster, AIGIBench, WildRF, Community Forensics and OpenFake on tiny trees and parquet files
laid out with the published names, including the hostile cases."""

from __future__ import annotations

import collections
import io
import os

import datasets
import pytest
from PIL import Image

from harness.errors import HarnessError
from harness.plugins.suites.aigibench import TEST_SUBSETS, AIGIBench
from harness.plugins.suites.commfor import CommunityForensicsEval
from harness.plugins.suites.openfake import OpenFake
from harness.plugins.suites.synthbuster import GENERATORS as SYNTHBUSTER_GENERATORS, Synthbuster
from harness.plugins.suites.wildrf import WildRF
from tests.suite_trees import numbered, touch_images


def _counts(samples):
    return collections.Counter((s.generator, s.split, s.label) for s in samples)


def _reasons(suite):
    return {os.path.basename(path): reason for path, reason in suite.ignored}


# -- Synthbuster -------------------------------------------------------------------------------


def _synthbuster(root):
    touch_images(root / "RAISE-1k", numbered("r", 5, ".png"))
    touch_images(root / "dalle3", numbered("r", 3, ".png"))
    touch_images(root / "stable-diffusion-xl", numbered("r", 5, ".png"))
    (root / "dalle3" / "prompts.csv").write_text("image name (matching Raise-1k),Prompt\nr00000,a\n")


def test_synthbuster_reals_under_every_generator_with_pairs(tmp_path):
    _synthbuster(tmp_path)
    touch_images(tmp_path / "midjourney_v5", numbered("r", 2, ".png"))  # misspelled: reported
    (tmp_path / "firefly").mkdir()  # empty generator: reported
    suite = Synthbuster({"root": str(tmp_path)})
    samples = list(suite.scan())
    assert _counts(samples) == {("dalle3", "test", 0): 5, ("dalle3", "test", 1): 3,
                                ("stable-diffusion-xl", "test", 0): 5, ("stable-diffusion-xl", "test", 1): 5}
    for s in samples:
        if s.label == 1:
            assert s.pair == str(tmp_path / "RAISE-1k" / os.path.basename(s.path))
    reasons = _reasons(suite)
    assert reasons["midjourney_v5"].startswith("not one of the published generator folders")
    assert reasons["firefly"] == "generator folder holds no images"
    assert reasons["prompts.csv"] == "not an image file name"
    assert set(SYNTHBUSTER_GENERATORS) >= {"dalle3", "stable-diffusion-xl"} and len(SYNTHBUSTER_GENERATORS) == 9


def test_synthbuster_without_reals_says_where_they_go(tmp_path):
    touch_images(tmp_path / "dalle2", numbered("r", 2, ".png"))
    with pytest.raises(HarnessError, match="RAISE-1k real photos are not in the Synthbuster archive"):
        list(Synthbuster({"root": str(tmp_path)}).scan())
    reals = tmp_path.parent / f"{tmp_path.name}-raise"
    touch_images(reals, numbered("r", 2, ".png"))
    samples = list(Synthbuster({"root": str(tmp_path), "reals": str(reals)}).scan())
    assert _counts(samples) == {("dalle2", "test", 0): 2, ("dalle2", "test", 1): 2}


# -- AIGIBench ---------------------------------------------------------------------------------


def _aigibench(root):
    for split, n in (("train", 3), ("val", 1)):
        for folder in ("car", "cat", "chair", "horse", "sdv1.4"):
            touch_images(root / split / folder / "0_real", numbered("a", n, ".png"))
            touch_images(root / split / folder / "1_fake", numbered("b", n, ".png"))
    for subset in ("ProGAN", "SocialRF", "Midjourney-V6"):
        touch_images(root / "test" / subset / "0_real", numbered("a", 2, ".jpg"))
        touch_images(root / "test" / subset / "1_fake", numbered("b", 2, ".png"))


def test_aigibench_settings_and_subsets(tmp_path):
    _aigibench(tmp_path)
    touch_images(tmp_path / "test" / "FLUX1-dev" / "0_real", numbered("a", 2, ".jpg"))  # no 1_fake folder
    touch_images(tmp_path / "test" / "Imagen-3" / "1_fake", numbered("b", 2, ".png"))  # misspelled subset
    touch_images(tmp_path / "test" / "SD3" / "1_fakes", numbered("b", 2, ".png"))  # misspelled class folder
    suite = AIGIBench({"root": str(tmp_path)})
    counts = _counts(suite.scan())
    # ProGAN's four class folders make one generator; SDv1.4 is Setting-II's second one.
    assert counts[("ProGAN", "train", 0)] == 12 and counts[("ProGAN", "train", 1)] == 12
    assert counts[("ProGAN", "val", 0)] == 4 and counts[("SDv1.4", "val", 1)] == 1
    assert counts[("SDv1.4", "train", 0)] == 3
    assert counts[("ProGAN", "test", 1)] == 2 and counts[("SocialRF", "test", 0)] == 2
    assert counts[("Midjourney", "test", 1)] == 2  # the README's spelling, read as the published name
    assert counts[("FLUX1-dev", "test", 0)] == 2 and counts[("FLUX1-dev", "test", 1)] == 0
    reasons = _reasons(suite)
    assert reasons["FLUX1-dev"].startswith("no 1_fake folder inside")
    assert reasons["Imagen-3"].startswith("not one of the published test subsets")
    assert reasons["SD3"] == "folder without {0_real,1_fake} inside (it holds 1_fakes/)"
    assert len(TEST_SUBSETS) == 25


def test_aigibench_follows_a_symlinked_subset_and_reports_a_loop(tmp_path):
    _aigibench(tmp_path)
    elsewhere = tmp_path.parent / f"{tmp_path.name}-wfir"
    touch_images(elsewhere / "0_real", numbered("a", 1, ".jpg"))
    touch_images(elsewhere / "1_fake", numbered("b", 1, ".png"))
    os.symlink(elsewhere, tmp_path / "test" / "WFIR")
    os.symlink(tmp_path / "test", tmp_path / "test" / "SocialRF" / "1_fake" / "loop")
    suite = AIGIBench({"root": str(tmp_path)})
    counts = _counts(suite.scan())
    assert counts[("WFIR", "test", 0)] == 1 and counts[("WFIR", "test", 1)] == 1
    assert counts[("SocialRF", "test", 1)] == 2
    assert _reasons(suite)["loop"].startswith("symlink loop")


def test_aigibench_without_any_published_folder_is_an_error(tmp_path):
    touch_images(tmp_path / "test" / "progan_x" / "0_real", ["a.png"])
    with pytest.raises(HarnessError, match="with a published name"):
        list(AIGIBench({"root": str(tmp_path)}).scan())


# -- WildRF ------------------------------------------------------------------------------------


def test_wildrf_train_platform_and_test_platforms(tmp_path):
    for split, n in (("train", 4), ("val", 2)):
        touch_images(tmp_path / split / "0_real", numbered("r", n, ".jpg"))
        touch_images(tmp_path / split / "1_fake", numbered("f", n, ".jpg"))
    for platform in ("reddit", "Twitter", "facebook"):
        touch_images(tmp_path / "test" / platform / "0_real", numbered("r", 2, ".jpg"))
        touch_images(tmp_path / "test" / platform / "1_fake", numbered("f", 3, ".jpg"))
    touch_images(tmp_path / "test" / "instagram" / "0_real", ["x.jpg"])  # not a WildRF platform
    (tmp_path / "test" / "facebook" / "1_fake" / "notes.txt").write_text("x")
    suite = WildRF({"root": str(tmp_path)})
    counts = _counts(suite.scan())
    assert counts == {("reddit", "train", 0): 4, ("reddit", "train", 1): 4, ("reddit", "val", 0): 2,
                      ("reddit", "val", 1): 2, **{(p, "test", 0): 2 for p in ("reddit", "twitter", "facebook")},
                      **{(p, "test", 1): 3 for p in ("reddit", "twitter", "facebook")}}
    reasons = _reasons(suite)
    assert reasons["instagram"].startswith("not one of the published test platforms")
    assert reasons["notes.txt"] == "not an image file name"
    other = _counts(WildRF({"root": str(tmp_path), "train_platform": "twitter"}).scan())
    assert other[("twitter", "train", 0)] == 4 and other[("reddit", "train", 0)] == 0


def test_wildrf_empty_tree_is_an_error(tmp_path):
    (tmp_path / "train" / "0_real").mkdir(parents=True)
    with pytest.raises(HarnessError, match="WildRF|wildrf"):
        list(WildRF({"root": str(tmp_path)}).scan())


# -- Community Forensics and OpenFake (Hugging Face presets) -----------------------------------


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (seed, 0, 0)).save(buf, "PNG")
    return buf.getvalue()


def test_commfor_reads_the_public_eval_split_with_integer_labels(tmp_path):
    folder = tmp_path / "cf"
    (folder / "data").mkdir(parents=True)
    rows = {"image_data": [_png(i) for i in range(5)], "label": [0, 0, 1, 1, 1],
            "model_name": ["real-coco", "real-coco", "stabilityai/sd-2", "stabilityai/sd-2", "dalle-3"]}
    # As the Hub repository lays it out: one folder per split, named by the card's configs.
    for split, sub in (("PublicEval", "publicEval"), ("Systematic", "systematic")):
        (folder / "data" / sub).mkdir()
        datasets.Dataset.from_dict(rows).to_parquet(str(folder / "data" / sub / "part-00000.parquet"))
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: Systematic\n    path:\n"
        "    - data/systematic/*.parquet\n  - split: PublicEval\n    path:\n    - data/publicEval/*.parquet\n---\n")
    suite = CommunityForensicsEval({"root": str(folder), "store": str(tmp_path / "store")})
    samples = list(suite.scan())
    assert _counts(samples) == {("real-coco", "test", 0): 2, ("stabilityai/sd-2", "test", 1): 2,
                                ("dalle-3", "test", 1): 1}
    assert any(reason.startswith("dataset split not read") for _, reason in suite.ignored)


def test_openfake_shares_reals_and_reads_release_dates(tmp_path):
    folder = tmp_path / "of"
    (folder / "data").mkdir(parents=True)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string"),
                                  "model": datasets.Value("string"), "release_date": datasets.Value("string")})
    datasets.Dataset.from_dict({
        "image": [{"bytes": _png(i), "path": None} for i in range(5)],
        "label": ["real", "real", "fake", "fake", "fake"],
        "model": ["", "", "flux.1-dev", "gpt-image-1", "gpt-image-1"],
        "release_date": ["", "", "2024-08-01", "2025-04-23", "2025-04-23"],
    }, features=features).to_parquet(str(folder / "data" / "test-00000.parquet"))
    suite = OpenFake({"root": str(folder), "store": str(tmp_path / "store")})
    assert _counts(suite.scan()) == {("flux.1-dev", "test", 0): 2, ("flux.1-dev", "test", 1): 1,
                                     ("gpt-image-1", "test", 0): 2, ("gpt-image-1", "test", 1): 2}
    assert suite.generator_info() == {"flux.1-dev": {"released": "2024-08-01"},
                                      "gpt-image-1": {"released": "2025-04-23"}}
