"""Low-level ops used by the StyleGAN networks.

Every op has a pure-PyTorch reference path (`*_ref`) that runs on any device and supports autograd
(including double backward), and a CUDA kernel (cuda_ops/csrc, built on first use) behind the same public
function: CUDA tensors use the kernel when it is available, everything else the reference.  SGVIS_OPS=
auto|cuda|ref chooses (cuda_ops/_dispatch.py); `ops_status()` reports what is compiled and active.  See
docs/cuda_ops.md.
"""
from cuda_ops.bias_act import ACTIVATIONS, bias_act, bias_act_ref
from cuda_ops.upfirdn2d import (downsample2d, filter2d, filter_size, setup_filter, upfirdn2d,
                                upfirdn2d_ref, upsample2d, upsample2d_clamped)
from cuda_ops.filtered_lrelu import filtered_lrelu, filtered_lrelu_ref
from cuda_ops._dispatch import CudaOpsUnavailable


def ops_status(build: bool = False) -> dict:
    """Environment, extension state and per-op compiled / active / reason (see _build.ops_status)."""
    from cuda_ops import _build
    return _build.ops_status(build=build)


__all__ = ["ACTIVATIONS", "bias_act", "upfirdn2d", "upsample2d", "upsample2d_clamped", "downsample2d", "filter2d",
           "setup_filter", "filter_size", "filtered_lrelu", "bias_act_ref", "upfirdn2d_ref",
           "filtered_lrelu_ref", "CudaOpsUnavailable", "ops_status"]
