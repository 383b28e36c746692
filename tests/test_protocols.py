"""Benchmark protocol files: the shipped ones, lookup, overrides and checked generator names."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.registry import get_suite
from harness.protocols import Protocol, available_benchmarks, find_benchmark, protocol_layer

REPO_BENCHMARKS = Path(__file__).resolve().parent.parent / "harness" / "benchmarks"


def load(name: str) -> Protocol:
    name, layer, path = protocol_layer(name)
    return Protocol.from_config(layer["protocol"], name=name, path=path)


def test_shipped_protocols_follow_the_papers(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # found from anywhere, not only from the repository root
    assert {"genimage", "drct2m", "chameleon", "mini"} <= set(available_benchmarks())

    genimage = load("genimage")
    assert genimage.suite == genimage.train_suite == "genimage"
    assert genimage.train_generators == ["stable_diffusion_v_1_4"]
    assert genimage.test_generators == ["Midjourney", "stable_diffusion_v_1_4", "stable_diffusion_v_1_5", "ADM",
                                        "glide", "wukong", "VQDM", "BigGAN"]  # Table 1's columns

    drct = load("drct2m")
    assert drct.train_generators == ["stable-diffusion-v1-4"] and len(set(drct.test_generators)) == 16

    chameleon = load("chameleon")
    assert (chameleon.suite, chameleon.train_suite, chameleon.train_generators) == ("chameleon", "genimage", "all")
    assert chameleon.metrics[:3] == ["acc", "fake_acc", "real_acc"]  # Table 3 reports fake / real accuracy

    mini = load("mini")
    assert mini.train_generators == ["tconv"] and mini.profile == "mini"
    assert mini.test_generators == ["tconv", "nearest", "bilinear", "pixelshuffle", "vqvae", "denoiser"]
    assert mini.analyses == ["tde", "masking", "corruptions"]


def test_protocol_generator_names_exist_in_the_suites():
    for name in ("genimage", "mini"):
        proto = load(name)
        known = get_suite(proto.suite)().generators()  # the published list when no root is set
        train, test = proto.resolve_generators(known, known)
        assert train == proto.train_generators and test == proto.test_generators


def test_lookup_order_and_plain_suite_fallback(monkeypatch, tmp_path):
    own = tmp_path / "mine"
    own.mkdir()
    (own / "mini.toml").write_text('[protocol]\nsuite = "mini"\ntrain_generators = ["nearest"]\n')
    monkeypatch.setenv("HARNESS_BENCHMARKS", str(own))
    assert find_benchmark("mini") == own / "mini.toml"
    assert load("mini").train_generators == ["nearest"]
    monkeypatch.delenv("HARNESS_BENCHMARKS")
    assert find_benchmark("mini") == REPO_BENCHMARKS / "mini.toml"

    name, layer, path = protocol_layer("folder")  # no folder.toml: the plain suite
    plain = Protocol.from_config(layer["protocol"], name=name, path=path)
    assert path is None and plain.suite == plain.train_suite == "folder"
    assert plain.train_generators == plain.test_generators == "all"
    assert plain.resolve_generators(["a", "b"], ["a", "b"]) == (["a", "b"], ["a", "b"])


@pytest.mark.parametrize(
    "section, message",
    [
        ({"suite": "x", "train_generator": ["a"]}, "unknown keys"),
        ({"train_generators": ["a"]}, "names no suite"),
        ({"suite": "x", "metrics": ["accuracy"]}, "unknown metrics"),
        ({"suite": "x", "test_generators": []}, "non-empty list"),
        ({"suite": "x", "test_generators": 3}, "non-empty list"),
    ],
)
def test_bad_protocols_are_clear_errors(section, message):
    with pytest.raises(HarnessError, match=message):
        Protocol.from_config(section, name="bad")


def test_unknown_generators_name_the_known_ones():
    proto = Protocol.from_config({"suite": "s", "train_generators": "a", "test_generators": ["a", "zz"]}, name="p")
    assert proto.train_generators == ["a"]
    with pytest.raises(HarnessError, match="zz.*its generators are: a, b"):
        proto.resolve_generators(["a", "b"], ["a", "b"])


def test_benchmark_file_without_protocol_table(monkeypatch, tmp_path):
    (tmp_path / "broken.toml").write_text('[suite]\npreset = "tiny"\n')
    monkeypatch.setenv("HARNESS_BENCHMARKS", str(tmp_path))
    with pytest.raises(HarnessError, match="no \\[protocol\\] table"):
        protocol_layer("broken")


def test_a_benchmarks_folder_in_the_working_directory_does_not_replace_a_shipped_protocol(monkeypatch, tmp_path):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "genimage.toml").write_text('[protocol]\nsuite = "genimage"\ntrain_generators = ["ADM"]\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HARNESS_BENCHMARKS", raising=False)
    assert find_benchmark("genimage") == REPO_BENCHMARKS / "genimage.toml"
    assert load("genimage").train_generators == ["stable_diffusion_v_1_4"]
