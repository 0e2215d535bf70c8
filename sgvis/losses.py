"""StyleGAN2 losses: non-saturating logistic GAN loss, R1 gradient penalty, path length regularisation.

Karras et al. 2020 ("Analyzing and Improving the Image Quality of StyleGAN"), Mescheder et al. 2018 (R1).
Regularisers are "lazy": evaluated every k-th step with their weight multiplied by k.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """G wants D to call its images real: mean softplus(-D(G(z)))."""
    return F.softplus(-fake_logits).mean()


def d_logistic_fake(fake_logits: torch.Tensor) -> torch.Tensor:
    """D's loss on fakes: mean softplus(D(fake))."""
    return F.softplus(fake_logits).mean()


def d_logistic_real(real_logits: torch.Tensor) -> torch.Tensor:
    """D's loss on reals: mean softplus(-D(real))."""
    return F.softplus(-real_logits).mean()


def d_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D: mean softplus(D(fake)) + mean softplus(-D(real))."""
    return d_logistic_fake(fake_logits) + d_logistic_real(real_logits)


def r1_penalty(real_img: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample squared norm of dD(x)/dx at real x ([N]); real_img must require grad.  Keeps the
    graph so the penalty can be backpropagated into D (double backward)."""
    (grads,) = torch.autograd.grad(real_logits.sum(), real_img, create_graph=True)
    return grads.square().sum(dim=[1, 2, 3])


def path_lengths(img: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    """|J_w^T y| for a random image-space direction y ~ N(0, I) / sqrt(H W), per sample ([N])."""
    noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
    (grads,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
    return grads.square().sum(dim=2).mean(dim=1).sqrt()
