"""Differentiable augmentation for GAN training on small datasets (ADA-style).

Every image shown to the discriminator, real or generated, goes through the same random pipeline; each
transform is applied to each image independently with probability p.  Because D never sees an
un-augmented distribution when p is high, augmentations that do not change the data distribution's
"identity" (flips, small translations, colour jitter, cutout at p < ~0.8) do not leak into G's output.

All ops are written with gathers and arithmetic only (no grid_sample), so they support double backward:
R1 can be taken with respect to the images before augmentation.

AdaptiveP implements the ADA heuristic: r_t = E[sign(D(real))]; p rises when r_t exceeds the target
(D is overconfident on reals: overfitting) and falls otherwise.
"""
from __future__ import annotations

import math

import torch

__all__ = ["AugmentPipe", "AdaptiveP", "DEFAULT_OPS"]

DEFAULT_OPS = ("xflip", "translate", "brightness", "contrast", "saturation", "cutout")


def _reflect(idx: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror integer indices into [0, size) (reflection without repeating the edge)."""
    period = 2 * (size - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx >= size, period - idx, idx)


class AugmentPipe(torch.nn.Module):
    """x [N, C, H, W] in about [-1, 1] -> augmented x; `p` is set by the trainer (float attribute)."""

    def __init__(self, ops=DEFAULT_OPS, p: float = 0.0, translate: float = 0.125, brightness_std: float = 0.2,
                 contrast_std: float = 0.5, saturation_std: float = 1.0, cutout_size: float = 0.5):
        super().__init__()
        unknown = set(ops) - set(DEFAULT_OPS)
        if unknown:
            raise ValueError(f"unknown augmentation {sorted(unknown)[0]!r}; expected some of {DEFAULT_OPS}")
        self.ops = tuple(ops)
        self.p = float(p)
        self.translate, self.brightness_std = translate, brightness_std
        self.contrast_std, self.saturation_std, self.cutout_size = contrast_std, saturation_std, cutout_size

    def _mask(self, n: int, device) -> torch.Tensor:
        return (torch.rand([n], device=device) < self.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p <= 0 or not self.ops:
            return x
        n, c, h, w = x.shape
        dev = x.device
        dtype = x.dtype

        # Geometry: flip + integer translation as one gather with reflected indices.
        if "xflip" in self.ops or "translate" in self.ops:
            cols = torch.arange(w, device=dev).expand(n, w)
            rows = torch.arange(h, device=dev).expand(n, h)
            if "xflip" in self.ops:
                flip = self._mask(n, dev)
                cols = torch.where(flip[:, None], w - 1 - cols, cols)
            if "translate" in self.ops:
                on = self._mask(n, dev)
                tx = torch.round((torch.rand([n], device=dev) * 2 - 1) * self.translate * w).long() * on
                ty = torch.round((torch.rand([n], device=dev) * 2 - 1) * self.translate * h).long() * on
                cols = _reflect(cols - tx[:, None], w)
                rows = _reflect(rows - ty[:, None], h)
            batch = torch.arange(n, device=dev)[:, None, None]
            x = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)

        # Colour, in the order brightness, contrast, saturation (per image, per transform: prob p).
        if "brightness" in self.ops:
            b = torch.randn([n, 1, 1, 1], device=dev, dtype=dtype) * self.brightness_std
            x = x + b * self._mask(n, dev).to(dtype).reshape(n, 1, 1, 1)
        if "contrast" in self.ops:
            f = torch.exp2(torch.randn([n, 1, 1, 1], device=dev, dtype=dtype) * self.contrast_std)
            f = torch.where(self._mask(n, dev).reshape(n, 1, 1, 1), f, torch.ones_like(f))
            mean = x.mean(dim=[1, 2, 3], keepdim=True)
            x = (x - mean) * f + mean
        if "saturation" in self.ops and c == 3:
            f = torch.exp2(torch.randn([n, 1, 1, 1], device=dev, dtype=dtype) * self.saturation_std)
            f = torch.where(self._mask(n, dev).reshape(n, 1, 1, 1), f, torch.ones_like(f))
            luma = (x * torch.tensor([0.299, 0.587, 0.114], device=dev, dtype=dtype).reshape(1, 3, 1, 1)).sum(
                dim=1, keepdim=True)
            x = (x - luma) * f + luma

        if "cutout" in self.ops:
            on = self._mask(n, dev).to(dtype).reshape(n, 1, 1, 1)
            cy = torch.rand([n, 1, 1, 1], device=dev)
            cx = torch.rand([n, 1, 1, 1], device=dev)
            yy = (torch.arange(h, device=dev, dtype=torch.float32).reshape(1, 1, h, 1) + 0.5) / h
            xx = (torch.arange(w, device=dev, dtype=torch.float32).reshape(1, 1, 1, w) + 0.5) / w
            inside = ((yy - cy).abs() < self.cutout_size / 2) & ((xx - cx).abs() < self.cutout_size / 2)
            x = x * (1 - inside.to(dtype) * on)
        return x

    def extra_repr(self) -> str:
        return f"ops={','.join(self.ops)}, p={self.p:.3f}"


class AdaptiveP:
    """Adjusts p every `interval` discriminator steps from the sign of D's outputs on real images.

    speed_kimg: how many thousand images it takes p to move from 0 to 1 at full imbalance.
    """

    def __init__(self, target: float = 0.6, interval: int = 4, speed_kimg: float = 100.0, p: float = 0.0,
                 p_max: float = 1.0):
        self.target, self.interval, self.speed_kimg = float(target), int(interval), float(speed_kimg)
        self.p, self.p_max = float(p), float(p_max)
        self._sum = 0.0
        self._count = 0
        self._steps = 0
        self._images = 0
        self.last_rt = math.nan

    def accumulate(self, real_logits: torch.Tensor) -> None:
        self._sum += float(real_logits.detach().sign().sum())
        self._count += int(real_logits.numel())
        self._steps += 1
        self._images += int(real_logits.shape[0])

    def ready(self) -> bool:
        return self._steps >= self.interval

    def update(self, reduce=None) -> float:
        """Apply one adjustment; `reduce` (optional) sums [sum, count, images] across processes."""
        stats = [self._sum, float(self._count), float(self._images)]
        if reduce is not None:
            stats = reduce(stats)
        s, count, images = stats
        if count > 0:
            self.last_rt = s / count
            step = math.copysign(images / (self.speed_kimg * 1000), self.last_rt - self.target)
            self.p = min(max(self.p + step, 0.0), self.p_max)
        self._sum, self._count, self._steps, self._images = 0.0, 0, 0, 0
        return self.p
