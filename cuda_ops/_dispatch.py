"""Which implementation an op call uses: the CUDA kernels or the pure-PyTorch reference.

SGVIS_OPS (read at every call, so it can be changed at run time):
    auto  (default) CUDA kernels for CUDA tensors when the extension builds/loads, else the reference ops
          (one warning saying why, the first time a CUDA tensor meets a failed build).
    cuda  CUDA tensors must use the kernels: a failed build, a missing GPU or a call the kernels cannot
          handle raises CudaOpsUnavailable instead of falling back.  CPU tensors still use the reference
          (when a GPU exists; with no GPU at all this mode is an error).
    ref   always the reference ops.
"""
from __future__ import annotations

import os
import warnings

import torch

MODES = ("auto", "cuda", "ref")
_bad_mode_warned = set()

# Tests only: run the CUDA path on CPU tensors through the kernel emulator (cuda_ops._kernels._backend).
EMULATE_ON_CPU = False


class CudaOpsUnavailable(RuntimeError):
    """SGVIS_OPS=cuda, but the CUDA kernels cannot be used for this call."""


def mode() -> str:
    m = os.environ.get("SGVIS_OPS", "auto").strip().lower() or "auto"
    if m not in MODES:
        if m not in _bad_mode_warned:
            _bad_mode_warned.add(m)
            warnings.warn(f"SGVIS_OPS={m!r} is not one of {', '.join(MODES)}; using 'auto'", RuntimeWarning,
                          stacklevel=3)
        return "auto"
    return m


def use_cuda(op: str, x: torch.Tensor, blocker=None) -> bool:
    """True when this call of `op` should run the CUDA kernel.  `blocker()` returns why the kernel cannot
    handle these arguments (or None)."""
    m = mode()
    if m == "ref":
        return False
    if EMULATE_ON_CPU:
        return (blocker() if blocker else None) is None
    if not x.is_cuda:
        if m == "cuda" and not torch.cuda.is_available():
            from cuda_ops import _build
            raise CudaOpsUnavailable(
                f"SGVIS_OPS=cuda, but {_build.unavailable_reason() or 'no CUDA GPU is available'}. "
                f"Unset SGVIS_OPS (or set SGVIS_OPS=ref) to run the reference ops on the CPU.")
        return False
    from cuda_ops import _build
    if _build.load_extension(warn=(m == "auto")) is None:
        if m == "cuda":
            raise CudaOpsUnavailable(f"SGVIS_OPS=cuda, but the CUDA ops cannot be loaded: {_build.failure()}. "
                                     f"Set SGVIS_OPS=auto to fall back to the reference ops.")
        return False
    reason = blocker() if blocker else None
    if reason:
        if m == "cuda":
            raise CudaOpsUnavailable(f"{op}: the CUDA kernel does not support {reason} (SGVIS_OPS=cuda). Set "
                                     f"SGVIS_OPS=auto to use the reference op for such calls.")
        return False
    return True
