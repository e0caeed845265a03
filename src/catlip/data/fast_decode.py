"""Cheaper training images with the reference crop: ``data.decode=fast`` (CPU) and ``data.decode=gpu``.

The reference path (``data.decode=reference``) decodes every image in full (:func:`catlip.data.images.decode_rgb`),
then runs torchvision's RandomResizedCrop + RandomHorizontalFlip (+ RandAugment) on the PIL image and hands a
normalised float tensor to the main process. The fast path makes the **same draws from the same seeded torch RNG
in the same order** and so the same crop box and flip, and only does less work to get the pixels:

1. read the JPEG header (size, mode), draw the box with ``RandomResizedCrop.get_params`` on that full size and
   the flip with RandomHorizontalFlip's ``torch.rand(1)``;
2. decode with Pillow's ``draft`` at the largest DCT scale 1/s (s = 8, 4, 2) that leaves the box at least the
   output size in both directions: libjpeg then reconstructs each 8x8 block at 8/s x 8/s pixels, far less work
   than a full decode. Pillow's ``resize(box=...)`` keeps the box's fractional position on the reduced image;
3. at scale 1 the box is an integer crop, resized by torch's antialiased bilinear uint8 kernel (the filter of
   Pillow's BILINEAR resize, about twice as fast on the CPU; outputs differ by at most 1 level);
4. flip, RandAugment on the PIL image as the reference does, and a **uint8** tensor: the float conversion and the
   normalisation happen once per batch on the training device (``catlip.data.transforms.normalize_uint8``).

Everything else goes through the reference path, re-seeded so that it draws what the reference would: non-JPEG
images (PNG, WebP, ...), CMYK / YCCK JPEGs, already decoded images (the synthetic source), ``data.augment=none``,
and any image the fast decode fails on. A corrupt image therefore reaches the reference decoder and is skipped and
counted exactly as with ``data.decode=reference``. Progressive JPEGs are decoded like baseline ones (libjpeg
scales both); a header whose size the decoded image does not match is handed to the reference path.

GPU decoding (``data.decode=gpu``): workers read only the header and draw the box and flip as above; baseline
JPEGs that end with an EOI marker travel as bytes and the main process decodes them in one
``torchvision.io.decode_jpeg(..., device="cuda")`` call per batch (nvJPEG), then crops, resizes and flips on the
GPU. Other images, and any the GPU fails on, take the CPU path. ``data.augment=randaugment`` and ``none`` decode on
the CPU. Without CUDA the loader says so in one line and uses the CPU fast path.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from catlip.data.images import open_image
from catlip.data.transforms import train_ops

DCT_SCALES = (8, 4, 2)  # libjpeg's reduced-size decodes that Pillow's draft() asks for (besides full size)
EOI = b"\xff\xd9"  # JPEG end-of-image marker


def dct_scale(box_h: int, box_w: int, out: int) -> int:
    """The largest s in 8, 4, 2 with box_h / s >= out and box_w / s >= out; 1 when none is."""
    for s in DCT_SCALES:
        if box_h >= s * out and box_w >= s * out:
            return s
    return 1


def reduced_size(size: tuple[int, int], s: int) -> tuple[int, int]:
    """The size libjpeg decodes a (w, h) JPEG to at scale 1/s (partial blocks round up)."""
    return (size[0] + s - 1) // s, (size[1] + s - 1) // s


def pil_to_uint8(img: Image.Image) -> torch.Tensor:
    """(3, H, W) uint8 tensor of an RGB PIL image (channels-last memory, as Pillow lays it out)."""
    with warnings.catch_warnings():
        # Pillow's array is read-only; the tensor is only ever read (resized, stacked), never written
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.asarray(img)).permute(2, 0, 1)


def resize_uint8(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, h, w) uint8 → (3, size, size) uint8 with the antialiased bilinear filter of Pillow's BILINEAR."""
    out = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out[0].contiguous()


@dataclass
class Crop:
    """A sample's RandomResizedCrop box on the full-size image (top, left, height, width) and its flip."""

    top: int
    left: int
    height: int
    width: int
    flip: bool


class FastTrainTransform:
    """``data.decode=fast``: the reference path's augmentation with uint8 output, and a fast path for JPEG bytes.

    ``fast(data, max_pixels)`` (encoded bytes → uint8 (3, size, size) or None) and ``__call__(pil_image)`` (the
    reference transform on a decoded image, as uint8) must each run under the sample's seeded torch RNG, as the
    reference transform does. The caller decodes with the reference decoder whenever ``fast`` returns None.
    """

    def __init__(self, kind: str, size: int, scale_min: float):
        self.kind, self.size = kind, size
        self.ops = train_ops(kind, size, scale_min)  # the reference path's PIL operations, in its order
        self.rrc = self.ops[0] if kind != "none" else None
        self.after_flip = self.ops[2:]  # RandAugment, run on the PIL image as the reference does
        self.reference_uint8 = T.Compose([*self.ops, pil_to_uint8])

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.reference_uint8(img)

    def draw(self, img: Image.Image) -> Crop:
        """The reference draws: RandomResizedCrop's box on the image's (header) size, then the flip."""
        top, left, height, width = T.RandomResizedCrop.get_params(img, self.rrc.scale, self.rrc.ratio)
        return Crop(top, left, height, width, bool(torch.rand(1) < self.ops[1].p))

    def fast(self, data, max_pixels: int) -> torch.Tensor | None:
        """The fast path, or None (not a JPEG for it, or a failed decode) to leave the sample to the reference."""
        if self.rrc is None:
            return None
        resized = self._decode_crop(data, max_pixels)
        if resized is None:
            return None
        out, flip = resized
        if flip:
            out = out.flip(-1)
        if self.after_flip:
            pil = Image.fromarray(out.permute(1, 2, 0).numpy())
            for op in self.after_flip:
                pil = op(pil)
            out = pil_to_uint8(pil)
        return out.contiguous()

    def _decode_crop(self, data, max_pixels: int):
        """(uint8 crop at the output size, flip) of an 8-bit RGB or grayscale JPEG; None otherwise or on error."""
        try:
            with open_image(data, max_pixels=max_pixels) as img:  # closing it frees the pixels: work inside
                if img.format != "JPEG" or img.mode not in ("RGB", "L") or len(img.tile) != 1:
                    return None
                full = img.size
                crop = self.draw(img)
                s = dct_scale(crop.height, crop.width, self.size)
                if s > 1:
                    img.draft(img.mode, (full[0] // s, full[1] // s))
                img.load()
                if img.size != reduced_size(full, s):  # draft chose another scale, or the header lied
                    return None
                return self._crop_resize(img if img.mode == "RGB" else img.convert("RGB"), crop, s), crop.flip
        except Exception:  # noqa: BLE001 - whatever failed, the reference decoder decides (and counts) it
            return None

    def _crop_resize(self, img: Image.Image, crop: Crop, s: int) -> torch.Tensor:
        """The box of ``img`` (decoded at 1/s) at the output size; fractional box edges kept at s > 1."""
        if s == 1:
            box = img.crop((crop.left, crop.top, crop.left + crop.width, crop.top + crop.height))
            return resize_uint8(pil_to_uint8(box), self.size)
        box = (crop.left / s, crop.top / s, (crop.left + crop.width) / s, (crop.top + crop.height) / s)
        return pil_to_uint8(img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box))


@dataclass
class GpuJob:
    """A JPEG for the main process to decode on the device: its bytes, header size (w, h) and crop."""

    data: bytes
    size: tuple[int, int]
    crop: Crop
    seed: int  # the sample's seed: a JPEG the device fails on is redone on the CPU with the same draws
    index: int = -1  # the sample's index in the source (for skip messages)


def gpu_job(data, transform: FastTrainTransform, max_pixels: int, seed: int) -> GpuJob | None:
    """In a worker, under the sample's seeded RNG: the job of a baseline JPEG the device can take, else None.

    Nothing is drawn unless a job is returned, so the CPU path that takes a None starts from the same RNG state.
    A file that does not end with the EOI marker (a truncated download, say) stays with the CPU path, whose
    reference decoder skips it as before; nvJPEG might have decoded what it had.
    """
    if transform.rrc is None or transform.after_flip or bytes(data[-2:]) != EOI:
        return None
    try:
        with open_image(data, max_pixels=max_pixels) as img:
            if (img.format != "JPEG" or img.mode not in ("RGB", "L") or len(img.tile) != 1
                    or img.info.get("progressive") or img.info.get("progression")):
                return None
            return GpuJob(bytes(data), img.size, transform.draw(img), seed)
    except Exception:  # noqa: BLE001 - the CPU path decides
        return None


def stack_images(images: list, size: int) -> tuple[torch.Tensor, list[tuple[int, GpuJob]]]:
    """Batch of a worker's images; GPU jobs get a blank row now and their pixels in the main process."""
    jobs = [(row, im) for row, im in enumerate(images) if isinstance(im, GpuJob)]
    if not jobs:
        return torch.stack(images), []
    blank = torch.zeros(3, size, size, dtype=torch.uint8)
    return torch.stack([blank if isinstance(im, GpuJob) else im for im in images]), jobs


def decode_jobs(images: torch.Tensor, jobs: list[tuple[int, GpuJob]], size: int) -> list[int]:
    """Decode the jobs' JPEGs on ``images.device`` in one call, crop, resize and flip them into their rows.

    Returns the rows that could not be done there (decoder error, or a size other than the header's).
    """
    decoded = _decode_all([torch.frombuffer(bytearray(job.data), dtype=torch.uint8) for _, job in jobs],
                          images.device)
    failed = []
    for (row, job), img in zip(jobs, decoded):
        if img is None or tuple(img.shape) != (3, job.size[1], job.size[0]):
            failed.append(row)
            continue
        images[row] = _crop_resize_tensor(img, job.crop, size)
    return failed


def _decode_all(datas: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """torchvision's batched decode_jpeg (nvJPEG on CUDA); one by one when the batch fails, None where it fails."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision 0.29 deprecates its decoders in favour of TorchCodec
        try:
            return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))
        except Exception:  # noqa: BLE001 - find the one(s) that failed
            pass
        out = []
        for data in datas:
            try:
                out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except Exception:  # noqa: BLE001
                out.append(None)
        return out


def _crop_resize_tensor(img: torch.Tensor, crop: Crop, size: int) -> torch.Tensor:
    """The crop of a decoded (3, H, W) uint8 image at (size, size), flipped if drawn so; float on the device."""
    box = img[:, crop.top:crop.top + crop.height, crop.left:crop.left + crop.width][None].float()
    out = F.interpolate(box, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    out = out.round_().clamp_(0, 255).to(torch.uint8)
    return out.flip(-1) if crop.flip else out
