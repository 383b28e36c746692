"""The input-policy geometry every detector shares, against hand-built references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from harness.detector import InputPolicy, apply_policy


def image(h: int, w: int, seed: int = 0) -> tuple[Image.Image, np.ndarray]:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr), arr


def as_uint8(t: torch.Tensor) -> np.ndarray:
    return (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def test_center_crop_of_a_large_image_is_the_centre():
    img, arr = image(40, 50)
    (out,) = apply_policy(InputPolicy("center_crop", size=32), [img])
    assert out.shape == (3, 32, 32)
    np.testing.assert_array_equal(as_uint8(out), arr[4:36, 9:41])


def test_center_crop_pads_a_small_image_with_the_pad_value():
    img, arr = image(20, 30)
    (out,) = apply_policy(InputPolicy("center_crop", size=32, pad_value=0), [img])
    ref = np.zeros((32, 32, 3), np.uint8)
    ref[6:26, 1:31] = arr  # padded by (32-20)//2 = 6 rows on top, (32-30)//2 = 1 column on the left
    np.testing.assert_array_equal(as_uint8(out), ref)


def test_tile_crop_repeats_a_small_image():
    img, arr = image(10, 12)
    (out,) = apply_policy(InputPolicy("tile_crop", size=16), [img])
    tiled = np.tile(arr, (2, 2, 1))  # 20 x 24 covers 16 x 16
    np.testing.assert_array_equal(as_uint8(out), tiled[2:18, 4:20])


def test_resize_gives_the_square_size():
    img, _ = image(40, 50)
    (out,) = apply_policy(InputPolicy("resize", size=16), [img])
    assert out.shape == (3, 16, 16) and 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_training_crop_is_shared_by_an_image_and_its_pair_and_seeded():
    img, arr = image(48, 48, seed=1)
    pair, pair_arr = image(48, 48, seed=2)
    policy = InputPolicy("center_crop", size=16, flip=True)
    a, b = apply_policy(policy, [img, pair], train=True, generator=torch.Generator().manual_seed(5))
    again, _ = apply_policy(policy, [img, pair], train=True, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, again)
    a8, b8 = as_uint8(a), as_uint8(b)
    # Find where the crop came from in the source and check the pair was cut at the same place.
    found = [(t, l, flip) for t in range(33) for l in range(33) for flip in (False, True)
             if np.array_equal((arr[t:t + 16, l:l + 16, :][:, ::-1] if flip else arr[t:t + 16, l:l + 16]), a8)]
    assert len(found) == 1
    t, l, flip = found[0]
    ref_pair = pair_arr[t:t + 16, l:l + 16]
    np.testing.assert_array_equal(b8, ref_pair[:, ::-1] if flip else ref_pair)


def test_unknown_geometry_is_refused():
    with pytest.raises(ValueError, match="unknown geometry"):
        InputPolicy("stretch", size=8)


@pytest.mark.parametrize("name", ["npr", "ssp", "sep", "patchcraft", "ipdnet", "ladeda", "tiny-ladeda", "cnnspot"])
def test_place_keeps_convolutions_in_nhwc_without_changing_logits_or_checkpoints(name):
    from harness.config import merge
    from harness.registry import get_detector
    from harness.checkpoints import state_digest

    cls = get_detector(name)
    assert cls.channels_last
    torch.manual_seed(0)
    detector = cls(merge(cls.defaults, cls.profiles["mini"]["detector"])).eval()
    size = detector.input_policy(False).size
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    if name in ("patchcraft", "sep"):  # two views per image
        x = torch.stack([x, x.flip(-1)], dim=1)
    with torch.no_grad():
        plain = detector(x)
    plain_hash = state_digest(detector)
    detector.place("cpu")
    convs = [m.weight for m in detector.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert any(not w.is_contiguous() for w in convs if w.shape[-1] > 1)  # the layout did change
    with torch.no_grad():
        torch.testing.assert_close(detector(x), plain, rtol=1e-4, atol=1e-4)
    assert state_digest(detector) == plain_hash
    assert all(t.is_contiguous() for t in detector.checkpoint_state().values())


@pytest.mark.parametrize("h, w", [(259, 263), (387, 300), (258, 261), (451, 300)])
def test_geometries_match_torchvision_on_pil_images(h, w):
    """Official loaders run torchvision transforms on PIL images: same crop origin (rounded, so
    the 2x2 pixel grid is not shifted when h - size is 3 mod 4) and the same bilinear resize."""
    from torchvision import transforms as T

    img, _ = image(h, w, seed=h)
    cases = [
        (InputPolicy("center_crop", size=256), T.CenterCrop(256)),
        (InputPolicy("resize", size=256), T.Resize((256, 256))),
        (InputPolicy("resize_crop", size=224, resize_to=256), T.Compose([T.Resize(256), T.CenterCrop(224)])),
    ]
    for policy, reference in cases:
        (out,) = apply_policy(policy, [img])
        torch.testing.assert_close(out, T.ToTensor()(reference(img)), rtol=0, atol=1e-7)


def test_floor_rounding_matches_albumentations_centre_crop():
    img, arr = image(259, 263)
    (out,) = apply_policy(InputPolicy("center_crop", size=256, center_rounding="floor"), [img])
    np.testing.assert_array_equal(as_uint8(out), arr[1:257, 3:259])  # (259-256)//2 = 1, (263-256)//2 = 3
    (out,) = apply_policy(InputPolicy("center_crop", size=256), [img])
    np.testing.assert_array_equal(as_uint8(out), arr[2:258, 4:260])  # round(1.5) = 2, round(3.5) = 4
