"""Procedural VJ-style images: a training source that needs no download and raises no licence question.

    from sgvis.data import procedural
    img = procedural.render(seed=7, resolution=256)          # uint8 [256, 256, 3]
    img = procedural.render((1234, 5), 256, style="flow")    # a tuple seed: (dataset seed, index)

Every image is a pure function of its seed (numpy only, vectorised; tens of ms at 256^2).  Each image
combines a random scalar field with a random palette:

* ``warp``      domain-warped fractal noise (noise evaluated at coordinates displaced by noise, twice);
* ``flow``      streaks along a noise-driven flow field (line integral convolution of a fine texture);
* ``metaballs`` iso-bands and glow of a sum of inverse-square blobs;
* ``plasma``    sums of plane, radial and swirl waves (demoscene plasma);
* ``gradient``  linear / radial / angular gradients with palette cycling and ring interference;
* ``kaleido``   one of the above seen through a kaleidoscope (polar wedge folding with mirror);
* ``mix``       two of the above, each with its own palette, blended by a noise mask or a blend mode.

and the soft styles, whose colour changes over tens of pixels, never in bands or streaks (what a small
generator trained on a CPU can learn; sgvis's default model is trained on them, docs/training.md):

* ``glow``      soft coloured lights (Gaussian blobs, added and tone-mapped) over a dark gradient;
* ``aurora``    slow domain-warped noise through less than one cycle of a palette, with soft shading;
* ``sweep``     a linear or radial gradient through part of a palette, bent by low-frequency noise;
* ``lava``      metaballs: soft-edged blobs in one palette over a background in another.

``render(style=None)`` picks among the first seven only, so the images of existing seeds never change.

Content does not depend on the output resolution: fields are defined on [-1, 1]^2 and noise comes from
fixed-size periodic textures; resolutions below 256 are rendered at 256 and area-averaged down
(anti-aliased), so a 32^2 image is a small version of the 256^2 one.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["STYLES", "BASE_STYLES", "SOFT_STYLES", "RANDOM_STYLES", "render", "render_float"]

BASE_STYLES = ("warp", "flow", "metaballs", "plasma", "gradient")
SOFT_STYLES = ("glow", "aurora", "sweep", "lava")
STYLES = BASE_STYLES + ("kaleido", "mix") + SOFT_STYLES
# How often render() picks each style when none is asked for.
_STYLE_WEIGHTS = {"warp": 0.2, "flow": 0.14, "metaballs": 0.1, "plasma": 0.1, "gradient": 0.06,
                  "kaleido": 0.2, "mix": 0.2}
RANDOM_STYLES = tuple(_STYLE_WEIGHTS)      # what render(style=None) picks from

_TEX = 256                  # noise texture size (periodic); content is defined relative to it
_MIN_RENDER = 256           # smaller outputs are rendered at this size and area-averaged down
_TWO_PI = np.float32(2 * math.pi)
_freq_cache: dict[int, np.ndarray] = {}


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, (int, np.integer)):
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        return np.random.default_rng(int(seed))
    seq = [int(s) for s in seed]
    if any(s < 0 for s in seq):
        raise ValueError(f"seed values must be >= 0, got {seq}")
    return np.random.default_rng(seq)


# ---------------------------------------------------------------------------------------------
# Noise: periodic 1/f^beta textures (spectral synthesis), sampled bilinearly with wrap-around


def _radial_frequency(n: int) -> np.ndarray:
    if n not in _freq_cache:
        f = np.fft.fftfreq(n) * n
        k = np.sqrt(f[:, None] ** 2 + f[None, : n // 2 + 1] ** 2)
        k[0, 0] = 1.0
        _freq_cache[n] = k.astype(np.float32)
    return _freq_cache[n]


def _texture(rng: np.random.Generator, beta: float, n: int = _TEX) -> np.ndarray:
    """Zero-mean, unit-std periodic noise whose power falls as 1/f^(2 beta): beta 0 white, ~2 smooth
    clouds.  The lowest frequency is one period per texture."""
    white = rng.standard_normal((n, n), dtype=np.float32)
    spec = np.fft.rfft2(white) * _radial_frequency(n) ** np.float32(-beta)
    spec[0, 0] = 0
    tex = np.fft.irfft2(spec, s=(n, n)).astype(np.float32)
    tex /= tex.std() + 1e-8
    return tex


def _sample(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup at (u, v) measured in texture periods (1.0 = one texture width), wrapping."""
    n = tex.shape[0]
    flat = tex.ravel()
    px = u * np.float32(n)
    py = v * np.float32(n)
    x0f = np.floor(px)
    y0f = np.floor(py)
    fx = px - x0f
    fy = py - y0f
    x0 = x0f.astype(np.int32) & (n - 1)
    y0 = y0f.astype(np.int32) & (n - 1)
    x1 = (x0 + 1) & (n - 1)
    r0 = y0 * n
    r1 = ((y0 + 1) & (n - 1)) * n
    a = flat.take(r0 + x0)
    b = flat.take(r0 + x1)
    c = flat.take(r1 + x0)
    d = flat.take(r1 + x1)
    top = a + (b - a) * fx
    bot = c + (d - c) * fx
    return top + (bot - top) * fy


def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0, 1)
    return t * t * (3 - 2 * t)


# ---------------------------------------------------------------------------------------------
# Palettes: map a scalar field (cyclic, period 1) to colour


def _hsv_to_rgb(h, s, v):
    h = np.asarray(h, dtype=np.float64) % 1.0
    i = np.floor(h * 6)
    f = h * 6 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.astype(int) % 6
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    return np.array([table[k] for k in np.atleast_1d(i)], dtype=np.float64).reshape(-1, 3)


class _Palette:
    """Cosine palette (a + b cos 2pi(c t + d)) or a cyclic gradient through random saturated colours."""

    def __init__(self, rng: np.random.Generator):
        self.kind = "cosine" if rng.random() < 0.5 else "stops"
        if self.kind == "cosine":
            self.a = rng.uniform(0.35, 0.65, 3).astype(np.float32)
            self.b = rng.uniform(0.3, 0.55, 3).astype(np.float32)
            self.c = rng.choice([0.5, 1.0, 1.0, 1.0, 2.0], 3).astype(np.float32) * np.float32(rng.uniform(0.8, 1.2))
            self.c = np.round(self.c).clip(1, None).astype(np.float32)   # keep the palette periodic in t
            self.d = rng.uniform(0, 1, 3).astype(np.float32)
        else:
            k = int(rng.integers(3, 7))
            base = rng.random()
            hues = base + np.sort(rng.uniform(0, 1, k)) * rng.choice([0.35, 0.6, 1.0])
            sats = rng.uniform(0.55, 1.0, k)
            vals = rng.uniform(0.55, 1.0, k)
            if rng.random() < 0.6:                      # a dark stop gives depth
                j = int(rng.integers(k))
                vals[j] = rng.uniform(0.0, 0.2)
            if rng.random() < 0.3:                      # and a near-white one some sparkle
                j = int(rng.integers(k))
                sats[j] = rng.uniform(0.0, 0.25)
                vals[j] = 1.0
            self.stops = _hsv_to_rgb(hues, sats, vals).astype(np.float32)          # [k, 3]
            self.pos = np.sort(rng.uniform(0, 1, k)).astype(np.float32)
            self.pos[0] = 0.0

    def __call__(self, t: np.ndarray) -> np.ndarray:
        t = (t % 1.0).astype(np.float32)
        if self.kind == "cosine":
            return self.a + self.b * np.cos(_TWO_PI * (self.c * t[..., None] + self.d))
        # Cyclic piecewise-linear interpolation through the stops (the last wraps to the first).
        pos = np.concatenate([self.pos, [1.0]]).astype(np.float32)
        stops = np.concatenate([self.stops, self.stops[:1]], axis=0)
        idx = np.clip(np.searchsorted(pos, t, side="right") - 1, 0, len(self.pos) - 1)
        lo, hi = pos[idx], pos[idx + 1]
        f = ((t - lo) / np.maximum(hi - lo, 1e-6))[..., None]
        f = f * f * (3 - 2 * f)                         # smooth transitions between stops
        return stops[idx] + (stops[idx + 1] - stops[idx]) * f


# ---------------------------------------------------------------------------------------------
# Fields: (rng, x, y) -> (t: palette coordinate, shade: brightness in ~[0, 1])


def _field_warp(rng, x, y):
    s = rng.uniform(0.2, 0.6)
    t1, t2, t3 = (_texture(rng, rng.uniform(1.8, 2.6)) for _ in range(3))
    a = rng.uniform(0.1, 0.3)
    b = rng.uniform(0.1, 0.35)
    o = rng.uniform(0, 1, 8)
    u, v = x * s + o[6], y * s + o[7]
    q1 = _sample(t1, u + o[0], v + o[1])
    q2 = _sample(t1, u + o[2], v + o[3])
    r1 = _sample(t2, u + a * q1, v + a * q2)
    r2 = _sample(t2, u + a * q1 + o[4], v + a * q2 + o[5])
    f = _sample(t3, u + b * r1, v + b * r2)
    t = f * rng.uniform(0.15, 0.45) + np.sqrt(q1 * q1 + q2 * q2) * rng.uniform(0.05, 0.3) + rng.random()
    shade = np.clip(0.55 + 0.3 * r1 + 0.15 * f, 0, 1) if rng.random() < 0.7 else np.ones_like(f)
    return t, shade


def _field_flow(rng, x, y):
    s = rng.uniform(0.2, 0.6)
    angle_tex = _texture(rng, rng.uniform(1.8, 2.5))
    streak_tex = _texture(rng, rng.uniform(0.4, 1.1))
    swirl = rng.uniform(0.6, 2.5)
    step = np.float32(rng.uniform(0.008, 0.02))
    n_steps = 8
    fine = rng.uniform(0.5, 1.2)                    # streak texture periods per unit length
    ox, oy = rng.uniform(0, 1, 2)
    x, y = x + ox, y + oy
    acc = np.zeros_like(x)
    for direction in (1.0, -1.0):
        u, v = x.copy(), y.copy()
        for i in range(n_steps):
            theta = _sample(angle_tex, u * s, v * s) * swirl
            u = u + direction * step * np.cos(theta)
            v = v + direction * step * np.sin(theta)
            acc += _sample(streak_tex, u * fine, v * fine) * np.float32(1 - i / n_steps)
    acc /= np.float32(n_steps)
    theta0 = _sample(angle_tex, x * s, y * s) * swirl
    t = theta0 / _TWO_PI * rng.uniform(0.3, 1.0) + acc * rng.uniform(0.05, 0.2) + rng.random()
    shade = np.clip(0.6 + 0.45 * acc, 0, 1)
    return t, shade


def _field_metaballs(rng, x, y):
    k = int(rng.integers(3, 10))
    cx = rng.uniform(-0.9, 0.9, k).astype(np.float32)
    cy = rng.uniform(-0.9, 0.9, k).astype(np.float32)
    r = rng.uniform(0.12, 0.4, k).astype(np.float32)
    sx = rng.uniform(0.7, 1.4, k).astype(np.float32)        # slightly elliptic blobs
    f = np.zeros_like(x)
    for i in range(k):
        d2 = ((x - cx[i]) * sx[i]) ** 2 + ((y - cy[i]) / sx[i]) ** 2
        f += r[i] * r[i] / (d2 + 1e-3)
    level = rng.uniform(0.8, 1.6)
    bands = rng.uniform(0.3, 1.2)
    t = np.log1p(f) * bands + rng.random()
    glow = _smoothstep(level * 0.5, level * 1.5, f)
    shade = 0.25 + 0.75 * glow if rng.random() < 0.6 else np.clip(0.45 + 0.55 * np.tanh(f), 0, 1)
    return t, shade


def _field_plasma(rng, x, y):
    n = int(rng.integers(3, 7))
    acc = np.zeros_like(x)
    for _ in range(n):
        kind = rng.integers(3)
        freq = rng.uniform(2.0, 9.0)
        phase = rng.uniform(0, 2 * math.pi)
        if kind == 0:
            a = rng.uniform(0, 2 * math.pi)
            acc += np.sin(freq * (x * math.cos(a) + y * math.sin(a)) + phase)
        elif kind == 1:
            cx, cy = rng.uniform(-1, 1, 2)
            acc += np.sin(freq * np.sqrt((x - cx) ** 2 + (y - cy) ** 2) + phase)
        else:
            cx, cy = rng.uniform(-1, 1, 2)
            ang = np.arctan2(y - cy, x - cx)
            rad = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
            acc += np.sin(int(rng.integers(1, 6)) * ang + freq * 0.5 * rad + phase)
    acc /= np.float32(n)
    t = acc * rng.uniform(0.3, 1.0) + rng.random()
    shade = np.clip(0.7 + 0.3 * np.cos(acc * rng.uniform(2, 6)), 0, 1)
    return t, shade


def _field_gradient(rng, x, y):
    kind = rng.integers(3)
    cx, cy = rng.uniform(-0.6, 0.6, 2)
    if kind == 0:                                           # linear
        a = rng.uniform(0, 2 * math.pi)
        g = x * math.cos(a) + y * math.sin(a)
    elif kind == 1:                                         # radial
        g = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    else:                                                   # angular (conic)
        g = np.arctan2(y - cy, x - cx) / _TWO_PI * int(rng.integers(1, 4))
    cycles = rng.uniform(0.4, 3.0)
    t = g * cycles
    if rng.random() < 0.6:                                  # ring interference
        rx, ry = rng.uniform(-1, 1, 2)
        t = t + 0.15 * np.sin(rng.uniform(6, 20) * np.sqrt((x - rx) ** 2 + (y - ry) ** 2))
    if rng.random() < 0.5:                                  # soft noise wobble
        tex = _texture(rng, 2.2)
        t = t + 0.08 * _sample(tex, x * 0.4, y * 0.4)
    t = t + rng.random()
    shade = np.clip(1.0 - 0.35 * (x * x + y * y) * rng.uniform(0, 1), 0, 1)
    return t, shade


# ---------------------------------------------------------------------------------------------
# Soft styles: (rng, x, y) -> rgb, smooth at the scale of a few percent of the image


def _dark_background(rng, x, y):
    """A gradient between two dark colours along a random direction."""
    a = rng.uniform(0, 2 * math.pi)
    g = _smoothstep(-1.2, 1.2, x * math.cos(a) + y * math.sin(a))[..., None]
    h = rng.random()
    c0 = _hsv_to_rgb(h, rng.uniform(0.5, 1.0), rng.uniform(0.0, 0.12))[0].astype(np.float32)
    c1 = _hsv_to_rgb(h + rng.uniform(-0.3, 0.3), rng.uniform(0.5, 1.0), rng.uniform(0.05, 0.3))[0]
    return c0 + (c1.astype(np.float32) - c0) * g


def _style_glow(rng, x, y):
    rgb = _dark_background(rng, x, y)
    k = int(rng.integers(2, 7))
    hue = rng.random()
    spread = rng.choice([0.15, 0.35, 1.0])
    light = np.zeros_like(rgb)
    for _ in range(k):
        cx, cy = rng.uniform(-0.85, 0.85, 2)
        sigma = rng.uniform(0.12, 0.45)
        stretch = rng.uniform(0.6, 1.6)
        colour = _hsv_to_rgb(hue + rng.uniform(0, spread), rng.uniform(0.55, 1.0), 1.0)[0].astype(np.float32)
        d2 = ((x - cx) * stretch) ** 2 + ((y - cy) / stretch) ** 2
        light += np.exp(-d2 / np.float32(2 * sigma * sigma))[..., None] * colour * np.float32(rng.uniform(0.5, 1.3))
    exposure = np.float32(rng.uniform(1.0, 2.2))
    return rgb + (1 - np.exp(-light * exposure))               # tone-mapped: bright cores turn white-ish


def _style_aurora(rng, x, y):
    s = rng.uniform(0.12, 0.3)
    t1, t2 = _texture(rng, rng.uniform(2.6, 3.2)), _texture(rng, rng.uniform(2.6, 3.2))
    o = rng.uniform(0, 1, 6)
    u, v = x * s + o[0], y * s + o[1]
    a = rng.uniform(0.05, 0.15)
    q1, q2 = _sample(t1, u, v), _sample(t1, u + o[2], v + o[3])
    f = _sample(t2, u + a * q1, v + a * q2)
    t = f * rng.uniform(0.12, 0.3) + rng.random()
    shade = np.clip(0.55 + 0.35 * _sample(t2, u + o[4], v + o[5]), 0.1, 1)
    return _Palette(rng)(t) * shade[..., None]


def _style_sweep(rng, x, y):
    if rng.random() < 0.5:                                  # linear
        a = rng.uniform(0, 2 * math.pi)
        g = (x * math.cos(a) + y * math.sin(a)) * 0.5
    else:                                                   # radial
        cx, cy = rng.uniform(-0.8, 0.8, 2)
        g = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) * 0.5
    tex = _texture(rng, 3.0)
    g = g + rng.uniform(0.05, 0.2) * _sample(tex, x * 0.2 + rng.random(), y * 0.2 + rng.random())
    t = g * rng.uniform(0.7, 1.2) + rng.random()
    shade = np.clip(1.0 - 0.3 * (x * x + y * y) * rng.uniform(0, 1), 0, 1)
    return _Palette(rng)(t) * shade[..., None]


def _style_lava(rng, x, y):
    back = _dark_background(rng, x, y) if rng.random() < 0.6 else _style_sweep(rng, x, y) * np.float32(0.5)
    k = int(rng.integers(2, 7))
    f = np.zeros_like(x)
    for _ in range(k):
        cx, cy = rng.uniform(-0.8, 0.8, 2)
        r = rng.uniform(0.12, 0.3)
        stretch = rng.uniform(0.7, 1.4)
        f += np.float32(r * r) / (((x - cx) * stretch) ** 2 + ((y - cy) / stretch) ** 2 + np.float32(0.02))
    inside = _smoothstep(0.6, 1.4, f)[..., None]            # soft edge, ~5% of the image wide
    t = np.log1p(f) * rng.uniform(0.1, 0.25) + rng.random()
    blobs = _Palette(rng)(t) * (0.75 + 0.25 * _smoothstep(1.0, 4.0, f))[..., None]
    return back * (1 - inside) + blobs * inside


_SOFT = {"glow": _style_glow, "aurora": _style_aurora, "sweep": _style_sweep, "lava": _style_lava}


_FIELDS = {"warp": _field_warp, "flow": _field_flow, "metaballs": _field_metaballs,
           "plasma": _field_plasma, "gradient": _field_gradient}


def _kaleidoscope(rng, x, y):
    """Fold the plane into a mirrored wedge of 2 pi / n around a centre."""
    n = int(rng.choice([3, 4, 5, 6, 6, 8, 8, 10, 12]))
    cx, cy = rng.uniform(-0.15, 0.15, 2)
    rot = rng.uniform(0, 2 * math.pi)
    dx, dy = x - cx, y - cy
    r = np.sqrt(dx * dx + dy * dy)
    wedge = np.float32(2 * math.pi / n)
    a = np.mod(np.arctan2(dy, dx) + rot, wedge)
    a = np.abs(a - wedge / 2)
    zoom = rng.uniform(0.8, 1.6)
    off = rng.uniform(-0.5, 0.5, 2)
    return (r * np.cos(a) * zoom + off[0]).astype(np.float32), (r * np.sin(a) * zoom + off[1]).astype(np.float32)


def _colour(rng, field_name, x, y):
    t, shade = _FIELDS[field_name](rng, x, y)
    pal = _Palette(rng)
    rgb = pal(t)
    return rgb * shade[..., None]


def _blend(rng, a, b, x, y):
    mode = rng.choice(["mask", "mask", "screen", "multiply", "difference", "add"])
    if mode == "mask":
        tex = _texture(rng, rng.uniform(1.8, 2.4))
        m = _sample(tex, x * rng.uniform(0.2, 0.5) + rng.random(), y * rng.uniform(0.2, 0.5) + rng.random())
        w = rng.uniform(0.1, 0.6)
        m = _smoothstep(-w, w, m)[..., None]
        return a * (1 - m) + b * m
    a = np.clip(a, 0, 1)
    b = np.clip(b, 0, 1)
    if mode == "screen":
        return 1 - (1 - a) * (1 - b)
    if mode == "multiply":
        return np.sqrt(a * b)           # geometric mean keeps it from going dark
    if mode == "difference":
        return np.abs(a - b) * 1.3
    return (a + b) * 0.6


def _coordinates(rng, n: int):
    c = (np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1
    y, x = np.meshgrid(c, c, indexing="ij")
    a = rng.uniform(0, 2 * math.pi)
    zoom = rng.uniform(0.7, 1.4)
    ca, sa = math.cos(a) * zoom, math.sin(a) * zoom
    return (x * ca - y * sa).astype(np.float32), (x * sa + y * ca).astype(np.float32)


def _render_style(rng, style, x, y):
    if style in _SOFT:
        return _SOFT[style](rng, x, y)
    if style in _FIELDS:
        return _colour(rng, style, x, y)
    if style == "kaleido":
        kx, ky = _kaleidoscope(rng, x, y)
        inner = rng.choice(["warp", "warp", "flow", "metaballs", "plasma", "gradient"])
        return _colour(rng, inner, kx, ky)
    if style == "mix":
        s1, s2 = rng.choice(list(BASE_STYLES) + ["kaleido"], 2, replace=False)
        a = _render_style(rng, s1, x, y)
        b = _render_style(rng, s2, x, y)
        return _blend(rng, a, b, x, y)
    raise ValueError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")


def _finish(rng, rgb: np.ndarray) -> np.ndarray:
    """Global grading: exposure normalisation, contrast, saturation boost, occasional hue swap/invert."""
    lo, hi = np.percentile(rgb, [1, 99.5])
    if hi - lo > 1e-3:
        target_lo = rng.uniform(0.0, 0.08)
        rgb = target_lo + (rgb - lo) * ((rng.uniform(0.85, 1.0) - target_lo) / (hi - lo))
    luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    sat = rng.uniform(1.0, 1.5)
    rgb = luma[..., None] + (rgb - luma[..., None]) * sat
    if rng.random() < 0.3:
        rgb = rgb[..., rng.permutation(3)]
    if rng.random() < 0.08:
        rgb = 1 - rgb
    gamma = rng.uniform(0.8, 1.25)
    return np.clip(rgb, 0, 1) ** gamma


def render_float(seed, resolution: int = 256, style: str | None = None) -> np.ndarray:
    """Like render() but float32 in [0, 1] (before quantisation)."""
    resolution = int(resolution)
    if resolution < 4:
        raise ValueError(f"resolution must be >= 4, got {resolution}")
    if style is not None and style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")
    rng = _rng(seed)
    names = list(_STYLE_WEIGHTS)
    probs = np.array([_STYLE_WEIGHTS[k] for k in names])
    chosen = names[int(rng.choice(len(names), p=probs / probs.sum()))]   # drawn even when given: same stream
    style = style or chosen
    n = resolution
    factor = 1
    if resolution < _MIN_RENDER:
        factor = -(-_MIN_RENDER // resolution)
        n = resolution * factor
    x, y = _coordinates(rng, n)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        rgb = _render_style(rng, style, x, y).astype(np.float32)
        rgb = np.nan_to_num(rgb, nan=0.0, posinf=1.0, neginf=0.0)
        rgb = _finish(rng, rgb).astype(np.float32)
    if factor > 1:
        rgb = rgb.reshape(resolution, factor, resolution, factor, 3).mean(axis=(1, 3))
    return rgb


def render(seed: int | Sequence[int], resolution: int = 256, style: str | None = None) -> np.ndarray:
    """A deterministic procedural image: uint8 array [resolution, resolution, 3].

    seed: a non-negative int, or a sequence of them (e.g. (dataset_seed, index)).
    style: one of STYLES, or None to pick one at random from the seed.
    """
    rgb = render_float(seed, resolution, style)
    return (rgb * 255 + 0.5).astype(np.uint8)
