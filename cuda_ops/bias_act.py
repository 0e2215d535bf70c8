"""Fused bias + activation + gain + clamp (reference implementation)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from cuda_ops import _dispatch


@dataclass(frozen=True)
class Activation:
    func: Callable[[torch.Tensor, float], torch.Tensor]
    default_alpha: float
    default_gain: float


ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x, a: x, 0.0, 1.0),
    "relu": Activation(lambda x, a: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": Activation(lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2)),
    "tanh": Activation(lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": Activation(lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "elu": Activation(lambda x, a: F.elu(x), 0.0, 1.0),
    "selu": Activation(lambda x, a: F.selu(x), 0.0, 1.0),
    "softplus": Activation(lambda x, a: F.softplus(x), 0.0, 1.0),
    "swish": Activation(lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def activation(name: str) -> Activation:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
             alpha: float | None = None, gain: float | None = None,
             clamp: float | None = None) -> torch.Tensor:
    """Return clamp(act(x + b, alpha) * gain).

    `b` is a 1-D tensor broadcast along dimension `dim` of `x`.  `alpha` and `gain` default to the
    activation's own values (e.g. 0.2 and sqrt(2) for lrelu); `clamp` limits the result to
    [-clamp, clamp] when given.  Runs the CUDA kernel for CUDA tensors when available (see
    cuda_ops/_dispatch.py), else `bias_act_ref`.
    """
    if _dispatch.use_cuda("bias_act", x, lambda: _kernels.bias_act_blocker(x)):
        return _kernels.bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


def bias_act_ref(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
                 alpha: float | None = None, gain: float | None = None,
                 clamp: float | None = None) -> torch.Tensor:
    """Reference implementation of `bias_act` (pure PyTorch, any device, autograd of any order)."""
    spec = activation(act)
    alpha = spec.default_alpha if alpha is None else float(alpha)
    gain = spec.default_gain if gain is None else float(gain)
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias of shape {tuple(b.shape)} does not match dimension {dim} of input "
                             f"{tuple(x.shape)}")
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.to(x.dtype).reshape(shape)
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


from cuda_ops import _kernels  # noqa: E402  (imports this module's helpers)
