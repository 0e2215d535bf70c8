"""Framing: how a generator's picture (square for StyleGAN) fills an output of another shape (`--fit`).

    crop       scale to cover the output, cut the overflow off evenly on both sides (default: fills the frame)
    letterbox  scale to fit inside the output, black bars on the sides it does not reach
    stretch    scale each axis on its own (distorts when the aspects differ)

`fit_rects` is the geometry, shared by the frames a backend resizes (`fit_images`) and the live window, which
draws the frame as a textured quad (sgvis.outputs.display.Renderer).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sgvis.errors import UserError

FIT_MODES = ("crop", "letterbox", "stretch")
DEFAULT_FIT = "crop"


def check_fit(value, what: str = "--fit") -> str:
    """A --fit / render.fit value, checked: one of FIT_MODES (None: the default)."""
    if value is None:
        return DEFAULT_FIT
    if value not in FIT_MODES:
        raise UserError(f"{what} must be one of {', '.join(FIT_MODES)}; got {value!r}")
    return value


def fit_rects(src_w: int, src_h: int, dst_w: int, dst_h: int, fit: str) \
        -> tuple[tuple[float, float, float, float], tuple[int, int, int, int]]:
    """Where a src_w x src_h picture goes in a dst_w x dst_h output: (the part of the picture shown, as
    (x0, y0, x1, y1) in picture pixels, possibly fractional; the rectangle it fills, as (x, y, w, h) in output
    pixels).  Both keep the picture's aspect except with stretch."""
    fit = check_fit(fit)
    full_src = (0.0, 0.0, float(src_w), float(src_h))
    if fit == "stretch":
        return full_src, (0, 0, dst_w, dst_h)
    if fit == "letterbox":
        scale = min(dst_w / src_w, dst_h / src_h)
        w, h = max(1, min(dst_w, round(src_w * scale))), max(1, min(dst_h, round(src_h * scale)))
        return full_src, ((dst_w - w) // 2, (dst_h - h) // 2, w, h)
    scale = max(dst_w / src_w, dst_h / src_h)
    cw, ch = dst_w / scale, dst_h / scale                     # the picture's part that covers the output
    x0, y0 = (src_w - cw) / 2, (src_h - ch) / 2
    return (x0, y0, x0 + cw, y0 + ch), (0, 0, dst_w, dst_h)


def _resize(img: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Antialiased bicubic: clean both for down- and (moderate) upscaling."""
    if (h, w) == tuple(img.shape[2:]):
        return img
    return F.interpolate(img, size=(h, w), mode="bicubic", align_corners=False, antialias=True)


def _cover_axis(n: int, start: float, length: float, out: int) -> tuple[int, int, float, int]:
    """One axis of a crop: show source pixels [start, start + length) (fractional) as `out` pixels.  Returns the
    whole source pixels to resample (a, b), the scale, and where the `out` pixels start in the resampled part:
    the same as resizing the whole picture and cutting, without resizing what is thrown away.  A margin of the
    resampling kernel's reach keeps the kept edge pixels computed from their real neighbours, and `a` is chosen,
    where the scale allows, so that the part's pixel grid lines up with the whole picture's (no sub-pixel shift;
    otherwise the shift is under half an output pixel)."""
    scale = out / length
    margin = math.ceil(2 / min(scale, 1.0)) + 1                 # bicubic support, widened when downscaling
    first = math.floor(start) - margin
    a = max(0, first)
    for candidate in range(first, first - 64, -1):
        if candidate < 0:
            break
        if abs(candidate * scale - round(candidate * scale)) < 1e-6:   # the part's grid on the whole one's
            a = candidate
            break
    b = min(n, math.ceil(start + length) + margin)
    if abs((b - a) * scale - round((b - a) * scale)) < 1e-6:    # don't let rounding floor a whole axis to out - 1
        scale = round((b - a) * scale) / (b - a)
    offset = math.floor(start * scale + 1e-6) - round(a * scale)
    return a, b, scale, max(0, min(offset, math.floor((b - a) * scale) - out))


def fit_images(img: torch.Tensor, size: tuple[int, int], fit: str, background: float = -1.0) -> torch.Tensor:
    """Images [N, C, H, W] (floats; black = `background`, -1 for the generator's [-1, 1]) -> [N, C, height, width]
    for size = (width, height), framed by `fit` (FIT_MODES)."""
    width, height = size
    src_h, src_w = img.shape[2:]
    if (src_w, src_h) == (width, height):
        return img
    img = img.float()
    (x0, y0, x1, y1), (x, y, w, h) = fit_rects(src_w, src_h, width, height, fit)
    if fit == "crop":
        ax0, ax1, sx, ox = _cover_axis(src_w, x0, x1 - x0, width)
        ay0, ay1, sy, oy = _cover_axis(src_h, y0, y1 - y0, height)
        # scale_factor, not size: the part is resampled at exactly the cover scale, its grid where the whole
        # picture's would be.
        big = F.interpolate(img[:, :, ay0:ay1, ax0:ax1], scale_factor=(sy, sx), mode="bicubic",
                            align_corners=False, antialias=True, recompute_scale_factor=False)
        if big.shape[2] < oy + height or big.shape[3] < ox + width:        # rounding at a picture edge: resize
            sh, sw = round(src_h * sy), round(src_w * sx)                  # the whole picture and cut it
            big = _resize(img, max(sh, height), max(sw, width))
            oy, ox = (big.shape[2] - height) // 2, (big.shape[3] - width) // 2
        return big[:, :, oy:oy + height, ox:ox + width]
    if (w, h) == (width, height):                 # stretch, or a letterbox without bars
        return _resize(img, height, width)
    out = torch.full((img.shape[0], img.shape[1], height, width), float(background), dtype=img.dtype,
                     device=img.device)
    out[:, :, y:y + h, x:x + w] = _resize(img, h, w)
    return out
