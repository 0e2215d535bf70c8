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


def warp(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Transform [N, C, H, W] images or features by per-sample params [N, 4] (bilinear, mirrored edges).
    Samples whose params are all zero come back unchanged."""
    if params.shape != (x.shape[0], 4):
        raise ValueError(f"params must be [{x.shape[0]}, 4], got {tuple(params.shape)}")
    params = params.to(device=x.device, dtype=torch.float32)
    moving = params.abs().amax(-1) > 0
    if not bool(moving.any()):
        return x
    dtype = x.dtype
    src = x[moving].float()
    grid = F.affine_grid(affine_matrices(params[moving]), list(src.shape), align_corners=False)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    x = x.clone()
    x[moving] = out.to(dtype)
    return x
