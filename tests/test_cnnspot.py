"""CNNSpot: the official checkpoint layout, the test geometry and the training pipeline's order of operations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from harness.checkpoints import save_checkpoint
from harness.config import merge
from harness.errors import HarnessError
from harness.plugins.detectors.cnnspot import CNNSpot

MINI = merge(CNNSpot.defaults, CNNSpot.profiles["mini"]["detector"])


def photo(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_official_file_layout_loads_and_a_harness_checkpoint_is_the_same_layout(tmp_path):
    import torchvision

    official = torchvision.models.resnet50(num_classes=1)  # networks/resnet.py is torchvision's layout
    torch.save({"model": official.state_dict(), "total_steps": 7}, tmp_path / "blur_jpg_prob0.5.pth")
    detector = CNNSpot().eval()
    detector.load_weights(tmp_path / "blur_jpg_prob0.5.pth")
    assert detector.provenance["random_init"] is False
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = official.eval()(detector.normalize(x)).squeeze(1)
        torch.testing.assert_close(detector(x), expected)
        path = save_checkpoint(tmp_path / "h.safetensors", detector.checkpoint_state(), detector.config)
        again = CNNSpot().eval()
        again.load_weights(path)
        assert torch.equal(again(x), detector(x))
    with pytest.raises(HarnessError, match="does not fit detector 'cnnspot'"):
        CNNSpot(MINI).load_weights(tmp_path / "blur_jpg_prob0.5.pth")


def test_test_geometry_is_a_centre_crop_without_resize_or_the_whole_image():
    img = photo(301, 257)
    (crop,) = CNNSpot().preprocess([img])
    torch.testing.assert_close(crop, T.ToTensor()(T.CenterCrop(224)(img)), rtol=0, atol=1e-7)
    (whole,) = CNNSpot({"crop": False}).preprocess([img])
    assert whole.shape == (3, 256, 300)  # native size, the odd last column dropped


def test_training_resizes_the_shorter_side_then_crops_and_augments_in_the_official_order():
    img = photo(200, 120, seed=3)
    detector = CNNSpot({"blur_prob": 0.0, "jpeg_prob": 0.0, "load_size": 128, "crop_size": 96})
    (out,) = detector.preprocess([img], train=True, generator=torch.Generator().manual_seed(0))
    resized = T.ToTensor()(T.Resize(128)(img))  # torchvision Resize(int): shorter side, bilinear
    assert resized.shape == (3, 128, 213)
    hits = [(t, l, f) for t in range(128 - 96 + 1) for l in range(213 - 96 + 1) for f in (False, True)
            if torch.allclose(out, (resized[:, t:t + 96, l:l + 96].flip(-1) if f else resized[:, t:t + 96, l:l + 96]),
                              rtol=0, atol=1e-6)]
    assert len(hits) == 1
    always = CNNSpot({"blur_prob": 1.0, "blur_sigma": [2.0, 2.0], "jpeg_prob": 0.0, "load_size": 128, "crop_size": 96})
    (blurred,) = always.preprocess([img], train=True, generator=torch.Generator().manual_seed(0))
    assert blurred.std() < out.std()  # sigma 2 smooths the noise image


def test_mini_profile_and_bad_settings():
    detector = CNNSpot(MINI).eval()
    assert detector.input_policy().size == 56 and detector.provenance["random_init"]
    with torch.no_grad():
        assert detector(torch.rand(2, 3, 56, 56)).shape == (2,)
    with pytest.raises(HarnessError, match="larger than load_size"):
        CNNSpot({"crop_size": 300})
