"""Generator facts (family, release date) and the time-ordered protocol keys."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.plugins.suites._generators import FAMILY_ONLY, KNOWN
from harness.protocols import Protocol, protocol_layer
from harness.registry import get_suite


def test_every_fact_is_a_family_and_an_iso_date():
    from datetime import date

    for name, (family, released) in KNOWN.items():
        assert family in {"gan", "diffusion", "closed", "other"}, name
        assert date.fromisoformat(released).isoformat() == released
    assert set(FAMILY_ONLY.values()) <= {"gan", "diffusion", "closed", "other"}
    for suite in ("genimage", "forensynths", "aigcdetect", "drct2m", "synthbuster", "aigibench"):
        suite_obj = get_suite(suite)({})
        assert set(suite_obj.generator_info()) <= set(suite_obj.generators()), suite


def test_time_ordered_protocol_splits_genimage_at_a_date():
    info = get_suite("genimage")({}).generator_info()
    known = list(info)
    name, layer, _ = protocol_layer("genimage-time")
    proto = Protocol.from_config(layer["protocol"], name=name)
    train, test = proto.resolve_generators(known, known, test_info=info, train_info=info)
    # Reference: a loop over the dates, undated generators in neither list.
    dated = {g: f["released"] for g, f in info.items() if "released" in f}
    assert train == [g for g in known if g in dated and dated[g] < "2022-01-01"] == ["ADM", "glide", "VQDM", "BigGAN"]
    assert test == [g for g in known if g in dated and dated[g] >= "2022-01-01"] == [
        "stable_diffusion_v_1_4", "stable_diffusion_v_1_5"]
    assert "Midjourney" not in train + test and "wukong" not in train + test


def test_test_released_after_and_bad_dates():
    info = {"a": {"released": "2020-01-01"}, "b": {"released": "2021-06-01"}, "c": {"released": "2023-02-01"}, "d": {}}
    proto = Protocol.from_config({"suite": "x", "train_released_before": "2021-01-01",
                                  "test_released_after": "2022-12-31"}, name="t")
    assert proto.resolve_generators(list(info), list(info), test_info=info, train_info=info) == (["a"], ["c"])
    with pytest.raises(HarnessError, match="must be a date YYYY-MM-DD"):
        Protocol.from_config({"suite": "x", "train_released_before": "Jan 2023"}, name="t")
    late = Protocol.from_config({"suite": "x", "train_released_before": "2019-01-01"}, name="t")
    with pytest.raises(HarnessError, match=r"no train generator of suite 'x' is released before 2019-01-01.*"
                                           r"without a date: d"):
        late.resolve_generators(list(info), list(info), test_info=info, train_info=info)
