"""Upsample, FIR filter and downsample in one op (reference implementation).

Semantics: insert `up-1` zeros between input samples, pad (negative padding crops), convolve with the
FIR filter `f` (a true convolution unless `flip_filter`), then keep every `down`-th sample.  `f` is
either 1-D (applied separably along x and y) or 2-D.  `gain` scales the overall response; a 1-D filter
receives sqrt(gain) per axis.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from cuda_ops import _dispatch


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    v = tuple(int(i) for i in v)
    if len(v) != 2:
        raise ValueError(f"expected an int or a pair, got {v}")
    return v


def parse_padding(padding) -> tuple[int, int, int, int]:
    """int -> same on all sides; (px, py) -> symmetric per axis; (x0, x1, y0, y1) as is."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) == 4:
        return tuple(padding)
    raise ValueError(f"padding must be an int, 2 or 4 values, got {padding}")


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """Width and height of a filter (1 x 1 for None)."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
    return int(f.shape[-1]), int(f.shape[0])


def setup_filter(f: Sequence | torch.Tensor | None, normalize: bool = True, flip: bool = False,
                 gain: float = 1.0, separable: bool | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Turn a list of taps into a float32 filter tensor.

    A 1-D filter with fewer than 8 taps becomes its 2-D outer product unless `separable` says
    otherwise (2-D is faster for small filters on the reference path).  The result is normalised to
    unit sum and scaled by gain (per dimension).
    """
    if f is None:
        f = [1]
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"filter must be 1-D or 2-D and non-empty, got shape {tuple(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up=1, down=1, padding=0,
              flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Pad, upsample, filter and downsample a batch of images `x` [N, C, H, W].

    Runs the CUDA kernel for CUDA tensors when available (see cuda_ops/_dispatch.py), else
    `upfirdn2d_ref`; both compute the same function.
    """
    if _dispatch.use_cuda("upfirdn2d", x, lambda: _kernels.upfirdn2d_blocker(x, f)):
        return _kernels.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    return upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


def upfirdn2d_ref(x: torch.Tensor, f: torch.Tensor | None, up=1, down=1, padding=0,
                  flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Reference implementation of `upfirdn2d` (pure PyTorch, any device, autograd of any order)."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects a 4-D input [N, C, H, W], got shape {tuple(x.shape)}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    upx, upy = _pair(up)
    downx, downy = _pair(down)
    if min(upx, upy, downx, downy) < 1:
        raise ValueError(f"up and down factors must be >= 1, got up={up} down={down}")
    px0, px1, py0, py1 = parse_padding(padding)
    n, c, h, w = x.shape

    # Zero insertion.
    if upx > 1 or upy > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(n, c, h * upy, w * upx)

    # Pad (positive) and crop (negative).
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]

    # Filter: conv2d correlates, so flip the taps to convolve unless told otherwise.
    f = f.to(device=x.device, dtype=x.dtype) * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].expand(c, 1, *f.shape), groups=c)
    else:
        x = F.conv2d(x, f.reshape(1, 1, 1, -1).expand(c, 1, 1, f.numel()), groups=c)
        x = F.conv2d(x, f.reshape(1, 1, -1, 1).expand(c, 1, f.numel(), 1), groups=c)

    if downx > 1 or downy > 1:
        x = x[:, :, ::downy, ::downx]
    return x


def filter2d(x: torch.Tensor, f: torch.Tensor, padding=0, flip_filter: bool = False,
             gain: float = 1.0) -> torch.Tensor:
    """Filter with `f`, padded so that the output has the input's size (plus `padding`)."""
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up=2, padding=0, flip_filter: bool = False,
               gain: float = 1.0) -> torch.Tensor:
    """Upsample by `up` with filter `f`; output is exactly `up` times the input size."""
    upx, upy = _pair(up)
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2,
         py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=(upx, upy), padding=p, flip_filter=flip_filter,
                     gain=gain * upx * upy)


def upsample2d_clamped(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """upsample2d with the border clamped instead of zero-padded: the input's edge samples are repeated outward
    for the filter's taps that fall outside it, so a flat image stays flat up to its edge (as an image resize
    treats borders).  Zero padding pulls the outer output pixels towards 0 (mid grey in [-1, 1] images)."""
    fw, fh = filter_size(f)
    mx = -(-((fw + up - 1) // 2) // up)          # input samples the filter reaches beyond each border
    my = -(-((fh + up - 1) // 2) // up)
    y = upsample2d(F.pad(x, [mx, mx, my, my], mode="replicate"), f, up=up)
    return y[..., up * my:y.shape[-2] - up * my, up * mx:y.shape[-1] - up * mx]


def downsample2d(x: torch.Tensor, f: torch.Tensor, down=2, padding=0, flip_filter: bool = False,
                 gain: float = 1.0) -> torch.Tensor:
    """Filter with `f` and downsample by `down`; output is the input size divided by `down`."""
    downx, downy = _pair(down)
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2,
         py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=(downx, downy), padding=p, flip_filter=flip_filter, gain=gain)


from cuda_ops import _kernels  # noqa: E402  (imports this module's helpers)
