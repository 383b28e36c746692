"""DRCT-2M, Chameleon, ForenSynths, AIGCDetectBenchmark and CSV readers on tiny trees with the real names."""

from __future__ import annotations

import collections

import pytest

from harness.errors import HarnessError
from harness.plugins.suites._layout import stable_fraction
from harness.plugins.suites.aigcdetect import AIGCDetect
from harness.plugins.suites.chameleon import Chameleon
from harness.plugins.suites.csv_manifest import CSVSuite
from harness.plugins.suites.drct2m import DRCT2M
from harness.plugins.suites.forensynths import ForenSynths
from tests.suite_trees import numbered, touch_images


def _counts(samples):
    return collections.Counter((s.generator, s.split, s.label) for s in samples)


# -- DRCT-2M ----------------------------------------------------------------------------------


def _drct_tree(root):
    touch_images(root / "MSCOCO" / "train2017", numbered("0000000", 20, ".jpg"))
    touch_images(root / "MSCOCO" / "val2017", numbered("0000001", 4, ".jpg"))
    touch_images(root / "DR" / "MSCOCO" / "full_inpainting" / "train2017", numbered("0000000", 20, ".png"))
    for gen, n in (("stable-diffusion-v1-4", 20), ("sdxl-turbo", 8)):
        touch_images(root / "DRCT-2M" / gen / "train2017", numbered("0000000", n, ".png"))
        touch_images(root / "DRCT-2M" / gen / "val2017", numbered("0000001", 3, ".png"))


def test_drct2m_lists_reals_per_generator_with_pairs(tmp_path):
    _drct_tree(tmp_path)
    suite = DRCT2M({"root": str(tmp_path)})
    samples = list(suite.scan())
    assert [g for g in dict.fromkeys(s.generator for s in samples)] == ["stable-diffusion-v1-4", "sdxl-turbo"]
    counts = _counts(samples)
    n_val = sum(stable_fraction(f"0000000{i:05d}") < 0.1 for i in range(20))
    for gen, n_fake in (("stable-diffusion-v1-4", 20), ("sdxl-turbo", 8)):
        assert counts[(gen, "train", 0)] + counts[(gen, "val", 0)] == 20
        assert counts[(gen, "val", 0)] == n_val
        assert counts[(gen, "train", 1)] + counts[(gen, "val", 1)] == n_fake
        assert counts[(gen, "test", 0)] == 4 and counts[(gen, "test", 1)] == 3
    for s in samples:
        assert s.label == (1 if "/DRCT-2M/" in s.path else 0)
        if s.label == 1:
            # A fake's pair: the MSCOCO image with its stem; it lands in the same split.
            assert s.pair.endswith(f"/MSCOCO/{'train2017' if s.split != 'test' else 'val2017'}/"
                                   f"{s.path.rsplit('/', 1)[1].replace('.png', '.jpg')}")
        elif s.split != "test":
            assert "/DR/MSCOCO/full_inpainting/train2017/" in s.pair
        else:
            assert s.pair is None  # no DR folder for val2017 in this tree


def test_drct2m_paired_reals_and_errors(tmp_path):
    _drct_tree(tmp_path)
    samples = list(DRCT2M({"root": str(tmp_path), "reals": "paired", "generators": ["sdxl-turbo"]}).scan())
    counts = _counts(samples)
    assert counts[("sdxl-turbo", "train", 0)] + counts[("sdxl-turbo", "val", 0)] == 8
    assert counts[("sdxl-turbo", "test", 0)] == 3
    with pytest.raises(HarnessError, match="sd-turbo"):
        list(DRCT2M({"root": str(tmp_path), "generators": ["sd-turbo"]}).scan())
    (tmp_path / "other").mkdir()
    with pytest.raises(HarnessError, match="MSCOCO/ and DRCT-2M/"):
        list(DRCT2M({"root": str(tmp_path / "other")}).scan())


# -- Chameleon --------------------------------------------------------------------------------


def test_chameleon_reads_test_classes(tmp_path):
    touch_images(tmp_path / "test" / "0_real", numbered("r", 5, ".jpg"))
    touch_images(tmp_path / "test" / "1_fake", numbered("f", 3, ".png"))
    assert _counts(Chameleon({"root": str(tmp_path)}).scan()) == {("chameleon", "test", 0): 5,
                                                                  ("chameleon", "test", 1): 3}
    # Pointing at the test folder itself works too.
    assert len(list(Chameleon({"root": str(tmp_path / "test")}).scan())) == 8
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="test/"):
        list(Chameleon({"root": str(tmp_path / "empty")}).scan())


# -- ForenSynths ------------------------------------------------------------------------------


def test_forensynths_train_val_test_and_diffusion_set(tmp_path):
    for split, n in (("train", 4), ("val", 2)):
        for cls in ("airplane", "cat"):
            touch_images(tmp_path / split / "progan" / cls / "0_real", numbered(cls, n, ".png"))
            touch_images(tmp_path / split / "progan" / cls / "1_fake", numbered(cls, n, ".png"))
    for cls in ("car", "horse"):  # class subfolders in test/stylegan
        touch_images(tmp_path / "test" / "stylegan" / cls / "0_real", numbered(cls, 2, ".png"))
        touch_images(tmp_path / "test" / "stylegan" / cls / "1_fake", numbered(cls, 3, ".png"))
    touch_images(tmp_path / "test" / "deepfake" / "0_real", numbered("r", 3, ".png"))
    touch_images(tmp_path / "test" / "deepfake" / "1_fake", numbered("f", 1, ".png"))
    diffusion = tmp_path / "diffusion_datasets"
    touch_images(diffusion / "imagenet" / "0_real", numbered("i", 2, ".png"))
    touch_images(diffusion / "laion" / "0_real", numbered("l", 5, ".png"))
    touch_images(diffusion / "guided" / "1_fake", numbered("g", 3, ".png"))
    touch_images(diffusion / "ldm_200" / "1_fake", numbered("d", 4, ".png"))
    samples = list(ForenSynths({"root": str(tmp_path)}).scan())
    assert _counts(samples) == {
        ("progan", "train", 0): 8, ("progan", "train", 1): 8, ("progan", "val", 0): 4, ("progan", "val", 1): 4,
        ("stylegan", "test", 0): 4, ("stylegan", "test", 1): 6, ("deepfake", "test", 0): 3, ("deepfake", "test", 1): 1,
        # guided is scored against ImageNet reals, LDM against LAION reals (UnivFD's pairing).
        ("guided", "test", 0): 2, ("guided", "test", 1): 3, ("ldm_200", "test", 0): 5, ("ldm_200", "test", 1): 4,
    }
    assert all(s.label == (1 if "/1_fake/" in s.path else 0) for s in samples)
    only_cat = list(ForenSynths({"root": str(tmp_path), "classes": ["cat"]}).scan())
    assert _counts(only_cat)[("progan", "train", 0)] == 4


def test_forensynths_wrong_layout(tmp_path):
    touch_images(tmp_path / "progan" / "0_real", ["a.png"])
    with pytest.raises(HarnessError, match="train/progan"):
        list(ForenSynths({"root": str(tmp_path)}).scan())


# -- AIGCDetectBenchmark ----------------------------------------------------------------------


def test_aigcdetect_generators_with_and_without_classes(tmp_path):
    touch_images(tmp_path / "wukong" / "0_real", numbered("r", 3, ".png"))
    touch_images(tmp_path / "wukong" / "1_fake", numbered("f", 2, ".png"))
    for cls in ("bird", "dog"):
        touch_images(tmp_path / "progan" / cls / "0_real", numbered(cls, 1, ".png"))
        touch_images(tmp_path / "progan" / cls / "1_fake", numbered(cls, 2, ".png"))
    suite = AIGCDetect({"root": str(tmp_path)})
    samples = list(suite.scan())
    assert list(dict.fromkeys(s.generator for s in samples)) == ["progan", "wukong"]
    assert _counts(samples) == {("progan", "test", 0): 2, ("progan", "test", 1): 4,
                                ("wukong", "test", 0): 3, ("wukong", "test", 1): 2}


# -- CSV --------------------------------------------------------------------------------------


def test_csv_manifest_with_relative_paths_defaults_and_pairs(tmp_path):
    touch_images(tmp_path / "imgs", ["a.png", "b.png", "c.png"])
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,label,generator,split,pair\n"
                        "imgs/a.png,real,,train,\n"
                        "imgs/b.png,1,sd,,imgs/a.png\n"
                        f"{tmp_path / 'imgs' / 'c.png'},FAKE,sd,test,\n")
    samples = list(CSVSuite({"root": str(csv_path)}).scan())
    assert [(s.label, s.generator, s.split) for s in samples] == [(0, "list", "train"), (1, "sd", "test"),
                                                                   (1, "sd", "test")]
    assert samples[0].path == str(tmp_path / "imgs" / "a.png")
    assert samples[1].pair == str(tmp_path / "imgs" / "a.png")


def test_csv_bad_rows_are_named(tmp_path):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text("path,label\nx.png,maybe\n,1\ny.png,0\n")
    with pytest.raises(HarnessError) as info:
        list(CSVSuite({"root": str(csv_path)}).scan())
    assert "line 2: label 'maybe'" in str(info.value) and "line 3: empty path" in str(info.value)
    no_label = tmp_path / "nolabel.csv"
    no_label.write_text("file,class\nx.png,1\n")
    with pytest.raises(HarnessError, match="expected a CSV file"):
        list(CSVSuite({"root": str(no_label)}).scan())
    with pytest.raises(HarnessError, match="is not a file"):
        list(CSVSuite({"root": str(tmp_path / "missing.csv")}).scan())


# -- folders outside the published lists, splits without reals, conflicting CSV rows -----------


def _reasons(suite):
    return {path: reason for path, reason in suite.ignored}


def test_aigcdetect_unpublished_generator_folders_are_recorded_not_listed(tmp_path):
    for gen in ("Glide", "sdxl", "stable_diffusion_v_1_4 (copy)"):
        touch_images(tmp_path / gen / "0_real", numbered("r", 1, ".png"))
        touch_images(tmp_path / gen / "1_fake", numbered("f", 1, ".png"))
    touch_images(tmp_path / "midjourney" / "0_real", numbered("r", 2, ".png"))  # case differs from Midjourney
    touch_images(tmp_path / "midjourney" / "1_fake", numbered("f", 2, ".png"))
    suite = AIGCDetect({"root": str(tmp_path)})
    samples = list(suite.scan())
    generators = set(suite.generators())
    # Every listed generator is one the suite (and so a protocol) knows and scores.
    assert {s.generator for s in samples} == {"Glide", "Midjourney"} <= generators
    reasons = _reasons(suite)
    for gen in ("sdxl", "stable_diffusion_v_1_4 (copy)"):
        assert reasons[str(tmp_path / gen)].startswith("not one of the published generators of aigcdetect")


def test_forensynths_unpublished_folders_are_recorded_not_listed(tmp_path):
    touch_images(tmp_path / "train" / "progan" / "cat" / "0_real", ["a.png"])
    touch_images(tmp_path / "train" / "progan" / "cat" / "1_fake", ["a.png"])
    touch_images(tmp_path / "train" / "stylegan" / "cat" / "1_fake", ["s.png"])
    touch_images(tmp_path / "test" / "biggan" / "0_real", ["b.png"])
    touch_images(tmp_path / "test" / "biggan" / "1_fake", ["b.png"])
    touch_images(tmp_path / "test" / "dalle3" / "1_fake", ["d.png"])
    touch_images(tmp_path / "tset" / "crn" / "1_fake", ["c.png"])
    diffusion = tmp_path / "diffusion_datasets"
    touch_images(diffusion / "laion" / "0_real", ["l.png"])
    touch_images(diffusion / "ldm_200" / "1_fake", ["l.png"])
    touch_images(diffusion / "sdxl" / "1_fake", ["x.png"])
    suite = ForenSynths({"root": str(tmp_path)})
    samples = list(suite.scan())
    assert {s.generator for s in samples} == {"progan", "biggan", "ldm_200"} <= set(suite.generators())
    reasons = _reasons(suite)
    assert reasons[str(tmp_path / "test" / "dalle3")].startswith(
        "not one of the published test generators of forensynths")
    assert "ProGAN alone" in reasons[str(tmp_path / "train" / "stylegan")]
    assert "not a split folder" in reasons[str(tmp_path / "tset")]
    assert "diffusion_datasets" in reasons[str(diffusion / "sdxl")]


def test_drct2m_unpublished_generator_folders_are_recorded_unless_asked_for(tmp_path):
    _drct_tree(tmp_path)
    touch_images(tmp_path / "DRCT-2M" / "my-sd3" / "val2017", numbered("0000001", 2, ".png"))
    suite = DRCT2M({"root": str(tmp_path)})
    samples = list(suite.scan())
    assert {s.generator for s in samples} == {"stable-diffusion-v1-4", "sdxl-turbo"} <= set(suite.generators())
    assert _reasons(suite)[str(tmp_path / "DRCT-2M" / "my-sd3")].startswith(
        "not one of the published generators of drct2m")
    asked = DRCT2M({"root": str(tmp_path), "generators": ["my-sd3"]})
    counts = _counts(s for s in asked.scan() if s.split == "test")
    assert counts == {("my-sd3", "test", 0): 4, ("my-sd3", "test", 1): 2} and asked.generators() == ["my-sd3"]


@pytest.mark.parametrize("how", ["missing", "empty"])
def test_drct2m_split_without_reals_is_not_listed_and_says_why(tmp_path, how, caplog):
    _drct_tree(tmp_path)
    val = tmp_path / "MSCOCO" / "val2017"
    for path in val.iterdir():
        path.unlink()
    if how == "missing":
        val.rmdir()
    suite = DRCT2M({"root": str(tmp_path)})
    samples = list(suite.scan())
    assert not [s for s in samples if s.split == "test"]  # no fake-only test set
    assert "train" in {s.split for s in samples}
    reasons = _reasons(suite)
    assert "the real images of the test split" in reasons[str(val)]
    for gen in ("stable-diffusion-v1-4", "sdxl-turbo"):
        assert "not listed: its real images" in reasons[str(tmp_path / "DRCT-2M" / gen / "val2017")]
    assert "val2017" in caplog.text and "cannot be scored" in caplog.text


def test_csv_same_path_with_two_labels_is_an_error_naming_it(tmp_path):
    touch_images(tmp_path / "imgs", ["a.png", "b.png"])
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,label\nimgs/a.png,0\nimgs/b.png,1\n./imgs/a.png,fake\n")
    with pytest.raises(HarnessError) as info:
        list(CSVSuite({"root": str(csv_path)}).scan())
    message = str(info.value)
    assert str(tmp_path / "imgs" / "a.png") in message and "line 4" in message and "line 2" in message


def test_csv_image_in_a_training_split_and_in_test_is_an_error(tmp_path):
    touch_images(tmp_path / "imgs", ["a.png", "b.png"])
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,label,split\nimgs/a.png,0,train\nimgs/b.png,1,val\nimgs/b.png,1,train\n"
                        "imgs/a.png,0,test\n")
    with pytest.raises(HarnessError) as info:
        list(CSVSuite({"root": str(csv_path)}).scan())
    message = str(info.value)
    assert "1 bad row" in message  # b.png in train and val is allowed; a.png in train and test is not
    assert f"line 5: {tmp_path / 'imgs' / 'a.png'} is listed in split test here but in train on line 2" in message


def test_csv_repeated_row_is_listed_once_and_recorded(tmp_path):
    touch_images(tmp_path / "imgs", ["a.png"])
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,label,generator\nimgs/a.png,0,g1\nimgs/a.png,0,g2\nimgs/a.png,real,g1\n")
    suite = CSVSuite({"root": str(csv_path)})
    samples = list(suite.scan())
    assert [(s.generator, s.label) for s in samples] == [("g1", 0), ("g2", 0)]  # a real under two generators
    assert suite.ignored == [(str(tmp_path / "imgs" / "a.png"),
                              "line 4 repeats line 2 (same path, label, generator and split): listed once")]


def test_csv_paths_outside_its_folder_are_reported_skips_unless_allowed(tmp_path):
    root = tmp_path / "suite"
    touch_images(root / "imgs", ["in.png", "fake.png"])
    touch_images(tmp_path, ["outside.png"])
    (root / "imgs" / "link.png").symlink_to(tmp_path / "outside.png")
    csv_path = root / "list.csv"
    csv_path.write_text("path,label,pair\n"
                        "imgs/in.png,0,\n"
                        "/etc/passwd,1,\n"
                        "../outside.png,1,\n"
                        "imgs/../../outside.png,1,\n"
                        "imgs/link.png,1,\n"
                        "imgs/fake.png,1,../outside.png\n")
    suite = CSVSuite({"root": str(csv_path)})
    assert [s.path for s in suite.scan()] == [str(root / "imgs" / "in.png")]
    reasons = _reasons(suite)
    outside = str(tmp_path / "outside.png")
    assert set(reasons) == {"/etc/passwd", outside}
    assert all("outside the CSV file's folder" in r and "allow_outside_root" in r for r in reasons.values())
    assert len(suite.ignored) == 5  # one reported skip per row
    allowed = CSVSuite({"root": str(csv_path), "allow_outside_root": True})
    listed = {s.path: s.pair for s in allowed.scan()}
    assert set(listed) == {str(root / "imgs" / "in.png"), "/etc/passwd", outside, str(root / "imgs" / "fake.png")}
    assert listed[str(root / "imgs" / "fake.png")] == outside
    assert all("repeats line" in reason for _, reason in allowed.ignored)  # the three ways to outside.png
