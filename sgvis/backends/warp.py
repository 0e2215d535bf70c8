"""Spatial transforms of images and feature maps: the moves that optical flow sees.

A transform is 4 numbers per frame: zoom (log scale: 0.1 is 10.5 % closer), rotation (radians, counter-clockwise),
and a pan (x, y) in units of half the picture's width / height (0.1 moves the content a twentieth of the
picture).  Outside the source, content is mirrored in (reflection), so no black edge ever shows.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IDENTITY = (0.0, 0.0, 0.0, 0.0)


def affine_matrices(params: torch.Tensor) -> torch.Tensor:
    """[N, 4] (zoom, rotation, pan x, pan y) -> [N, 2, 3] sampling matrices for F.affine_grid.  The sampling
    grid maps output to source coordinates, so the content moves by +pan, turns by +rotation and grows by
    exp(zoom)."""
    zoom, rot, tx, ty = params.unbind(-1)
    s = torch.exp(-zoom)
    c, si = torch.cos(rot) * s, torch.sin(rot) * s
    # source = R(-rot) * output / exp(zoom) - pan (content follows the pan)
    return torch.stack([torch.stack([c, si, -(c * tx + si * ty)], -1),
                        torch.stack([-si, c, -(-si * tx + c * ty)], -1)], -2)


def sampling_grid(matrices: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """F.affine_grid(matrices, [N, C, height, width], align_corners=False), from a base grid kept per size (building
    it again for every frame cost more than the warp's sampling)."""
    key = (height, width, matrices.device)
    base = _BASE_GRIDS.get(key)
    if base is None:
        xs = (torch.arange(width, dtype=torch.float32, device=matrices.device) * 2 + 1) / width - 1
        ys = (torch.arange(height, dtype=torch.float32, device=matrices.device) * 2 + 1) / height - 1
        base = torch.stack([xs.expand(height, width), ys[:, None].expand(height, width),
                            torch.ones(height, width, device=matrices.device)], -1).reshape(1, height * width, 3)
        if len(_BASE_GRIDS) >= 8:
            _BASE_GRIDS.clear()
        _BASE_GRIDS[key] = base
    return torch.matmul(base, matrices.to(torch.float32).transpose(1, 2)).reshape(-1, height, width, 2)


_BASE_GRIDS: dict = {}


def warp(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Transform [N, C, H, W] images or features by per-sample params [N, 4] (bilinear, mirrored edges).
    Samples whose params are all zero come back unchanged."""
    if params.shape != (x.shape[0], 4):
        raise ValueError(f"params must be [{x.shape[0]}, 4], got {tuple(params.shape)}")
    params = params.to(device=x.device, dtype=torch.float32)
    moving = params.abs().amax(-1) > 0
    n_moving = int(moving.sum())
    if n_moving == 0:
        return x
    every = n_moving == x.shape[0]          # the usual case: no copies in and out of the batch
    src = x if every else x[moving]
    grid = sampling_grid(affine_matrices(params if every else params[moving]), x.shape[2], x.shape[3])
    out = F.grid_sample(src.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if every:
        return out.to(x.dtype)
    x = x.clone()
    x[moving] = out.to(x.dtype)
    return x
