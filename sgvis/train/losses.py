"""StyleGAN2 losses: non-saturating logistic GAN loss, R1 gradient penalty, path length regularisation, and an
optional mode-coverage term.

Karras et al. 2020 ("Analyzing and Improving the Image Quality of StyleGAN"), Mescheder et al. 2018 (R1).
Regularisers are "lazy": evaluated every k-th step with their weight multiplied by k.
Coverage: each real image is matched with the nearest of a pool of generated ones, and G is pulled towards it at
low resolution (implicit maximum likelihood, Li & Malik 2018; used beside a GAN loss in Yu et al. 2020,
"Inclusive GAN"). Every real image then has latents that come near it, which a GAN alone does not ensure.
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


def thumbnails(img: torch.Tensor, size: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, C*size*size]: area averages over size x size cells (the layout, not the detail)."""
    return F.adaptive_avg_pool2d(img.float(), size).flatten(1)


def nearest_candidates(real: torch.Tensor, candidates: torch.Tensor, size: int) -> torch.Tensor:
    """For each real image, the index of the candidate (generated) image nearest to it in thumbnails ([N])."""
    return torch.cdist(thumbnails(real, size), thumbnails(candidates, size)).argmin(dim=1)


def coverage(fake: torch.Tensor, real: torch.Tensor, size: int) -> torch.Tensor:
    """Mean squared thumbnail difference between fake[i] and its matched real[i]."""
    return (thumbnails(fake, size) - thumbnails(real, size)).square().mean()
