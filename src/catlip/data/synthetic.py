"""Embedded synthetic image–caption set: the demo's default data, generated in code (no download).

Each sample is a scene: a main object (its kind is the probing class) of some colour and size, sometimes a second
object, on a background. Captions name these with ordinary WordNet nouns ("a red ball next to a small blue car on
the grass"), so the CatLIP extractor finds real synsets. Everything is a pure function of (seed, index).

``synthetic_dense`` gives the same scene with dense labels (for segmentation and detection tests and
``--train synthetic`` smoke runs): a per-pixel semantic mask (``SEG_CLASSES``: the objects, then the
backgrounds; mask value = class index + 1, so 0 never occurs) and one tight box, label and instance mask per
visible object (label = index into ``OBJECTS``). The image and captions are exactly ``synthetic_sample``'s.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

OBJECTS = ("ball", "box", "car", "tree", "house", "star", "flower", "boat", "fish", "umbrella")
COLOURS = {
    "red": (220, 30, 30), "blue": (30, 60, 220), "yellow": (240, 220, 30), "orange": (245, 140, 20),
    "purple": (140, 40, 180), "white": (245, 245, 245), "black": (20, 20, 20), "pink": (250, 140, 190),
}
BACKGROUNDS = {  # noun phrase, base colour, texture colour
    "grass": ("on the grass", (70, 150, 60), (50, 120, 40)),
    "sand": ("on the sand", (220, 200, 150), (200, 180, 130)),
    "snow": ("in the snow", (235, 240, 250), (210, 220, 235)),
    "road": ("on the road", (110, 110, 115), (90, 90, 95)),
    "water": ("on the water", (60, 120, 200), (40, 100, 180)),
    "sky": ("in the sky", (150, 200, 245), (235, 240, 250)),
}
RELATIONS = ("next to", "near", "beside", "and")
SEG_CLASSES = OBJECTS + tuple(BACKGROUNDS)  # semantic classes of synthetic_dense; mask value = index + 1


@dataclass(frozen=True)
class SyntheticSample:
    image: Image.Image
    captions: list[str]
    label: int  # index into OBJECTS of the main object
    background: str = ""  # key of BACKGROUNDS
    objects: tuple = ()  # (kind, cx, cy, r) in drawing order (the distractor first), for synthetic_dense


@dataclass(frozen=True)
class SyntheticDense:
    image: Image.Image
    mask: Image.Image  # mode "L": SEG_CLASSES index + 1 per pixel
    boxes: list[tuple[int, int, int, int]]  # x0, y0, x1, y1 (exclusive) of each visible object, in pixels
    labels: list[int]  # index into OBJECTS, one per box
    instance_masks: list[Image.Image]  # mode "1", the visible pixels of each object


def _rng(seed: int, index: int) -> random.Random:
    # A string seed hashes deterministically (sha512 in CPython), unlike hash() of a tuple of ints across runs.
    return random.Random(f"catlip-synthetic:{seed}:{index}")


def _draw_object(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, fill, rng) -> None:
    edge = (0, 0, 0) if sum(fill) > 200 else (255, 255, 255)
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "ball":
        draw.ellipse(box, fill=fill, outline=edge)
    elif kind == "box":
        draw.rectangle((cx - r * 0.8, cy - r * 0.8, cx + r * 0.8, cy + r * 0.8), fill=fill, outline=edge)
        draw.line((cx - r * 0.8, cy - r * 0.8, cx + r * 0.8, cy + r * 0.8), fill=edge)
    elif kind == "car":
        draw.rectangle((cx - r, cy - r * 0.2, cx + r, cy + r * 0.4), fill=fill, outline=edge)
        draw.rectangle((cx - r * 0.5, cy - r * 0.6, cx + r * 0.4, cy - r * 0.2), fill=fill, outline=edge)
        for wx in (cx - r * 0.55, cx + r * 0.55):
            draw.ellipse((wx - r * 0.28, cy + r * 0.2, wx + r * 0.28, cy + r * 0.76), fill=(15, 15, 15))
    elif kind == "tree":
        draw.rectangle((cx - r * 0.15, cy + r * 0.3, cx + r * 0.15, cy + r), fill=(100, 60, 20))
        draw.polygon([(cx, cy - r), (cx - r * 0.7, cy + r * 0.35), (cx + r * 0.7, cy + r * 0.35)], fill=fill, outline=edge)
    elif kind == "house":
        draw.rectangle((cx - r * 0.7, cy - r * 0.1, cx + r * 0.7, cy + r), fill=fill, outline=edge)
        draw.polygon([(cx - r * 0.9, cy - r * 0.1), (cx, cy - r), (cx + r * 0.9, cy - r * 0.1)], fill=(150, 40, 30), outline=edge)
        draw.rectangle((cx - r * 0.15, cy + r * 0.4, cx + r * 0.15, cy + r), fill=(60, 40, 20))
    elif kind == "star":
        pts = [(cx + (r if i % 2 == 0 else r * 0.45) * math.sin(i * math.pi / 5),
                cy - (r if i % 2 == 0 else r * 0.45) * math.cos(i * math.pi / 5)) for i in range(10)]
        draw.polygon(pts, fill=fill, outline=edge)
    elif kind == "flower":
        for i in range(6):
            a = i * math.pi / 3
            px, py = cx + r * 0.55 * math.cos(a), cy + r * 0.55 * math.sin(a)
            draw.ellipse((px - r * 0.4, py - r * 0.4, px + r * 0.4, py + r * 0.4), fill=fill, outline=edge)
        draw.ellipse((cx - r * 0.3, cy - r * 0.3, cx + r * 0.3, cy + r * 0.3), fill=(250, 210, 40))
    elif kind == "boat":
        draw.polygon([(cx - r, cy + r * 0.2), (cx + r, cy + r * 0.2), (cx + r * 0.6, cy + r * 0.7),
                      (cx - r * 0.6, cy + r * 0.7)], fill=fill, outline=edge)
        draw.line((cx, cy + r * 0.2, cx, cy - r), fill=(60, 40, 20), width=max(1, int(r * 0.1)))
        draw.polygon([(cx + r * 0.05, cy - r), (cx + r * 0.7, cy + r * 0.1), (cx + r * 0.05, cy + r * 0.1)], fill=(250, 250, 250))
    elif kind == "fish":
        draw.ellipse((cx - r * 0.8, cy - r * 0.45, cx + r * 0.5, cy + r * 0.45), fill=fill, outline=edge)
        draw.polygon([(cx + r * 0.4, cy), (cx + r, cy - r * 0.5), (cx + r, cy + r * 0.5)], fill=fill, outline=edge)
        draw.ellipse((cx - r * 0.55, cy - r * 0.15, cx - r * 0.4, cy), fill=edge)
    elif kind == "umbrella":
        draw.pieslice((cx - r, cy - r * 0.8, cx + r, cy + r * 0.8), 180, 360, fill=fill, outline=edge)
        draw.line((cx, cy, cx, cy + r * 0.8), fill=(60, 40, 20), width=max(1, int(r * 0.12)))
        draw.arc((cx - r * 0.3, cy + r * 0.6, cx, cy + r), 0, 180, fill=(60, 40, 20), width=max(1, int(r * 0.1)))


def _background(size: int, name: str, rng: random.Random) -> Image.Image:
    _, base, texture = BACKGROUNDS[name]
    img = Image.new("RGB", (size, size), base)
    draw = ImageDraw.Draw(img)
    for _ in range(size // 2):  # a little texture so the background is not a constant
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        draw.line((x, y, x + rng.uniform(-3, 3), y + rng.uniform(-3, 3)), fill=texture)
    return img


def _phrase(colour: str, size: str, kind: str) -> str:
    return " ".join(w for w in ("a", size, colour, kind) if w)


def synthetic_sample(index: int, seed: int = 0, image_size: int = 64) -> SyntheticSample:
    """Scene number ``index`` of the set with this ``seed``: image, 3 captions, main-object class."""
    rng = _rng(seed, index)
    label = rng.randrange(len(OBJECTS))
    kind = OBJECTS[label]
    bg = rng.choice(list(BACKGROUNDS))
    colour = rng.choice(list(COLOURS))
    big = rng.random() < 0.5
    # texture has its own stream so captions do not depend on image_size
    img = _background(image_size, bg, random.Random(f"catlip-texture:{seed}:{index}"))
    draw = ImageDraw.Draw(img)
    s = image_size
    r = s * (rng.uniform(0.26, 0.34) if big else rng.uniform(0.16, 0.22))
    second = None
    if rng.random() < 0.5:  # a smaller distractor object in the other half of the image
        k2 = rng.choice([o for o in OBJECTS if o != kind])
        c2 = rng.choice([c for c in COLOURS if c != colour])
        left = rng.random() < 0.5
        cx2 = s * (0.22 if left else 0.78)
        cy2 = s * rng.uniform(0.25, 0.75)
        _draw_object(draw, k2, cx2, cy2, s * 0.13, COLOURS[c2], rng)
        placed = [(k2, cx2, cy2, s * 0.13)]
        cx = s * (0.62 if left else 0.38)
        second = (c2, k2)
    else:
        placed = []
        cx = s * rng.uniform(0.35, 0.65)
    cy = s * rng.uniform(0.38, 0.62)
    _draw_object(draw, kind, cx, cy, r, COLOURS[colour], rng)
    placed.append((kind, cx, cy, r))
    main = _phrase(colour, "big" if big else "small", kind)
    where = BACKGROUNDS[bg][0]
    if second:
        rel = rng.choice(RELATIONS)
        other = _phrase(second[0], "small", second[1])
        captions = [f"{main} {rel} {other} {where}", f"a photo of a {colour} {kind} and a {second[1]} {where}",
                    f"{other} near {main}"]
    else:
        captions = [f"{main} {where}", f"a photo of a {colour} {kind}", f"a {kind} {where.split()[-1]} scene"]
    return SyntheticSample(img, captions, label, bg, tuple(placed))


def _silhouette(kind: str, cx: float, cy: float, r: float, size: int) -> Image.Image:
    """The pixels ``_draw_object`` paints for this object (every part, outline included), as a mode "1" image."""
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    _draw_object(ImageDraw.Draw(layer), kind, cx, cy, r, (128, 128, 128), None)
    return layer.getchannel("A").point(lambda a: 255 if a else 0).convert("1")


def synthetic_dense(index: int, seed: int = 0, image_size: int = 64) -> SyntheticDense:
    """Scene ``index`` with its semantic mask, boxes, labels and instance masks (see the module docstring)."""
    sample = synthetic_sample(index, seed, image_size)
    mask = Image.new("L", (image_size, image_size), SEG_CLASSES.index(sample.background) + 1)
    shapes = [(kind, _silhouette(kind, cx, cy, r, image_size)) for kind, cx, cy, r in sample.objects]
    for kind, shape in shapes:  # later objects are drawn over earlier ones, as in the image
        mask.paste(OBJECTS.index(kind) + 1, mask=shape)
    boxes, labels, instances = [], [], []
    for kind, _ in shapes:
        visible = mask.point(lambda v, k=OBJECTS.index(kind) + 1: 255 if v == k else 0).convert("1")
        box = visible.getbbox()
        if box is None:  # hidden behind the main object
            continue
        boxes.append(box)
        labels.append(OBJECTS.index(kind))
        instances.append(visible)
    return SyntheticDense(sample.image, mask, boxes, labels, instances)


def synthetic_captions(size: int, seed: int = 0):
    """The captions of the first ``size`` scenes, without drawing images (for building a vocabulary)."""
    for i in range(size):
        yield synthetic_sample(i, seed, image_size=8).captions
