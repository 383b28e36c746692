"""GenImage and any-folder readers on tiny trees with the real folder names."""

from __future__ import annotations

import collections
import os

import pytest

from harness.errors import HarnessError
from harness.manifest import CACHE_ENV
from harness.plugins.suites._layout import stable_fraction
from harness.plugins.suites.folder import FolderSuite
from harness.plugins.suites.genimage import GenImage
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


# -- what is not read is recorded -------------------------------------------------------------


def _reasons(suite):
    return {path: reason for path, reason in suite.ignored}


def test_folder_suite_records_folders_beside_class_folders(tmp_path):
    root = tmp_path / "data"
    touch_images(root / "ganA" / "0_real", numbered("r", 2, ".png"))
    touch_images(root / "ganA" / "1_fake", numbered("f", 2, ".png"))
    touch_images(root / "ganA" / "1_fakes", numbered("x", 3, ".png"))
    touch_images(root / "ganA" / "1_fake (1)", numbered("y", 1, ".png"))
    touch_images(root / "ganB" / "real", numbered("r", 1, ".png"))
    touch_images(root / "ganB" / "generated", numbered("g", 4, ".png"))
    touch_images(root / "ganC" / "cat" / "ai", numbered("a", 1, ".png"))
    touch_images(root / "ganC" / "cat" / "natrue", numbered("n", 1, ".png"))
    touch_images(root / "notes" / "misc", ["m.png"])
    suite = FolderSuite({"root": str(root)})
    samples = list(suite.scan())
    assert _counts(samples) == {("ganA", "test", 0): 2, ("ganA", "test", 1): 2, ("ganB", "test", 0): 1,
                                ("ganC", "test", 1): 1}
    reasons = _reasons(suite)
    not_class = "folder name is not a class folder (0_real/1_fake, real/fake, nature/ai)"
    for folder in ("ganA/1_fakes", "ganA/1_fake (1)", "ganB/generated", "ganC/cat/natrue"):
        assert reasons[str(root / folder)] == not_class
    assert "no class folders" in reasons[str(root / "notes")]
    # Generator (and other) folders above class folders are the layout, not something left out.
    assert not any(p in reasons for p in (str(root / "ganA"), str(root / "ganC"), str(root / "ganC" / "cat")))
    assert all(s.path.split("/")[-2] in ("0_real", "1_fake", "real", "ai") for s in samples)


def test_genimage_records_unknown_split_class_and_inner_folders(tmp_path):
    base = tmp_path / "ADM" / "imagenet_ai_0508_adm"
    touch_images(base / "val" / "ai", numbered("a", 2, ".png"))
    touch_images(base / "val" / "nature", numbered("n", 2, ".JPEG"))
    touch_images(base / "val" / "natrue", numbered("t", 2, ".JPEG"))
    touch_images(base / "tarin" / "ai", numbered("b", 5, ".png"))
    touch_images(tmp_path / "ADM" / "imagenet_ai_0508_adm_old" / "ai", numbered("c", 1, ".png"))
    suite = GenImage({"root": str(tmp_path)})
    samples = list(suite.scan())
    assert _counts(samples) == {("ADM", "test", 0): 2, ("ADM", "test", 1): 2}
    reasons = _reasons(suite)
    assert reasons[str(base / "val" / "natrue")] == \
        "folder name is not a class folder (0_real/1_fake, real/fake, nature/ai)"
    assert reasons[str(base / "tarin")] == "folder name is not a split folder of GenImage (train, val)"
    assert "without {train,val}" in reasons[str(tmp_path / "ADM" / "imagenet_ai_0508_adm_old")]


@pytest.mark.parametrize("shape", ["gen/split", "gen/inner/split"])
def test_folder_suite_takes_the_split_from_any_path_component(tmp_path, shape):
    root = tmp_path / "data"
    for gen in ("ganA", "ganB"):
        base = root / gen / "inner" if shape == "gen/inner/split" else root / gen
        for split, n in (("train", 4), ("val", 2), ("test", 3)):
            touch_images(base / split / "0_real", numbered(f"{split}r", n, ".png"))
            touch_images(base / split / "1_fake", numbered(f"{split}f", n, ".png"))
        touch_images(base / "tarin" / "0_real", numbered("leak", 5, ".png"))
    suite = FolderSuite({"root": str(root)})
    samples = list(suite.scan())
    expected = {}
    for gen in ("ganA", "ganB"):
        for split, n in (("train", 4), ("val", 2), ("test", 3)):
            expected[(gen, split, 0)] = expected[(gen, split, 1)] = n
    assert _counts(samples) == expected
    for s in samples:  # nothing from train/ or val/ (or the misspelt tarin/) is in the test split
        assert f"/{s.split}/" in s.path
    reasons = _reasons(suite)
    for gen in ("ganA", "ganB"):
        tarin = (root / gen / "inner" if shape == "gen/inner/split" else root / gen) / "tarin"
        assert "not a split folder" in reasons[str(tarin)]


def test_folder_suite_split_nearest_the_class_folders_wins(tmp_path):
    touch_images(tmp_path / "train" / "ganA" / "test" / "real", ["a.png"])
    touch_images(tmp_path / "train" / "ganA" / "test" / "fake", ["b.png"])
    samples = list(FolderSuite({"root": str(tmp_path)}).scan())
    assert {(s.generator, s.split) for s in samples} == {("ganA", "test")}


def test_symlinked_folders_in_class_folders_are_followed_without_loops(tmp_path):
    root = tmp_path / "data"
    touch_images(root / "ganA" / "0_real", ["r0.png"])
    touch_images(root / "ganA" / "1_fake", ["f0.png"])
    touch_images(tmp_path / "elsewhere" / "batch2", ["r1.png", "r2.png"])
    (root / "ganA" / "0_real" / "batch2").symlink_to(tmp_path / "elsewhere" / "batch2", target_is_directory=True)
    (root / "ganA" / "0_real" / "again").symlink_to(tmp_path / "elsewhere" / "batch2", target_is_directory=True)
    (root / "ganA" / "0_real" / "up").symlink_to(root / "ganA", target_is_directory=True)  # a loop
    (root / "ganA" / "0_real" / "self").symlink_to(root / "ganA" / "0_real", target_is_directory=True)
    suite = FolderSuite({"root": str(root)})
    samples = list(suite.scan())
    reals = sorted(s.path for s in samples if s.label == 0)
    assert reals == [str(root / "ganA" / "0_real" / n) for n in ("batch2/r1.png", "batch2/r2.png", "r0.png")] \
        or reals == [str(root / "ganA" / "0_real" / n) for n in ("again/r1.png", "again/r2.png", "r0.png")]
    assert [s.path for s in samples if s.label == 1] == [str(root / "ganA" / "1_fake" / "f0.png")]
    reasons = _reasons(suite)
    assert "symlink loop" in reasons[str(root / "ganA" / "0_real" / "up")]
    assert "symlink loop" in reasons[str(root / "ganA" / "0_real" / "self")]
    assert "already read" in reasons[str(root / "ganA" / "0_real" / "batch2")] or \
        "already read" in reasons[str(root / "ganA" / "0_real" / "again")]


def test_unlistable_folders_are_recorded(tmp_path, monkeypatch):
    root = tmp_path / "data"
    touch_images(root / "ganA" / "0_real", ["r.png"])
    touch_images(root / "ganA" / "1_fake", ["f.png"])
    touch_images(root / "ganA" / "1_fake" / "part2", ["g.png"])
    touch_images(root / "ganB" / "0_real", ["r.png"])
    blocked = {str(root / "ganB"), str(root / "ganA" / "1_fake" / "part2")}
    real_scandir = os.scandir

    def scandir(path="."):
        if str(path) in blocked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    suite = FolderSuite({"root": str(root)})
    samples = list(suite.scan())
    assert sorted(s.path for s in samples) == [str(root / "ganA" / "0_real" / "r.png"),
                                               str(root / "ganA" / "1_fake" / "f.png")]
    reasons = _reasons(suite)
    for folder in blocked:
        assert reasons[folder] == "cannot list this folder: Permission denied"
