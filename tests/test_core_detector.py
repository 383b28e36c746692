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
