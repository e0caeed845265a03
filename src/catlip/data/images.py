"""The one image decoder of catlip: bytes, a path or a PIL image → an 8-bit RGB PIL image.

Training (``data.loader.decode_image``) and evaluation (``evaluate.common.datasets.decode_image``) both call
:func:`decode_rgb`, so a file looks the same to pre-training and to every probe. Pillow's ``convert("RGB")`` is
only right for 8-bit modes: on a 16-bit or 32-bit integer image (modes ``I;16``, ``I;16B``, ``I``) it clips every
value above 255 to white, and on a float image (mode ``F``) it clips [0, 1] data to black. Those modes are scaled
here instead, by the **bit depth of the source**, never by the data's maximum (a dark 16-bit photo stays dark):

- integer images: ``value >> (bits - 8)`` with negatives at 0. ``bits`` is read from the decoder's raw mode
  (``I;16B`` → 16, ``I;12`` → 12, signed ``I;16S`` → 15) before the pixels are decoded; without one, a
  mode-``I;16*`` image is 16-bit, a PNG in mode ``I`` is 16-bit (older Pillow opens 16-bit grayscale PNGs as
  ``I``; PNG samples have at most 16 bits), and any other mode-``I`` image is 32-bit data, which Pillow holds as
  int32: its range 0..2³¹-1 maps to 0..255 (``>> 23``).
- float images (mode ``F``): values in [0, 1] when the maximum is ≤ 1 (×255), otherwise already 0..255 (clipped).
  NaN becomes 0.
- 16-bit RGB, RGBA and grayscale+alpha PNGs: Pillow already reduces them to 8-bit (high byte), like ``>> 8``.

Transparency (an alpha channel, a palette or grayscale/RGB ``tRNS`` entry, premultiplied ``RGBa``/``La``) is
**composited on white**: a transparent pixel looks like the page it would be shown on, whatever colour the file
happens to store under it (often black, which dropping the alpha would reveal). Palette images go through their
palette, CMYK/YCbCr through Pillow's conversions, bilevel images to black/white.

Decompression bombs are refused: an image with more than ``max_pixels`` pixels (default: Pillow's
``Image.MAX_IMAGE_PIXELS``) raises :class:`PIL.Image.DecompressionBombError` before its pixels are decoded.

**Decode or skip** (:func:`decode_or_skip`): the one contract of every reader of images (training, LiT's feature
cache, evaluation sets, tagging, retrieval, dense data, caption tasks): the image, or a :class:`Skip` — the reason
as a plain string, which callers count by name, carrying the error's text. Reasons: ``decompression_bomb``,
``corrupt_image`` (whatever Pillow cannot read), ``missing_file`` (a path that is not there); reading the bytes
first gives ``missing_file`` / ``unreadable`` (:func:`read_skip`).
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

WHITE = (255, 255, 255)
_RAW_BITS = re.compile(r"^I;(\d+)([A-Z]*)")


def _rawmode(img: Image.Image) -> str:
    """The decoder's raw mode (e.g. ``I;16B``), readable only until the pixels are loaded."""
    for tile in getattr(img, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        if isinstance(args, tuple):
            args = next((a for a in args if isinstance(a, str)), None)
        if isinstance(args, str):
            return args
    return ""


def source_bits(img: Image.Image, rawmode: str | None = None) -> int | None:
    """Bits of the non-negative value range of an integer (``I``/``I;16*``) image's source; None otherwise.

    16 for unsigned 16-bit, 12 for ``I;12``, 15 for signed ``I;16S``, 31 for 32-bit data (Pillow's int32 range).
    """
    if img.mode != "I" and not img.mode.startswith("I;"):
        return None
    m = _RAW_BITS.match(rawmode if rawmode is not None else _rawmode(img)) or _RAW_BITS.match(img.mode)
    if m:
        bits, flags = int(m.group(1)), m.group(2)
        if bits >= 32:
            return 31
        return bits - 1 if "S" in flags else bits
    if (img.format or "").upper() == "PNG":
        return 16
    return 31


def _int_to_l(img: Image.Image, bits: int) -> Image.Image:
    a = np.asarray(img).astype(np.int64)
    if bits > 8:
        a = np.clip(a, 0, (1 << bits) - 1) >> (bits - 8)
    out = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))  # mode L
    trns = img.info.get("transparency")
    if isinstance(trns, int):  # grayscale tRNS: the exact source value is transparent
        alpha = np.where(np.asarray(img).astype(np.int64) == trns, 0, 255).astype(np.uint8)
        out = Image.merge("LA", (out, Image.fromarray(alpha)))
    return out


def _float_to_l(img: Image.Image) -> Image.Image:
    a = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    if a.size and a.max() <= 1.0:
        a = np.clip(a, 0.0, 1.0) * 255.0
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


def _has_alpha(img: Image.Image) -> bool:
    if img.mode == "P" and img.palette is not None and img.palette.mode == "RGBA":
        return True
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def to_rgb(img: Image.Image, bits: int | None = None) -> Image.Image:
    """8-bit RGB copy of ``img`` (see the module docstring); ``bits`` overrides the detected integer depth."""
    if img.mode == "RGB" and "transparency" not in img.info:
        return img.copy()
    if img.mode == "F":
        img = _float_to_l(img)
    elif img.mode == "I" or img.mode.startswith("I;"):
        img = _int_to_l(img, bits or source_bits(img) or 31)
    if _has_alpha(img):
        if img.mode == "La":  # premultiplied grayscale: Pillow converts it via LA
            img = img.convert("LA")
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, WHITE)
        out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return out
    return img.convert("RGB")


@contextlib.contextmanager
def open_image(data: bytes | bytearray | memoryview | str | Path, *, max_pixels: int | None = None):
    """The opened, not yet decoded image of ``data`` (encoded bytes or a path), after the bomb checks.

    Only the header has been read: size, mode and format are known, the pixels are not decoded until ``load()``
    (so a caller may still ask Pillow for a reduced-size decode with ``draft``). Raises like :func:`decode_rgb`.
    """
    if max_pixels is not None:
        Image.MAX_IMAGE_PIXELS = max_pixels
    limit = Image.MAX_IMAGE_PIXELS
    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    with warnings.catch_warnings():
        # PIL only warns between 1x and 2x the limit; a bomb must never be decoded, so the warning is an error.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(src)
        except Image.DecompressionBombWarning as warn:
            raise Image.DecompressionBombError(str(warn)) from None
        with img:
            if limit is not None and img.width * img.height > limit:
                raise Image.DecompressionBombError(
                    f"image of {img.width * img.height} pixels exceeds the limit of {limit}")
            yield img


def decode_rgb(data: bytes | bytearray | memoryview | str | Path | Image.Image, *,
               max_pixels: int | None = None) -> Image.Image:
    """Decode ``data`` (encoded bytes, a file path, or an already opened PIL image) to 8-bit RGB.

    Raises :class:`PIL.Image.DecompressionBombError` for images over ``max_pixels`` pixels (default: Pillow's
    ``Image.MAX_IMAGE_PIXELS``; None there means no limit) and whatever Pillow raises for unreadable data.
    A given ``max_pixels`` also becomes Pillow's process-wide ``Image.MAX_IMAGE_PIXELS``, as training always did.
    """
    if isinstance(data, Image.Image):
        return to_rgb(data)
    with open_image(data, max_pixels=max_pixels) as img:
        bits = source_bits(img, _rawmode(img))  # before load(): the raw mode is gone afterwards
        img.load()
        return to_rgb(img, bits)


class Skip(str):
    """Why a sample is skipped: the reason (a plain string, counted by name) carrying the error's text."""

    error = ""

    def __new__(cls, reason: str, error: object = ""):
        obj = super().__new__(cls, reason)
        text = f"{type(error).__name__}: {error}" if isinstance(error, Exception) else str(error)
        obj.error = re.sub(r" <_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", text)[:300]
        return obj


def read_skip(err: OSError) -> Skip:
    """The skip of a sample whose bytes could not be read: ``missing_file`` or ``unreadable``."""
    if isinstance(err, FileNotFoundError):
        return Skip("missing_file", err.args[0] if len(err.args) == 1 else err)
    return Skip("unreadable", err)


def decode_or_skip(data, max_pixels: int | None = None) -> Image.Image | Skip:
    """:func:`decode_rgb` of ``data``, or the reason it is skipped (``decompression_bomb``, ``missing_file`` for a
    path that is not there, ``corrupt_image`` for anything else Pillow raises)."""
    try:
        return decode_rgb(data, max_pixels=max_pixels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return Skip("decompression_bomb", err)
    except FileNotFoundError as err:  # Pillow opens paths itself; its own errors on bytes are never this one
        return read_skip(err)
    except Exception as err:  # noqa: BLE001 - PIL raises many types for corrupt files; all mean "skip this one"
        return Skip("corrupt_image", err)
