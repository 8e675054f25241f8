"""Appearance families (two-colour textures on objects), palettes and backgrounds.

A texture is ``texture(u, v, p, phase) -> t``: float32 in ``[0, 1]`` mixing a class's two
colours, evaluated in the object's own frame so the pattern turns and scales with the object.
``p`` is the class's appearance parameters (float64 ``[8]`` in ``[0, 1)``: frequency, angle,
duty, ...); ``phase`` float64 ``[2]`` in ``[0, 1)`` is redrawn per image so the pattern slides
within the object while its kind stays fixed. Edges of patterns are softened over about one
pixel (``soft``, in pattern units per object unit) so stripes do not alias.

Backgrounds are deliberately different in statistics from objects: smooth multi-scale
low-saturation colour noise with occasional faint blurred bands, never crisp two-colour
patterns.
"""

from __future__ import annotations

import colorsys
import functools
from typing import Callable, Dict

import numpy as np

Texture = Callable[..., np.ndarray]
TAU = 2 * np.pi


def _lerp(t: float, low: float, high: float) -> float:
    return low + (high - low) * float(t)


def _soft_step(x, width):
    """0 below -width/2, 1 above width/2, linear in between (an anti-aliased threshold)."""
    return np.clip(x / max(width, 1e-6) + 0.5, 0.0, 1.0)


def _along(u, v, angle):
    return u * np.cos(angle) + v * np.sin(angle)


def solid(u, v, p, phase, soft):
    # A faint gradient only: the class is recognised by colour and shape alone.
    return 0.15 * np.clip(0.5 + 0.5 * _along(u, v, TAU * phase[0]), 0, 1)


def stripes(u, v, p, phase, soft):
    freq = _lerp(p[0], 1.2, 3.0)  # stripes per object unit
    wave = np.sin(TAU * (freq * _along(u, v, np.pi * p[1]) + phase[0]))
    return _soft_step(wave - _lerp(p[2], -0.4, 0.4), 2 * TAU * freq * soft)


def checkers(u, v, p, phase, soft):
    freq = _lerp(p[0], 1.0, 2.5)
    a, b = _along(u, v, np.pi * p[1]), _along(u, v, np.pi * p[1] + np.pi / 2)
    wave = np.sin(TAU * (freq * a + phase[0])) * np.sin(TAU * (freq * b + phase[1]))
    return _soft_step(wave, 2 * TAU * freq * soft)


def dots(u, v, p, phase, soft):
    freq, radius = _lerp(p[0], 1.5, 3.5), _lerp(p[2], 0.18, 0.36)
    du = np.mod(freq * u + phase[0], 1.0) - 0.5
    dv = np.mod(freq * v + phase[1], 1.0) - 0.5
    return _soft_step(radius - np.hypot(du, dv), 2 * freq * soft)


def gradient(u, v, p, phase, soft):
    return np.clip(0.5 + _lerp(p[0], 0.5, 0.9) * _along(u, v, np.pi * (p[1] + 0.2 * phase[0])),
                   0, 1)


def rings(u, v, p, phase, soft):
    freq = _lerp(p[0], 1.2, 2.8)
    wave = np.sin(TAU * (freq * np.hypot(u, v) + phase[0]))
    return _soft_step(wave - _lerp(p[2], -0.3, 0.3), 2 * TAU * freq * soft)


def grid(u, v, p, phase, soft):
    freq, width = _lerp(p[0], 1.2, 2.5), _lerp(p[2], 0.08, 0.18)
    du = np.abs(np.mod(freq * u + phase[0], 1.0) - 0.5)
    dv = np.abs(np.mod(freq * v + phase[1], 1.0) - 0.5)
    return _soft_step(np.maximum(du, dv) - (0.5 - width), 2 * freq * soft)


def waves(u, v, p, phase, soft):
    freq, bend = _lerp(p[0], 1.2, 2.8), _lerp(p[2], 0.1, 0.25)
    a, b = _along(u, v, np.pi * p[1]), _along(u, v, np.pi * p[1] + np.pi / 2)
    wave = np.sin(TAU * (freq * (a + bend * np.sin(TAU * 1.5 * b)) + phase[0]))
    return _soft_step(wave, 2 * TAU * freq * soft)


def marble(u, v, p, phase, soft):
    # Blotches: the sign of three class-specific plane waves summed (a cheap smooth noise).
    total = 0.0
    for k in range(3):
        angle, freq = np.pi * p[1 + k], _lerp(p[4 + k], 0.8, 1.8)
        total = total + np.sin(TAU * (freq * _along(u, v, angle) + phase[k % 2] + k / 3))
    return _soft_step(total, 4 * TAU * soft)


def sunburst(u, v, p, phase, soft):
    spokes = 3 + int(p[0] * 6)  # 3-8 pairs of rays
    theta = np.arctan2(v, u)
    return _soft_step(np.sin(spokes * theta + TAU * phase[0]), 0.25)


TEXTURES: Dict[str, Texture] = {f.__name__: f for f in (
    checkers, dots, gradient, grid, marble, rings, solid, stripes, sunburst, waves)}
APPEARANCE_FAMILIES = tuple(TEXTURES)  # the order is part of the format: it keys random streams


def class_palette(rng: np.random.Generator) -> np.ndarray:
    """Two distinct, saturated class colours in HSV, float64 [2, 3] in [0, 1]."""
    hue = rng.random()
    second = (hue + rng.uniform(0.15, 0.5) * rng.choice([-1, 1])) % 1.0
    sat = rng.uniform(0.55, 1.0, size=2)
    val = rng.uniform(0.5, 0.95, size=2)
    # Brightness differs between the two colours so patterns survive a grey-ish palette.
    if abs(val[0] - val[1]) < 0.2:
        val[1] = val[0] - 0.3 if val[0] > 0.65 else val[0] + 0.3
    return np.array([[hue, sat[0], val[0]], [second, sat[1], val[1]]])


def jitter_palette(hsv: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-image colour variation within the class's band: float32 RGB [2, 3] in [0, 255]."""
    hue = (hsv[:, 0] + rng.uniform(-0.03, 0.03)) % 1.0
    sat = np.clip(hsv[:, 1] * rng.uniform(0.85, 1.1), 0, 1)
    val = np.clip(hsv[:, 2] * rng.uniform(0.8, 1.15), 0, 1)
    rgb = [colorsys.hsv_to_rgb(h, s, v) for h, s, v in zip(hue, sat, val)]
    return np.asarray(rgb, dtype=np.float32) * 255.0


@functools.lru_cache(maxsize=32)
def _bilinear_taps(size: int, cells: int):
    """For each of ``size`` pixels: the coarse cell to its left (int [size]) and the weight
    of the next one (float32 [size] in [0, 1])."""
    position = (np.arange(size) + 0.5) / size * (cells - 1)
    left = np.minimum(position.astype(np.int64), cells - 2)
    return left, (position - left).astype(np.float32)


def smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """Low-frequency noise, float32 [size, size, channels], roughly in [-1, 1].

    Bilinear upsampling of a ``cells`` x ``cells`` grid, written with gathers rather than
    matrix products: BLAS threads slow tiny products down on a busy machine, and
    elementwise arithmetic gives the same bytes whatever the thread count.
    """
    coarse = rng.uniform(-1, 1, size=(cells, cells, channels)).astype(np.float32)
    left, weight = _bilinear_taps(size, cells)
    w_rows = weight[:, None, None]
    rows = coarse[left] * (1 - w_rows) + coarse[left + 1] * w_rows  # [size, cells, ch]
    w_cols = weight[None, :, None]
    return rows[:, left] * (1 - w_cols) + rows[:, left + 1] * w_cols


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured, object-free background: float32 RGB [size, size, 3] in about [0, 255]."""
    hsv = [(rng.random(), rng.uniform(0.05, 0.45), rng.uniform(0.3, 0.85)) for _ in range(2)]
    colours = np.asarray([colorsys.hsv_to_rgb(*c) for c in hsv], dtype=np.float32) * 255.0
    mix = np.clip(0.5 + 0.7 * smooth_noise(rng, size, int(rng.integers(3, 6)), 1), 0, 1)
    image = colours[0] + (colours[1] - colours[0]) * mix
    image += np.float32(rng.uniform(6, 20)) * smooth_noise(rng, size, int(rng.integers(10, 20)), 3)
    if rng.random() < 0.4:  # faint blurred bands: "pattern" alone must not mean "object"
        axis = np.linspace(0, 1, size, dtype=np.float32)
        angle, freq = TAU * rng.random(), rng.uniform(1, 4)
        phase = np.float32(TAU * freq) * (axis[None, :] * np.float32(np.cos(angle))
                                          + axis[:, None] * np.float32(np.sin(angle)))
        image += np.float32(rng.uniform(5, 18)) * np.sin(phase)[..., None]
    return image
