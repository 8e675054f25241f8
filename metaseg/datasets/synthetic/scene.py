"""Composing one image: textured background, the target object and distractor objects.

Objects are rendered in their bounding window only (a vectorised inside-test and texture on
the window's pixel centres), then painted back to front. The mask is the target's *visible*
pixels: distractors painted in front of it cut it, but one that would bring the hidden part
of the target above ``MAX_OCCLUDED`` is moved behind it instead, so the target stays
recognisable. Distractors are placed so that most of each stays visible.
"""

from __future__ import annotations

import dataclasses
from typing import List, Sequence, Tuple

import numpy as np

from metaseg.datasets.synthetic import appearance
from metaseg.datasets.synthetic.catalog import Identity

TARGET_AREA = (0.10, 0.40)  # fraction of the image the whole target covers
DISTRACTOR_AREA = (0.04, 0.18)  # sometimes as large as the target: size is no cue
MAX_OCCLUDED = 0.3  # largest share of the target that distractors may hide
FRONT_PROBABILITY = 0.35  # chance a distractor is painted over the target
MIN_CLEAR = 0.4  # share of a distractor's area that must be in the image and off the target


@dataclasses.dataclass(frozen=True)
class Layer:
    """One painted object: its window, shape inside the window and colours.

    window: (y0, y1, x0, x1) pixel bounds; mask: bool [y1-y0, x1-x0]; rgb: float32
    [y1-y0, x1-x0, 3] in about [0, 255] (only meaningful where mask is True).
    """

    window: Tuple[int, int, int, int]
    mask: np.ndarray
    rgb: np.ndarray

    def full_mask(self, size: int) -> np.ndarray:
        """bool [size, size]: the object's pixels on the whole image."""
        out = np.zeros((size, size), dtype=bool)
        y0, y1, x0, x1 = self.window
        out[y0:y1, x0:x1] = self.mask
        return out


@dataclasses.dataclass(frozen=True)
class Scene:
    """A rendered example. image: uint8 [S, S, 3]; mask: uint8 [S, S] in {0, 255} (visible
    target); distractors: bool [S, S], visible pixels of distractor objects (for tests)."""

    image: np.ndarray
    mask: np.ndarray
    distractors: np.ndarray


def _object_frame(window, centre, radius, angle, aspect, mirror):
    """Pixel centres of a window mapped into object coordinates: two float32 arrays."""
    y0, y1, x0, x1 = window
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - centre[0])[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - centre[1])[None, :]
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    # Stretching u by sqrt(aspect) and v by its inverse keeps the area fixed.
    stretch = np.float32(np.sqrt(aspect))
    u = (dx * cos + dy * sin) / (radius * stretch) * mirror
    v = (dy * cos - dx * sin) * stretch / radius
    return u, v


def _pose(ident: Identity, size: int, area_fraction: float, whole: bool,
          rng: np.random.Generator):
    """Draw position, scale, rotation, aspect and mirroring; return (window, u, v, radius)."""
    aspect = ident.aspect * rng.uniform(0.85, 1.15)
    stretch = max(np.sqrt(aspect), 1 / np.sqrt(aspect))
    radius = np.sqrt(area_fraction * size * size / ident.area)
    # Cap the scale so the bounding circle of the whole object fits in the image.
    radius = np.float32(min(radius, 0.49 * size / (ident.reach * stretch)))
    reach = radius * ident.reach * stretch
    low, high = (reach, size - reach) if whole else (0.0, float(size))
    centre = rng.uniform(low, max(low, high), size=2)
    window = (max(0, int(centre[0] - reach)), min(size, int(np.ceil(centre[0] + reach))),
              max(0, int(centre[1] - reach)), min(size, int(np.ceil(centre[1] + reach))))
    mirror = np.float32(rng.choice([-1.0, 1.0]))
    u, v = _object_frame(window, centre, radius, rng.uniform(0, 2 * np.pi), aspect, mirror)
    return window, u, v, radius


def render_object(ident: Identity, size: int, area_fraction: float, whole: bool,
                  rng: np.random.Generator) -> Layer:
    """Draw a pose for the class and render it.

    area_fraction: wanted share of the image covered by the whole object (thin shapes may
    get less: the object must fit). whole: keep the object inside the image (targets)
    rather than letting it run off an edge (distractors).
    """
    window, u, v, radius = _pose(ident, size, area_fraction, whole, rng)
    mask = ident.inside(u, v, ident.shape_params)
    colours = appearance.jitter_palette(ident.palette, rng)
    # The texture is softened over about one pixel: 1 / radius in object units.
    mix = ident.texture(u, v, ident.texture_params, rng.random(2), 1.0 / radius)[..., None]
    rgb = colours[0] + (colours[1] - colours[0]) * mix.astype(np.float32)
    # Mild directional shading so objects look solid, not like flat stickers.
    slope = rng.uniform(-1, 1, size=2)
    light = 1.0 + rng.uniform(0.05, 0.2) * np.clip(u * slope[0] + v * slope[1], -1, 1)
    return Layer(window, mask, rgb * light[..., None].astype(np.float32))


def _place_distractor(ident: Identity, size: int, target: np.ndarray,
                      rng: np.random.Generator, attempts: int = 4) -> Layer:
    """A distractor pose that leaves it visible: at least ``MIN_CLEAR`` of its intended area
    must lie inside the image and off the target (``target``: bool [size, size])."""
    for _ in range(attempts):
        area = rng.uniform(*DISTRACTOR_AREA)
        layer = render_object(ident, size, area, False, rng)
        y0, y1, x0, x1 = layer.window
        clear = np.count_nonzero(layer.mask & ~target[y0:y1, x0:x1])
        if clear >= MIN_CLEAR * area * size * size:
            break
    return layer


def _paint(canvas: np.ndarray, layer: Layer) -> None:
    y0, y1, x0, x1 = layer.window
    np.copyto(canvas[y0:y1, x0:x1], layer.rgb, where=layer.mask[..., None])


def _arrange(target: Layer, others: Sequence[Layer], size: int,
             rng: np.random.Generator) -> Tuple[List[Layer], List[Layer], np.ndarray]:
    """Split distractors into behind/in front of the target; return the visible target."""
    full = target.full_mask(size)
    visible, behind, front = full.copy(), [], []
    for layer in others:
        if rng.random() < FRONT_PROBABILITY:
            cut = visible & ~layer.full_mask(size)
            if cut.sum() >= (1 - MAX_OCCLUDED) * full.sum():
                visible = cut
                front.append(layer)
                continue
        behind.append(layer)
    return behind, front, visible


def _finish(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Global exposure/contrast jitter and sensor noise; float32 -> uint8 [S, S, 3].

    Works in place on ``canvas`` (a full image per call makes this the hottest step).
    """
    contrast, offset = rng.uniform(0.85, 1.15), rng.uniform(-12, 12)
    canvas *= np.float32(contrast)
    canvas += np.float32(128.0 * (1 - contrast) + offset)
    noise = rng.standard_normal(canvas.shape, np.float32)
    noise *= np.float32(rng.uniform(1.5, 5.0))
    canvas += noise
    np.rint(canvas, out=canvas)
    np.clip(canvas, 0, 255, out=canvas)
    return canvas.astype(np.uint8)


def render_scene(target: Identity, distractors: Sequence[Identity], size: int,
                 rng: np.random.Generator) -> Scene:
    """One example of ``target`` among ``distractors`` (identities of other classes)."""
    canvas = appearance.background(rng, size)
    target_layer = render_object(target, size, rng.uniform(*TARGET_AREA), True, rng)
    others = [_place_distractor(d, size, target_layer.full_mask(size), rng) for d in distractors]
    behind, front, visible = _arrange(target_layer, others, size, rng)
    for layer in behind + [target_layer] + front:
        _paint(canvas, layer)
    distractor_pixels = np.zeros((size, size), dtype=bool)
    for layer in others:
        distractor_pixels |= layer.full_mask(size)
    return Scene(image=_finish(canvas, rng), mask=np.where(visible, 255, 0).astype(np.uint8),
                 distractors=distractor_pixels & ~visible)
