"""Digit domains made offline from data that ships in packages: MNIST-M-style, SYN-style, synthetic shifts.

A leaf module (numpy and PIL only; `jaxprov.datasets` registers these as named domains). Every
image is RGB float32 in [0, 1], 28x28, drawn from a numpy `Generator` the caller seeds, so a domain
is the same on every machine.

  mnistm   Ganin et al.'s MNIST-M construction ("Unsupervised Domain Adaptation by
           Backpropagation", 2015): |photo patch - digit| per channel, with patches cut from the
           colour photographs bundled in scikit-image (BSDS500 is not shipped anywhere) at random
           scales and positions.
  syn      a SYN-style domain (Ganin & Lempitsky's synthetic digits): digits rendered with the fonts
           bundled in matplotlib (DejaVu, STIX, Computer Modern), random size, position, small
           rotation, colours of guaranteed contrast, gradient backgrounds, neighbouring digits at
           the sides as in house-number crops, blur and noise.
  shift    documented synthetic shifts of grey digits: "invert" (1 - x), "colour" (random
           foreground / background colour per image), "texture" (digits over texture patches,
           max-blended), "noise" (smooth procedural noise backgrounds, no data at all: the
           data-free setting's neighbour domains use it).
"""

from __future__ import annotations

import os

import numpy as np

SIDE = 28
SHIFTS = ("invert", "colour", "texture", "noise")
# Fonts of matplotlib's own data folder that draw all ten digits legibly.
SYN_FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSansMono.ttf",
             "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
             "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "cmr10.ttf", "cmss10.ttf",
             "cmtt10.ttf", "cmb10.ttf")


def mnistm(digits: np.ndarray, photos: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """MNIST-M: |patch - digit| for each grey digit [n, 28, 28, 1] and a random patch of `photos`.

    Args:
      digits: grey digits in [0, 1], [n, 28, 28, 1].
      photos: RGB photographs in [0, 1], each [H, W, 3] with H, W >= 28 * 4.
      rng: draws the photo, scale (1/4, 1/2 or 1: coarse to fine texture) and position per digit.
    """
    pyramid = [[photo[::s, ::s] for s in (4, 2, 1)] for photo in photos]
    out = np.empty((len(digits), SIDE, SIDE, 3), np.float32)
    which = rng.integers(0, len(photos), len(digits))
    scale = rng.integers(0, 3, len(digits))
    for i, (p, s) in enumerate(zip(which, scale)):
        img = pyramid[p][s]
        top = rng.integers(0, img.shape[0] - SIDE + 1)
        left = rng.integers(0, img.shape[1] - SIDE + 1)
        out[i] = np.abs(img[top:top + SIDE, left:left + SIDE] - digits[i])
    return out


def syn(labels: np.ndarray, font_dir: str | os.PathLike, rng: np.random.Generator) -> np.ndarray:
    """SYN-style digits: one rendered image [28, 28, 3] per label, fonts read from `font_dir`."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    fonts = {}
    out = np.empty((len(labels), SIDE, SIDE, 3), np.float32)
    big = 2 * SIDE
    for i, label in enumerate(labels):
        name, size = SYN_FONTS[rng.integers(len(SYN_FONTS))], int(rng.integers(15, 25))
        font = fonts.get((name, size)) or fonts.setdefault(
            (name, size), ImageFont.truetype(os.path.join(font_dir, name), size))
        bg, fg = _contrasting_colours(rng)
        canvas = Image.fromarray(_gradient(bg, rng, big))
        draw = ImageDraw.Draw(canvas)
        cx, cy = big / 2 + rng.uniform(-3, 3), big / 2 + rng.uniform(-3, 3)
        colour = tuple(int(255 * c) for c in fg)
        draw.text((cx, cy), str(int(label)), fill=colour, font=font, anchor="mm")
        width = font.getbbox("0", anchor="mm")[2] * 2 + rng.uniform(1, 4)
        for side in (-1, 1):  # neighbouring digits of a house number, cut by the crop
            if rng.random() < 0.5:
                draw.text((cx + side * width, cy), str(int(rng.integers(10))), fill=colour, font=font, anchor="mm")
        canvas = canvas.rotate(rng.uniform(-12, 12), resample=Image.BILINEAR, center=(cx, cy))
        crop = canvas.crop((big // 4, big // 4, big // 4 + SIDE, big // 4 + SIDE))
        crop = crop.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.0)))
        image = np.asarray(crop, np.float32) / 255.0 + rng.normal(0.0, rng.uniform(0.0, 0.05), (SIDE, SIDE, 3))
        out[i] = np.clip(image, 0.0, 1.0)
    return out


def shift(digits: np.ndarray, kind: str, rng: np.random.Generator, textures: list[np.ndarray] | None = None
          ) -> np.ndarray:
    """A synthetic shift of grey (or RGB) digits in [0, 1] [n, 28, 28, c]: RGB [n, 28, 28, 3] in [0, 1].

    "texture" needs `textures` (grey images [H, W] in [0, 1]); the other kinds need no data.
    """
    x = np.repeat(digits, 3, axis=3) if digits.shape[3] == 1 else digits
    n = len(x)
    if kind == "invert":
        return (1.0 - x).astype(np.float32)
    if kind == "colour":
        pairs = [_contrasting_colours(rng) for _ in range(n)]
        bg = np.asarray([b for b, _ in pairs], np.float32)[:, None, None, :]
        fg = np.asarray([f for _, f in pairs], np.float32)[:, None, None, :]
        return (x * fg + (1.0 - x) * bg).astype(np.float32)
    if kind == "texture":
        if not textures:
            raise ValueError("the texture shift needs texture images")
        back = np.empty_like(x)
        for i in range(n):
            t = textures[rng.integers(len(textures))]
            top, left = rng.integers(0, t.shape[0] - SIDE + 1), rng.integers(0, t.shape[1] - SIDE + 1)
            back[i] = t[top:top + SIDE, left:left + SIDE, None] * rng.uniform(0.3, 0.8, 3)
        return np.maximum(x, back).astype(np.float32)
    if kind == "noise":
        return np.abs(smooth_noise(n, rng) - x).astype(np.float32)
    raise ValueError(f"unknown shift {kind!r}; use one of {', '.join(SHIFTS)}")


def smooth_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Procedural colour backgrounds [n, 28, 28, 3] in [0, 1]: random 4x4 or 7x7 grids upsampled, plus fine
    noise (texture without any image data)."""
    out = np.empty((n, SIDE, SIDE, 3), np.float32)
    for i in range(n):
        cells = (4, 7)[rng.integers(2)]
        grid = rng.uniform(0.0, 1.0, (cells, cells, 3))
        coarse = np.repeat(np.repeat(grid, SIDE // cells, axis=0), SIDE // cells, axis=1)
        out[i] = np.clip(coarse + rng.normal(0.0, 0.1, coarse.shape), 0.0, 1.0)
    return out


def _contrasting_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(background, foreground) RGB in [0, 1] whose luminances differ by at least 0.3."""
    luma = np.asarray([0.299, 0.587, 0.114])
    while True:
        bg, fg = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
        if abs(float(luma @ (bg - fg))) >= 0.3:
            return bg, fg


def _gradient(colour: np.ndarray, rng: np.random.Generator, side: int) -> np.ndarray:
    """A uint8 [side, side, 3] background: `colour` plus a random linear gradient of up to +-0.15."""
    ramp = np.linspace(-1.0, 1.0, side)
    angle = rng.uniform(0, 2 * np.pi)
    field = np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None]
    image = colour[None, None, :] + rng.uniform(0.0, 0.15) * field[..., None]
    return (255 * np.clip(image, 0.0, 1.0)).astype(np.uint8)
