"""Parity with the official implementations: the harness's checkpoint adapter + preprocessing
+ forward reproduce the outputs the official code gave (tests/golden/*.json, made by
scripts/make_parity_goldens.py from an official checkout; see tests/golden/README.md).

Each golden holds the official-layout weights as a layout and a seed; they are regenerated
here, saved in the official file format, and loaded through the detector's ``load_weights``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.golden.parity import GOLDEN_DIR, image_digest, load_golden, make_image, seeded_state, write_official_files
from harness.registry import get_detector

GOLDENS = sorted(p.stem for p in GOLDEN_DIR.glob("*.json"))
TOLERANCE = 1e-5  # fp32


def _fill_paths(value, paths):
    if isinstance(value, str):
        for name, path in paths.items():
            value = value.replace("{" + name + "}", str(path))
        return value
    if isinstance(value, dict):
        return {k: _fill_paths(v, paths) for k, v in value.items()}
    return value


def build_harness_detector(golden: dict, folder, weights: dict | None = None, alternative: int | None = None):
    """The harness detector loaded from the official-layout file(s) of ``golden`` (or of one of
    its ``harness_alternatives``: the same weights in another official file format)."""
    weights = weights or golden["weights"]
    harness = golden["harness"]
    if alternative is not None:
        harness = {**harness, **golden["harness_alternatives"][alternative]}
        weights = {**weights, "files": harness["files"]}
    paths = write_official_files(weights, seeded_state(weights), folder)
    if "open_clip_config" in harness:
        import open_clip

        cfg = harness["open_clip_config"]
        path = folder / f"{cfg['name']}.json"
        path.write_text(json.dumps(cfg["config"]))
        open_clip.add_model_config(path)
    det = get_detector(golden["detector"])(_fill_paths(harness.get("config", {}), paths))
    det.load_weights(paths[harness["load"]])
    return det.place("cpu").eval()  # as scoring places it (NHWC convolutions where the detector asks)


def golden_images(golden: dict):
    images = {}
    for name, spec in golden["images"].items():
        img = make_image(spec["source"], spec["size"])
        assert image_digest(img) == spec["sha256"], (
            f"bundled image {name} ({spec['source']} at {spec['size']}) differs from the one the golden was made "
            "from (scikit-image or Pillow changed its pixels): regenerate the goldens")
        images[name] = img
    return images


def harness_logits(det, images) -> dict[str, float]:
    with torch.no_grad():
        return {name: float(det(torch.stack(det.preprocess([img])))[0]) for name, img in images.items()}


CASES = [(name, None) for name in GOLDENS] + [
    (name, i) for name in GOLDENS for i in range(len(load_golden(name).get("harness_alternatives", [])))]


@pytest.mark.parametrize(("name", "alternative"), CASES,
                         ids=[name if alt is None else f"{name}-alt{alt}" for name, alt in CASES])
def test_harness_matches_the_official_code(name, alternative, tmp_path):
    torch.manual_seed(0)
    golden = load_golden(name)
    det = build_harness_detector(golden, tmp_path, alternative=alternative)
    images = golden_images(golden)
    got = harness_logits(det, images)
    for image, out in golden["outputs"].items():
        assert abs(got[image] - out["logit"]) <= TOLERANCE, (name, image, got[image], out["logit"])
        p_fake = 1.0 / (1.0 + math.exp(-got[image]))
        assert abs(p_fake - out["p_fake"]) <= TOLERANCE, (name, image, p_fake, out["p_fake"])
    check_probes(golden, det, images)


def check_probes(golden: dict, det, images) -> None:
    """Intermediate results the logit is not sensitive enough to with random weights (SEP's
    frequency view: its branch scales the features by 1 + 0.2 w)."""
    for image, probes in golden.get("probes", {}).items():
        x = torch.stack(det.preprocess([images[image]]))
        for method, probe in probes.items():
            with torch.no_grad():
                got = getattr(det, method)(x[:, probe["input_view"]])[0]
            channel, (r0, r1), (c0, c1) = probe["region"]
            assert torch.allclose(got[channel, r0:r1, c0:c1], torch.tensor(probe["values"]), atol=TOLERANCE), \
                (image, method, float((got[channel, r0:r1, c0:c1] - torch.tensor(probe["values"])).abs().max()))
            assert abs(float(got.abs().mean()) - probe["abs_mean"]) <= TOLERANCE, (image, method)


def test_goldens_tell_weights_apart(tmp_path):
    """Another seed moves the outputs far beyond the tolerance: the goldens pin the weights."""
    golden = load_golden("npr")
    other = {**golden["weights"], "seed": golden["weights"]["seed"] + 1}
    got = harness_logits(build_harness_detector(golden, tmp_path, other), golden_images(golden))
    assert max(abs(got[k] - v["logit"]) for k, v in golden["outputs"].items()) > 1e-2


def test_every_golden_names_its_official_commit():
    for name in GOLDENS:
        official = load_golden(name)["official"]
        assert official["repo"].startswith("github.com/") and len(official["commit"]) == 40, name
