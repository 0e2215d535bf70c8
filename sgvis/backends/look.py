"""Looks: a treatment of the generator's picture, applied before the camera moves it.

contours (``look.contours``): lines at evenly spaced brightness levels, like the isolines of a map.  They are a
function of the picture itself, so they travel with whatever moves in it: when the layout shifts, turns or swells,
every line moves with it.  On a model whose pictures are soft colour fields (the built-in model) this is what makes
motion visible at all: a shift of a smooth gradient changes almost no pixel's neighbourhood, and optical flow (and the
eye) reads it as a colour change in place.  Dark lines are drawn over bright parts and light lines over dark parts,
so the lines show everywhere.

    look = Look({"contours": {"amount": "auto"}}, builtin_model=True)
    img = look(img)                 # [N, 3, H, W] in about [-1, 1], same shape

``amount`` is 0..1 (0 = off) or "auto": on for the built-in model, off for a model you bring (a face or landscape
model has edges of its own).  It is also the live control ``look.contours``.
"""
from __future__ import annotations

import math

import torch

from sgvis.errors import UserError

# The `look:` section of configs/default.yaml, key for key.
DEFAULTS = {
    "contours": {"amount": "auto", "levels": 10.0, "width": 0.12, "ink": 0.4},
}
LUMA = (0.299, 0.587, 0.114)      # Rec. 601 weights: the brightness the levels are drawn in
LIMITS = {"amount": (0.0, 1.0), "levels": (1.0, 64.0), "width": (0.01, 0.5), "ink": (0.0, 1.0)}


def resolve_look(cfg: dict | None, builtin_model: bool) -> dict:
    """The look: section merged over DEFAULTS, with "auto" resolved; a bad key or value is one UserError."""
    from sgvis.config import merge
    out = merge(DEFAULTS, cfg or {}, "look")
    for name, section in out.items():
        if not isinstance(section, dict):
            raise UserError(f"look.{name} is a section ({', '.join(DEFAULTS[name])}), got {section!r}")
        for key, value in section.items():
            if key == "amount" and value == "auto":
                section[key] = 1.0 if builtin_model else 0.0
                continue
            lo, hi = LIMITS[key]
            try:
                v = float(value)
            except (TypeError, ValueError):
                v = math.nan
            if not (lo <= v <= hi):
                extra = ' or "auto"' if key == "amount" else ""
                raise UserError(f"look.{name}.{key} must be a number from {lo:g} to {hi:g}{extra}, got {value!r}")
            section[key] = v
    return out


class Look:
    def __init__(self, cfg: dict | None = None, builtin_model: bool = False):
        self.cfg = resolve_look(cfg, builtin_model)
        self.contours = float(self.cfg["contours"]["amount"])

    @property
    def active(self) -> bool:
        return self.contours > 0

    def describe(self) -> str:
        return f"contours {self.contours:.2g}" if self.contours > 0 else "none"

    def apply_control(self, name: str, value) -> bool:
        if name != "look.contours":
            return False
        self.contours = min(max(float(value), 0.0), 1.0)
        return True

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] pictures in about [-1, 1] -> the same with the look applied.  Everything is worked out on
        one-channel maps; the colour channels are touched once (out = img * gain + offset)."""
        if self.contours <= 0 or img.shape[1] < 3:
            return img
        c = self.cfg["contours"]
        rgb = img[:, :3].float()
        lum = torch.einsum("nchw,c->nhw", rgb, rgb.new_tensor(LUMA)).unsqueeze(1)
        lum = ((lum + 1) * 0.5).clamp_(0, 1)
        level = torch.frac(lum * c["levels"])
        distance = torch.minimum(level, 1 - level)                 # to the nearest level, in level spacings
        line = torch.exp(-(distance / c["width"]) ** 2) * (c["ink"] * self.contours)
        # Ink: dark over bright parts, light over dark parts, blended around mid grey.  In [0, 1] units the ink is
        # x * (0.3 - 0.15 * bright) + 0.7 * (1 - bright), and out = x + line * (ink - x); in [-1, 1] units that is
        # img * gain + offset with the maps below.
        bright = ((lum - 0.3) / 0.2).clamp_(0, 1)
        gain = 1 + line * (-0.7 - 0.15 * bright)
        offset = gain - 1 + 2 * line * 0.7 * (1 - bright)
        out = torch.addcmul(offset, rgb, gain)
        if img.shape[1] > 3:
            out = torch.cat([out, img[:, 3:].float()], 1)
        return out.to(img.dtype)
