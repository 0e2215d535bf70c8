"""Bias, upsample, leaky ReLU (with gain and clamp) and downsample: StyleGAN3's alias-free nonlinearity
(reference implementation)."""
from __future__ import annotations

import math

import torch

from cuda_ops import _dispatch, _kernels
from cuda_ops.bias_act import bias_act_ref
from cuda_ops.upfirdn2d import filter_size, parse_padding, upfirdn2d_ref


def filtered_lrelu(x: torch.Tensor, fu: torch.Tensor | None = None, fd: torch.Tensor | None = None,
                   b: torch.Tensor | None = None, up: int = 1, down: int = 1, padding=0,
                   gain: float = math.sqrt(2), slope: float = 0.2, clamp: float | None = None,
                   flip_filter: bool = False) -> torch.Tensor:
    """Add bias `b`, upsample by `up` with filter `fu` (padding applied here), apply leaky ReLU with
    `slope`, multiply by `gain`, clamp to [-clamp, clamp], then filter with `fd` and downsample by
    `down`.  Output size: (in * up + pad_x0 + pad_x1 - (fu_w - 1) - (fd_w - 1) + down - 1) // down.

    Runs the fused CUDA kernel for CUDA tensors when available (see cuda_ops/_dispatch.py), else
    `filtered_lrelu_ref`.
    """
    if _dispatch.use_cuda("filtered_lrelu", x, lambda: _kernels.filtered_lrelu_blocker(x, fu, fd)):
        return _kernels.filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=padding, gain=gain, slope=slope,
                                       clamp=clamp, flip_filter=flip_filter)
    return filtered_lrelu_ref(x, fu, fd, b, up=up, down=down, padding=padding, gain=gain, slope=slope,
                              clamp=clamp, flip_filter=flip_filter)


def filtered_lrelu_ref(x: torch.Tensor, fu: torch.Tensor | None = None, fd: torch.Tensor | None = None,
                       b: torch.Tensor | None = None, up: int = 1, down: int = 1, padding=0,
                       gain: float = math.sqrt(2), slope: float = 0.2, clamp: float | None = None,
                       flip_filter: bool = False) -> torch.Tensor:
    """Reference implementation of `filtered_lrelu`, composed of the reference upfirdn2d and bias_act."""
    if x.ndim != 4:
        raise ValueError(f"filtered_lrelu expects a 4-D input [N, C, H, W], got {tuple(x.shape)}")
    px0, px1, py0, py1 = parse_padding(padding)
    fu_w, fu_h = filter_size(fu)
    fd_w, fd_h = filter_size(fd)
    out_w = (x.shape[3] * up + px0 + px1 - (fu_w - 1) - (fd_w - 1) + down - 1) // down
    out_h = (x.shape[2] * up + py0 + py1 - (fu_h - 1) - (fd_h - 1) + down - 1) // down
    if out_w < 1 or out_h < 1:
        raise ValueError(f"filtered_lrelu: input {tuple(x.shape)} with up={up}, down={down}, "
                         f"padding={padding} leaves no output pixels")
    in_dtype = x.dtype
    x = bias_act_ref(x, b)
    x = upfirdn2d_ref(x, fu, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter)
    x = bias_act_ref(x, act="lrelu", alpha=slope, gain=gain, clamp=clamp)
    x = upfirdn2d_ref(x, fd, down=down, flip_filter=flip_filter)
    assert x.shape[2:] == (out_h, out_w) and x.dtype == in_dtype
    return x
