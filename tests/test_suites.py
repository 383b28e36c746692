"""GenImage and any-folder readers on tiny trees with the real folder names."""

from __future__ import annotations

import collections

import pytest

from harness.errors import HarnessError
from harness.manifest import CACHE_ENV
from plugins.suites._layout import stable_fraction
from plugins.suites.folder import FolderSuite
from plugins.suites.genimage import GenImage
from tests.suite_trees import numbered, touch_images


def _counts(samples):
    return collections.Counter((s.generator, s.split, s.label) for s in samples)


def _genimage_tree(root):
    # Nested form, as distributed.
    sd = root / "stable_diffusion_v_1_4" / "imagenet_ai_0419_sdv4"
    touch_images(sd / "train" / "nature", numbered("n", 40, ".JPEG"))
    touch_images(sd / "train" / "ai", numbered("sdv4_", 30, ".png"))
    touch_images(sd / "val" / "nature", numbered("ILSVRC2012_val_", 5, ".JPEG"))
    touch_images(sd / "val" / "ai", numbered("sdv4_val_", 4, ".PNG"))
    # Flat form that some copies use; BigGAN listed before ADM on disk, the table order wins.
    touch_images(root / "BigGAN" / "val" / "nature", numbered("b", 3, ".JPEG"))
    touch_images(root / "BigGAN" / "val" / "ai", numbered("bg", 2, ".png"))
    touch_images(root / "ADM" / "imagenet_ai_0508_adm" / "val" / "ai", numbered("adm", 6, ".PNG"))
    touch_images(root / "ADM" / "imagenet_ai_0508_adm" / "val" / "nature", numbered("a", 1, ".JPEG"))
    (root / "ADM" / "imagenet_ai_0508_adm" / "val" / "ai" / "readme.txt").write_text("notes")
    (root / "downloads").mkdir()


def test_genimage_reads_nested_and_flat_forms(tmp_path):
    _genimage_tree(tmp_path)
    suite = GenImage({"root": str(tmp_path)})
    samples = list(suite.scan())
    assert suite.generators() == ["stable_diffusion_v_1_4", "ADM", "BigGAN"]
    counts = _counts(samples)
    # val is GenImage's own val folder = our test split; train is split by a stem hash.
    expected_val = sum(stable_fraction(f"n{i:05d}") < 0.1 for i in range(40))
    expected_val_fake = sum(stable_fraction(f"sdv4_{i:05d}") < 0.1 for i in range(30))
    assert 0 < expected_val < 40
    assert counts[("stable_diffusion_v_1_4", "val", 0)] == expected_val
    assert counts[("stable_diffusion_v_1_4", "train", 0)] == 40 - expected_val
    assert counts[("stable_diffusion_v_1_4", "val", 1)] == expected_val_fake
    assert counts[("stable_diffusion_v_1_4", "train", 1)] == 30 - expected_val_fake
    assert counts[("stable_diffusion_v_1_4", "test", 0)] == 5 and counts[("stable_diffusion_v_1_4", "test", 1)] == 4
    assert counts[("BigGAN", "test", 0)] == 3 and counts[("BigGAN", "test", 1)] == 2
    assert counts[("ADM", "test", 1)] == 6 and counts[("ADM", "test", 0)] == 1
    assert len(samples) == 40 + 30 + 5 + 4 + 3 + 2 + 6 + 1
    # Labels come from the folder, whatever the file is called.
    for s in samples:
        assert s.label == (1 if "/ai/" in s.path else 0)
        assert s.pair is None  # GenImage has no pairs (no shared stems)
    ignored = dict(suite.ignored)
    assert any(p.endswith("readme.txt") for p in ignored)
    assert any(p.endswith("downloads") for p in ignored)


def test_genimage_pairs_fakes_with_same_stem_reals_and_keeps_pairs_in_one_split(tmp_path):
    base = tmp_path / "tconv"
    names = numbered("crop", 60, ".png")
    touch_images(base / "train" / "nature", names)
    touch_images(base / "train" / "ai", names)
    samples = list(GenImage({"root": str(tmp_path)}).scan())
    fakes = [s for s in samples if s.label == 1]
    reals = {s.path: s for s in samples if s.label == 0}
    assert len(fakes) == 60
    for fake in fakes:
        assert fake.pair == fake.path.replace("/ai/", "/nature/")
        assert reals[fake.pair].split == fake.split
    assert {s.split for s in samples} == {"train", "val"}


def test_genimage_generator_subset_and_errors(tmp_path):
    _genimage_tree(tmp_path)
    samples = list(GenImage({"root": str(tmp_path), "generators": ["BigGAN"]}).scan())
    assert {s.generator for s in samples} == {"BigGAN"}
    with pytest.raises(HarnessError, match="Midjourney"):
        list(GenImage({"root": str(tmp_path), "generators": ["Midjourney"]}).scan())


def test_missing_root_and_wrong_layout_say_what_was_expected(tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_GENIMAGE_ROOT", raising=False)
    with pytest.raises(HarnessError, match="HARNESS_GENIMAGE_ROOT"):
        list(GenImage().scan())
    with pytest.raises(HarnessError, match="is not a folder"):
        list(GenImage({"root": str(tmp_path / "nope")}).scan())
    touch_images(tmp_path / "images", ["a.png"])
    with pytest.raises(HarnessError) as info:
        list(GenImage({"root": str(tmp_path)}).scan())
    message = str(info.value)
    assert "{train,val}/{ai,nature}" in message and "images/" in message


def test_root_from_environment_variable(tmp_path, monkeypatch):
    touch_images(tmp_path / "glide" / "val" / "ai", ["x.png"])
    monkeypatch.setenv("HARNESS_GENIMAGE_ROOT", str(tmp_path))
    samples = list(GenImage().scan())
    assert [(s.generator, s.split, s.label) for s in samples] == [("glide", "test", 1)]


@pytest.mark.parametrize("real_name,fake_name", [("0_real", "1_fake"), ("real", "fake"), ("nature", "ai"),
                                                 ("REAL", "Fake")])
def test_folder_suite_without_generator_folders(tmp_path, real_name, fake_name):
    # The fake folder sorts first for some conventions: labels must not follow listing order.
    touch_images(tmp_path / "data" / real_name, numbered("r", 3, ".jpg"))
    touch_images(tmp_path / "data" / fake_name, numbered("f", 2, ".png"))
    samples = list(FolderSuite({"root": str(tmp_path / "data")}).scan())
    assert _counts(samples) == {("data", "test", 0): 3, ("data", "test", 1): 2}
    assert all((s.label == 1) == ("/f0" in s.path) for s in samples)


def test_folder_suite_with_generators_classes_and_splits(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    touch_images(tmp_path / "train" / "ganA" / "cat" / "0_real", numbered("c", 2, ".png"))
    touch_images(tmp_path / "train" / "ganA" / "cat" / "1_fake", numbered("c", 2, ".png"))
    touch_images(tmp_path / "train" / "ganA" / "dog" / "0_real", numbered("d", 1, ".png"))
    touch_images(tmp_path / "test" / "ganB" / "real", numbered("r", 4, ".png"))
    touch_images(tmp_path / "test" / "ganB" / "fake", numbered("f", 5, ".png"))
    suite = FolderSuite({"root": str(tmp_path)})
    samples = list(suite.scan())
    assert _counts(samples) == {("ganA", "train", 0): 3, ("ganA", "train", 1): 2,
                                ("ganB", "test", 0): 4, ("ganB", "test", 1): 5}
    paired = [s for s in samples if s.pair]
    assert len(paired) == 2 and all("/cat/0_real/" in s.pair for s in paired)
    assert suite.generators() == ["ganA", "ganB"]  # through the manifest cache
    assert list((tmp_path / "cache" / "manifests").glob("folder-*.csv.gz"))


def test_folder_suite_without_class_folders_is_an_error(tmp_path):
    touch_images(tmp_path / "pics", ["a.png"])
    with pytest.raises(HarnessError, match="no class folders"):
        list(FolderSuite({"root": str(tmp_path)}).scan())
