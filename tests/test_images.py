"""The hostile-file corpus: every file is decoded by the fixed rules or reported, never a crash."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from harness.images import ImageDecodeError, decode_image, format_of_name, load_image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand, so that the test does not rely on Pillow's own writer."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(rows))
            + _png_chunk(b"IEND", b""))


def _photo(h: int = 24, w: int = 40) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _reason(path) -> str:
    with pytest.raises(ImageDecodeError) as info:
        load_image(path)
    assert info.value.path == str(path)
    return info.value.reason


def test_zero_byte_file_is_reported(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert _reason(path) == "zero-byte file"


def test_missing_file_and_directory_are_reported(tmp_path):
    assert "cannot read" in _reason(tmp_path / "missing.jpg")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    assert _reason(folder) == "not a regular file"


@pytest.mark.parametrize("fmt,suffix", [("JPEG", ".jpg"), ("PNG", ".png")])
def test_truncated_files_are_reported(tmp_path, fmt, suffix):
    buf = io.BytesIO()
    Image.fromarray(_photo(64, 64)).save(buf, fmt)
    whole = buf.getvalue()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(whole[: len(whole) // 2])
    reason = _reason(path)
    assert "truncated" in reason or "corrupt" in reason


def test_truncation_is_not_hidden_by_a_global_pillow_switch(tmp_path, monkeypatch):
    buf = io.BytesIO()
    Image.fromarray(_photo(64, 64)).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[:300])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert "LOAD_TRUNCATED_IMAGES" in _reason(path)


def test_text_file_named_png_is_reported(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    assert _reason(path) == "not an image file (unknown format)"


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    # 100k x 100k declared, a few bytes of data: decoding it would allocate 30 GB.
    rows = zlib.compress(b"\x00" * 10)
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    assert "decompression bomb" in _reason(path)


def test_pixel_cap_is_configurable(tmp_path):
    path = tmp_path / "ok.png"
    Image.fromarray(_photo(20, 20)).save(path)
    assert load_image(path).size == (20, 20)
    with pytest.raises(ImageDecodeError, match="20x20 exceeds the 399-pixel cap"):
        load_image(path, max_pixels=399)


def test_one_pixel_image_decodes(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (1, 1) and img.getpixel((0, 0)) == (10, 20, 30)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    cmyk = np.zeros((16, 16, 4), np.uint8)
    cmyk[:8] = (0, 255, 255, 0)  # red
    cmyk[8:] = (255, 0, 255, 0)  # green
    Image.fromarray(cmyk, "CMYK").save(path, quality=100)
    img, fmt = decode_image(path)
    arr = np.asarray(img).astype(int)
    assert img.mode == "RGB" and fmt == "JPEG"
    assert np.abs(arr[2, 2] - (255, 0, 0)).max() <= 8
    assert np.abs(arr[12, 12] - (0, 255, 0)).max() <= 8


def test_sixteen_bit_grey_keeps_the_high_byte(tmp_path):
    values = np.array([[0, 255, 256, 40000], [65535, 1000, 30000, 512]], dtype=np.uint16)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)
    path = tmp_path / "grey16.png"
    path.write_bytes(_png_bytes(4, 2, 16, 0, rows))
    arr = np.asarray(load_image(path))
    expected = values >> 8
    assert arr.shape == (2, 4, 3)
    for channel in range(3):
        np.testing.assert_array_equal(arr[..., channel], expected)


def test_sixteen_bit_rgb_keeps_the_high_byte(tmp_path):
    values = np.array([[[65535, 0, 257], [40000, 20000, 511]]], dtype=np.uint16)
    rows = b"\x00" + values[0].astype(">u2").tobytes()
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png_bytes(2, 1, 16, 2, rows))
    np.testing.assert_array_equal(np.asarray(load_image(path)), values >> 8)


def test_palette_images_use_their_palette_and_transparency(tmp_path):
    palette = [255, 0, 0, 0, 0, 255] + [0] * (254 * 3)
    indices = np.array([[0, 1], [1, 0]], np.uint8)
    img = Image.fromarray(indices, "P")
    img.putpalette(palette)
    opaque = tmp_path / "palette.png"
    img.save(opaque)
    arr = np.asarray(load_image(opaque))
    assert tuple(arr[0, 0]) == (255, 0, 0) and tuple(arr[0, 1]) == (0, 0, 255)

    clear = tmp_path / "palette_clear.png"
    img.save(clear, transparency=1)  # index 1 (blue) is transparent -> white background
    arr = np.asarray(load_image(clear))
    assert tuple(arr[0, 0]) == (255, 0, 0) and tuple(arr[0, 1]) == (255, 255, 255)


def test_rgba_and_grey_alpha_are_composited_on_white(tmp_path):
    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 0], [0, 0, 0, 128]]], np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(path)
    arr = np.asarray(load_image(path)).astype(int)
    assert tuple(arr[0, 0]) == (200, 100, 50)
    assert tuple(arr[0, 1]) == (255, 255, 255)
    # Half-transparent black over white: about half grey.
    assert np.all(np.abs(arr[0, 2] - 127) <= 1)

    la = tmp_path / "la.png"
    Image.fromarray(np.array([[[90, 255], [90, 0]]], np.uint8), "LA").save(la)
    arr = np.asarray(load_image(la))
    assert tuple(arr[0, 0]) == (90, 90, 90) and tuple(arr[0, 1]) == (255, 255, 255)


def test_grey_and_bilevel_images_are_replicated_to_three_channels(tmp_path):
    grey = np.array([[0, 77, 255]], np.uint8)
    path = tmp_path / "grey.png"
    Image.fromarray(grey, "L").save(path)
    arr = np.asarray(load_image(path))
    np.testing.assert_array_equal(arr, np.repeat(grey[..., None], 3, axis=2))


def test_exif_rotated_photo_is_turned_upright(tmp_path):
    # Stored 40 wide x 24 high; EXIF orientation 6 means "rotate 90 degrees clockwise to view".
    stored = np.zeros((24, 40, 3), np.uint8)
    stored[:4, :4] = 255  # white block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=100)
    arr = np.asarray(load_image(path)).astype(int)
    expected = np.rot90(stored, k=-1)  # clockwise quarter turn, computed independently
    assert arr.shape == expected.shape == (40, 24, 3)
    assert np.abs(arr - expected).mean() < 4
    assert arr[:4, -4:].mean() > 200 and arr[:4, :4].mean() < 50


def test_animation_uses_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert load_image(path).getpixel((1, 1)) == (255, 0, 0)


def test_format_comes_from_content_and_from_name(tmp_path):
    path = tmp_path / "really_a_jpeg.png"
    Image.fromarray(_photo()).save(path, "JPEG")
    assert decode_image(path)[1] == "JPEG"
    assert format_of_name(path.name) == "PNG"
    assert format_of_name("ILSVRC2012_val_00000001.JPEG") == "JPEG"


def test_hostile_files_through_data_loader_workers_are_counted_not_fatal(tmp_path):
    from harness.data import SampleDataset, make_loader
    from harness.suite import Sample
    from tests.tiny_detector import TinyResidualDetector

    good = {}
    for name, mode in (("rgb.png", "RGB"), ("cmyk.jpg", "CMYK"), ("grey.png", "L"), ("rgba.png", "RGBA"),
                       ("dot.png", "RGB")):
        size = (1, 1) if name == "dot.png" else (40, 40)
        path = tmp_path / name
        Image.new(mode, size).save(path)
        good[str(path)] = name
    bad = {tmp_path / "empty.png": b"", tmp_path / "text.png": b"not an image",
           tmp_path / "cut.jpg": _jpeg_bytes()[:200]}
    for path, data in bad.items():
        path.write_bytes(data)
    paths = sorted(good) + sorted(str(p) for p in bad) + [str(tmp_path / "gone.png")]
    samples = [Sample(p, i % 2, "g", "test") for i, p in enumerate(paths)]
    dataset = SampleDataset(samples, TinyResidualDetector())
    seen, skipped = 0, []
    for batch in make_loader(dataset, batch_size=3, workers=2):
        seen += len(batch["index"])
        skipped += [(samples[i].path, reason) for i, reason in batch["skipped"]]
    assert seen == len(good)
    assert sorted(p for p, _ in skipped) == sorted([str(p) for p in bad] + [str(tmp_path / "gone.png")])
    reasons = dict(skipped)
    assert reasons[str(tmp_path / "empty.png")] == "zero-byte file"
    assert reasons[str(tmp_path / "text.png")] == "not an image file (unknown format)"


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_photo(64, 64)).save(buf, "JPEG")
    return buf.getvalue()
