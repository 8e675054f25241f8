"""Shape families of the synthetic benchmark: vectorised inside-tests on object coordinates.

Every family is a function ``inside(u, v, p) -> bool array``. ``u, v`` are float32 arrays of
any (equal) shape in the object's own frame: the object is centred at the origin, has a
radius of about 1 and is drawn upright; pose (position, scale, rotation, aspect, mirror) is
applied by the caller, which maps pixel centres into this frame. ``p`` is the class's
parameter vector, float64 ``[NUM_PARAMS]`` in ``[0, 1)``: each family reads the entries it
needs and maps them into its own ranges (star depth, arm width, petal count, ...), so two
classes of one family are related but distinct object kinds.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import numpy as np

NUM_PARAMS = 8
Inside = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _lerp(t: float, low: float, high: float) -> float:
    return low + (high - low) * float(t)


def _polar(u, v):
    return np.hypot(u, v), np.arctan2(v, u)


def _box(u, v, x0, x1, y0, y1):
    return (u >= x0) & (u <= x1) & (v >= y0) & (v <= y1)


def _polygon(u, v, sides: int):
    # Regular polygon of circumradius 1: a point is inside when its projection on the
    # normal of the nearest edge is within the apothem cos(pi / sides).
    rho, theta = _polar(u, v)
    sector = 2 * np.pi / sides
    off_normal = np.mod(theta + np.pi / 2, sector) - sector / 2  # a vertex points up
    return rho * np.cos(off_normal) <= np.cos(np.pi / sides)


def _star(u, v, points: int, inner: float):
    rho, theta = _polar(u, v)
    phase = np.mod(theta + np.pi / 2, 2 * np.pi / points) * points / (2 * np.pi)
    tip = np.abs(1.0 - 2.0 * phase)  # 1 at a tip, 0 half-way between two tips
    return rho <= inner + (1.0 - inner) * tip


def ellipse(u, v, p):
    return u * u + v * v <= 1.0


def rectangle(u, v, p):
    return (np.abs(u) <= 1.0) & (np.abs(v) <= _lerp(p[0], 0.45, 0.85))


def triangle(u, v, p):
    return _polygon(u, v, 3)


def pentagon(u, v, p):
    return _polygon(u, v, 5)


def hexagon(u, v, p):
    return _polygon(u, v, 6)


def star4(u, v, p):
    return _star(u, v, 4, _lerp(p[0], 0.3, 0.5))


def star5(u, v, p):
    return _star(u, v, 5, _lerp(p[0], 0.35, 0.55))


def star6(u, v, p):
    return _star(u, v, 6, _lerp(p[0], 0.45, 0.65))


def cross(u, v, p):
    w = _lerp(p[0], 0.2, 0.38)
    return _box(u, v, -w, w, -1, 1) | _box(u, v, -1, 1, -w, w)


def ring(u, v, p):
    rho = np.hypot(u, v)
    return (rho <= 1.0) & (rho >= _lerp(p[0], 0.45, 0.7))


def frame(u, v, p):
    m = np.maximum(np.abs(u), np.abs(v))
    return (m <= 0.9) & (m >= 0.9 * _lerp(p[0], 0.5, 0.72))


def crescent(u, v, p):
    bite = np.hypot(u - _lerp(p[0], 0.35, 0.6), v) >= _lerp(p[1], 0.75, 0.95)
    return (u * u + v * v <= 1.0) & bite


def heart(u, v, p):
    x, y = 1.15 * u, -1.15 * v + 0.15  # the implicit heart curve, tip pointing down
    return (x * x + y * y - 1.0) ** 3 - x * x * y ** 3 <= 0.0


def blob(u, v, p):
    # A radius given by a short Fourier series with class-specific amplitudes and phases.
    rho, theta = _polar(u, v)
    radius = 0.75 + sum(_lerp(p[k], 0.04, 0.16) * np.cos((k + 1) * theta + 6.283 * p[k + 3])
                        for k in (1, 2, 3))
    return rho <= radius


def lshape(u, v, p):
    w = _lerp(p[0], 0.25, 0.4)
    return _box(u, v, -1, -1 + 2 * w, -1, 1) | _box(u, v, -1, 0.8, 1 - 2 * w, 1)


def tshape(u, v, p):
    w = _lerp(p[0], 0.18, 0.32)
    return _box(u, v, -1, 1, -1, -1 + 2 * w) | _box(u, v, -w, w, -1, 1)


def hshape(u, v, p):
    w = _lerp(p[0], 0.18, 0.3)
    bar = _box(u, v, -1, 1, -0.7 * w, 0.7 * w)
    return _box(u, v, -1, -1 + 2 * w, -1, 1) | _box(u, v, 1 - 2 * w, 1, -1, 1) | bar


def arrow(u, v, p):
    shaft = _box(u, v, -1, 0.15, -_lerp(p[0], 0.12, 0.25), _lerp(p[0], 0.12, 0.25))
    head = (u >= 0.15) & (u <= 1.0) & (np.abs(v) <= (1.0 - u) / 0.85 * _lerp(p[1], 0.5, 0.8))
    return shaft | head


def chevron(u, v, p):
    w = _lerp(p[0], 0.18, 0.3)
    return (np.abs(u) <= 1.0) & (np.abs(v - _lerp(p[1], 0.6, 1.0) * np.abs(u) + 0.35) <= w)


def bowtie(u, v, p):
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.12 + _lerp(p[0], 0.55, 0.85) * np.abs(u))


def semicircle(u, v, p):
    return (u * u + v * v <= 1.0) & (v <= _lerp(p[0], 0.0, 0.3))


def pacman(u, v, p):
    rho, theta = _polar(u, v)
    return (rho <= 1.0) & (np.abs(theta) >= _lerp(p[0], 0.3, 0.7))


def flower(u, v, p):
    rho, theta = _polar(u, v)
    petals = 4 + int(p[0] * 4)  # 4-7 petals
    return rho <= 0.35 + 0.65 * np.abs(np.cos(petals * theta / 2))


def gear(u, v, p):
    rho, theta = _polar(u, v)
    teeth = 7 + int(p[0] * 6)  # 7-12 teeth
    outline = np.where(np.cos(teeth * theta) > 0, 1.0, 0.78)
    return (rho <= outline) & (rho >= _lerp(p[1], 0.15, 0.35))


def dumbbell(u, v, p):
    radius = _lerp(p[0], 0.3, 0.42)
    ends = (np.hypot(np.abs(u) - (1 - radius), v) <= radius)
    return ends | _box(u, v, -0.7, 0.7, -_lerp(p[1], 0.08, 0.16), _lerp(p[1], 0.08, 0.16))


SHAPES: Dict[str, Inside] = {f.__name__: f for f in (
    arrow, blob, bowtie, chevron, crescent, cross, dumbbell, ellipse, flower, frame, gear,
    heart, hexagon, hshape, lshape, pacman, pentagon, rectangle, ring, semicircle, star4,
    star5, star6, triangle, tshape)}
SHAPE_FAMILIES = tuple(SHAPES)  # the order is part of the format: it keys random streams
EXTENT = 1.3  # every family lies inside [-EXTENT, EXTENT]^2 in object coordinates


def footprint(family: str, params: np.ndarray, resolution: int = 128) -> Tuple[float, float]:
    """(area, reach) of a class's shape in object units, by sampling a grid.

    area: a unit disk has area pi. reach: the largest distance of a shape pixel from the
    origin, so a pose can scale the object as large as the image allows.
    """
    axis = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution * 2 * EXTENT - EXTENT
    u, v = np.meshgrid(axis, axis)
    inside = SHAPES[family](u, v, params)
    area = float(inside.mean()) * (2 * EXTENT) ** 2
    reach = float(np.hypot(u, v)[inside].max()) + EXTENT / resolution
    return area, reach
