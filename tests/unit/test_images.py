"""One image decoder for training and evaluation: bit depths, float images, transparency, bombs (issue #8)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from catlip.data import images
from catlip.data.loader import decode_image as train_decode
from catlip.evaluate.common.datasets import decode_image as eval_decode
from catlip.evaluate.common.datasets import open_labelled

# 0..65520 in steps of 16 over a 64x64 image: every 8-bit value appears 16 times
RAMP16 = (np.arange(64 * 64, dtype=np.int64).reshape(64, 64) * 16).astype(np.uint16)


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _tiff_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "TIFF")
    return buf.getvalue()


def _png16(samples: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit RGB or grayscale+alpha)."""
    h, w = samples.shape[:2]
    raw = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _gray(img: Image.Image) -> np.ndarray:
    a = np.asarray(img)
    assert img.mode == "RGB" and a.dtype == np.uint8
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
    return a[..., 0].astype(np.int64)


def _close(got: np.ndarray, want: np.ndarray, tol: int = 1) -> None:
    assert got.shape == want.shape
    assert np.abs(got - want.astype(np.int64)).max() <= tol


def test_16bit_png_ramp_matches_the_high_byte_in_training_and_evaluation(tmp_path):
    img16 = Image.fromarray(RAMP16)  # mode I;16
    assert img16.mode == "I;16"
    data = _png_bytes(img16)
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I")  # how Pillow represents a 16-bit PNG
    want = RAMP16 >> 8
    _close(_gray(train_decode(data, 10**8)), want)
    _close(_gray(eval_decode(data)), want)
    # the old decoder's bug: Pillow's convert("RGB") makes this ramp almost all white
    assert np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).mean() > 250
    # evaluation reads files from folders; the decoded image is the same
    (tmp_path / "ramp").mkdir()
    (tmp_path / "ramp" / "a.png").write_bytes(data)
    got, target = open_labelled(tmp_path).dataset[0]
    assert target == 0
    _close(_gray(got), want)


def test_16bit_ramp_through_the_training_dataset_transform():
    from catlip.config import DataConfig
    from catlip.data.loader import TrainDataset
    from catlip.data.transforms import MEAN, STD

    data = _png_bytes(Image.fromarray(RAMP16))

    class OneImage:
        def __len__(self):
            return 1

        def read(self, i):
            return data, ["a ramp"], -1

    cfg = DataConfig(augment="none")
    ds = TrainDataset(OneImage(), cfg, seed=0, want_labels=False, want_text=False)
    tensor = ds.load(0, 0, 64)[0]
    pixels = (tensor * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]) * 255
    for channel in pixels:
        _close(channel.round().long().numpy(), RAMP16 >> 8)


@pytest.mark.parametrize("color_type, channels", [(0, 1), (4, 2), (2, 3), (6, 4)])
def test_hand_written_16bit_pngs_of_every_colour_type(color_type, channels):
    planes = [RAMP16] * min(channels, 3) if channels != 2 else [RAMP16]
    if channels in (2, 4):  # fully opaque alpha
        planes = planes + [np.full_like(RAMP16, 65535)]
    samples = np.stack(planes, -1) if len(planes) > 1 else RAMP16
    data = _png16(samples, color_type)
    for decoded in (train_decode(data, 10**8), eval_decode(data)):
        _close(_gray(decoded), RAMP16 >> 8)


def test_16bit_grayscale_alpha_is_composited_on_white():
    alpha = np.zeros_like(RAMP16)
    alpha[:32] = 65535  # top half opaque, bottom half transparent
    data = _png16(np.stack([RAMP16, alpha], -1), 4)
    got = _gray(eval_decode(data))
    _close(got[:32], RAMP16[:32] >> 8)
    assert (got[32:] == 255).all()


def test_mode_i_scaling_follows_the_source_bit_depth_not_the_data():
    # a dark 16-bit image stays dark: the scale comes from the bit depth, not from the maximum
    dark = (RAMP16 // 16).astype(np.uint16)  # 0..4095 in a 16-bit container
    _close(_gray(eval_decode(_png_bytes(Image.fromarray(dark)))), dark >> 8)
    # a 16-bit PNG that an older Pillow opened as mode I (0..65535 in int32) is still 16-bit
    as_i = Image.fromarray(RAMP16.astype(np.int32))
    assert as_i.mode == "I"
    assert images.source_bits(as_i, "I;16B") == 16
    as_i.format = "PNG"
    assert images.source_bits(as_i) == 16
    _close(_gray(images.to_rgb(as_i)), RAMP16 >> 8)
    # a genuine 32-bit integer image: Pillow's int32 range, 0..2^31-1 -> 0..255
    ramp32 = np.arange(256, dtype=np.int64).reshape(16, 16) * (1 << 23) + 12345
    tiff = _tiff_bytes(Image.fromarray(ramp32.astype(np.int32)))
    assert Image.open(io.BytesIO(tiff)).mode == "I"
    _close(_gray(train_decode(tiff, 10**8)), ramp32 >> 23)
    _close(_gray(eval_decode(tiff)), ramp32 >> 23)
    negative = Image.fromarray(np.full((4, 4), -5, dtype=np.int32))
    assert (_gray(images.to_rgb(negative)) == 0).all()
    # 16-bit TIFF opens as I;16 as well
    _close(_gray(eval_decode(_tiff_bytes(Image.fromarray(RAMP16)))), RAMP16 >> 8)


def test_float_images_in_unit_range_and_in_byte_range():
    unit = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    _close(_gray(eval_decode(_tiff_bytes(Image.fromarray(unit)))), np.rint(unit * 255))
    _close(_gray(train_decode(_tiff_bytes(Image.fromarray(unit)), 10**8)), np.rint(unit * 255))
    byte = np.linspace(-20, 300, 256, dtype=np.float32).reshape(16, 16)
    _close(_gray(images.to_rgb(Image.fromarray(byte))), np.clip(np.rint(byte), 0, 255))
    with_nan = unit.copy()
    with_nan[0, 0] = np.nan
    assert _gray(images.to_rgb(Image.fromarray(with_nan)))[0, 0] == 0


def test_palette_transparency_alpha_la_and_cmyk():
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 200, 10, 10] + [0] * (254 * 3))
    pal.putpixel((0, 0), 0)
    pal.info["transparency"] = 0  # palette entry 0 (black) is transparent
    for decoded in (eval_decode(_png_bytes(pal)), images.to_rgb(pal)):
        a = np.asarray(decoded)
        assert tuple(a[0, 0]) == (255, 255, 255) and tuple(a[1, 1]) == (200, 10, 10)

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque
    rgba[0, 1] = (0, 0, 0, 0)  # fully transparent black -> white
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    rgba[1, 1] = (255, 0, 0, 0)
    a = np.asarray(train_decode(_png_bytes(Image.fromarray(rgba, "RGBA")), 10**8)).astype(int)
    assert tuple(a[0, 0]) == (10, 20, 30) and tuple(a[0, 1]) == (255, 255, 255) == tuple(a[1, 1])
    assert all(abs(v - 127) <= 1 for v in a[1, 0])

    la = Image.fromarray(np.array([[[50, 255], [50, 0]]], np.uint8), "LA")
    assert [tuple(p) for p in np.asarray(eval_decode(_png_bytes(la)))[0]] == [(50, 50, 50), (255, 255, 255)]

    gray_trns = Image.fromarray(np.array([[7, 9]], np.uint8))
    gray_trns.info["transparency"] = 7
    assert [tuple(p) for p in np.asarray(eval_decode(_png_bytes(gray_trns)))[0]] == [(255,) * 3, (9,) * 3]

    cmyk = Image.new("CMYK", (2, 2), (0, 0, 0, 0))
    buf = io.BytesIO()
    cmyk.save(buf, "JPEG")
    assert np.asarray(eval_decode(buf.getvalue())).min() >= 250  # no ink = white
    assert train_decode(Image.new("1", (3, 3), 1), 100).getpixel((0, 0)) == (255, 255, 255)


def test_16bit_grayscale_transparency_uses_the_exact_source_value():
    img = Image.fromarray(np.array([[1000, 1001]], np.uint16))
    img.info["transparency"] = 1000
    assert [tuple(p) for p in np.asarray(images.to_rgb(img))[0]] == [(255,) * 3, (3,) * 3]


def test_decompression_bombs_are_refused_in_both_paths(monkeypatch):
    data = _png_bytes(Image.new("RGB", (40, 40)))  # 1,600 pixels
    with pytest.raises(Image.DecompressionBombError):
        train_decode(data, 1000)  # between 1x and 2x the limit (where Pillow itself only warns)
    with pytest.raises(Image.DecompressionBombError):
        train_decode(data, 500)
    assert train_decode(data, 1600).size == (40, 40)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert eval_decode(data) is None


def test_unreadable_data_is_an_error_for_training_and_none_for_evaluation(tmp_path):
    with pytest.raises(Exception):  # noqa: B017 - Pillow's own error types
        train_decode(b"not an image", 10**8)
    assert eval_decode(b"not an image") is None
    assert eval_decode(_png_bytes(Image.new("RGB", (8, 8)))[:40]) is None
    assert eval_decode(tmp_path / "missing.png") is None
