from __future__ import annotations

import torch
from torch import nn

from stylegan.errors import CheckpointError


def load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], path: str, what: str) -> None:
    """Copy `tensors` into `module`, requiring an exact match of names and shapes."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
        raise CheckpointError(f"{path}: the {what} weights do not fit the architecture it declares "
                              f"({'; '.join(parts)})")
    for name, ref in expected.items():
        value = torch.as_tensor(tensors[name])
        if tuple(value.shape) != tuple(ref.shape):
            raise CheckpointError(f"{path}: {what} weight {name} has shape {tuple(value.shape)}, "
                                  f"expected {tuple(ref.shape)} for the declared architecture")
    with torch.no_grad():
        module.load_state_dict({k: torch.as_tensor(v).to(torch.float32) for k, v in tensors.items()})
