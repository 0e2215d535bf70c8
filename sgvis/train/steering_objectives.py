"""Losses for training learned steering (`sgvis train-encoder`), and the video discriminator.

Paper losses ("Sound-guided Semantic Video Generation", eq. 2-3 and 6-9):
    clip_av      1 - cos(F_v(G(w^_t)), F_a(x_t))                          (audio <-> generated frame)
    clip_at      1 - cos(F_v(G(w^_t)), F_t(label))                        (label text <-> generated frame)
    latent_reg   lambda_b * || w^_t - mean_t w^ ||^2                      (the sequence keeps its content)
    image_adv    non-saturating GAN loss of an image discriminator on single frames
    video_adv    the same for a 3-D patch discriminator on short clips (after MoCoGAN-HD / PatchGAN)

The sync objective, for when no CLIP weights are at hand (no external model at all):
    onset_sync   the change between consecutive generated frames follows the onset strength of the audio:
                 motion m_t = mean |frame_t - frame_{t-1}| is regressed (Huber) onto
                 motion_base + motion_gain * envelope(onset)_t (each hit peaks on its frame, then eases out
                 with motion.release_s), so frames move on hits, settle between them, and never jump further
                 than a strong hit asks (no strobing)
    onset_corr   1 - Pearson correlation of m_t and onset_t over each clip (scale-free shape term)
    contrastive  InfoNCE on encoder outputs: two windows of the same clip are positives, other clips in the
                 batch negatives, so different sounds map to different W+ regions
    offset_reg   mean || w^_t - w ||^2 (keeps w^ near the prior; the image discriminator does the rest)
    offset_limit mean relu(|| w^_t - w ||_row - limit)^2: free to roam within `limit` of w, bounded beyond (over
                 the whole clip, also the frames that only warm up the recurrent state)
    latent_sync  onset_sync on the latent: the per-frame W+ step (RMS over rows of ||w^_t - w^_{t-1}||) is
                 regressed onto latent_motion.base + latent_motion.gain * envelope (cheap: no frames needed, so
                 it covers every frame of a long clip, teaching the recurrent blocks the timing over a horizon
                 longer than the frames rendered)

With train_encoder.motion.onsets = picked, the envelope is built from the picked onsets only (Features.onset_peak,
at their strength: the peaks AV-Align takes from the music), and with train_encoder.look = auto the frame change is
measured on the frames as render shows them (the built-in model's contour lines), which is what optical flow sees.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["frame_motion", "latent_motion", "offset_limit_penalty", "onset_envelope", "onset_sync_loss", "onset_corr_loss", "latent_regulariser", "offset_regulariser",
           "encoder_contrastive_loss", "cosine_distance", "VideoPatchDiscriminator", "downsample"]


def downsample(img: torch.Tensor, size: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, size, size] by area averaging (differentiable, alias-free for integer factors)."""
    if img.shape[-1] == size and img.shape[-2] == size:
        return img
    return F.interpolate(img, size=(size, size), mode="area")


def frame_motion(frames: torch.Tensor) -> torch.Tensor:
    """frames [B, T, C, H, W] -> motion [B, T-1]: mean absolute change between consecutive frames."""
    return (frames[:, 1:] - frames[:, :-1]).abs().mean(dim=(2, 3, 4))


def latent_motion(ws_hat: torch.Tensor) -> torch.Tensor:
    """ws_hat [B, T, num_ws, w_dim] -> [B, T-1]: RMS over W+ rows of the per-frame step norm."""
    step = (ws_hat[:, 1:] - ws_hat[:, :-1]).square().sum(dim=-1)             # [B, T-1, num_ws]
    return (step.mean(dim=-1) + 1e-8).sqrt()


def offset_limit_penalty(ws_hat: torch.Tensor, w: torch.Tensor, limit: float) -> torch.Tensor:
    """ws_hat [B, T, num_ws, w_dim], w [B, num_ws, w_dim]: mean relu(||w^_t - w||_row - limit)^2."""
    dist = ((ws_hat - w[:, None]).square().sum(dim=-1) + 1e-8).sqrt()
    return torch.relu(dist - limit).square().mean()


def onset_envelope(onset: torch.Tensor, decay: float) -> torch.Tensor:
    """onset [B, T] -> env_t = max(onset_t, decay * env_{t-1}): each hit peaks on its own frame and then eases
    out (the frame change a hit asks for, which keeps motion smooth instead of a one-frame jolt)."""
    out = []
    env = torch.zeros_like(onset[:, 0])
    for t in range(onset.shape[1]):
        env = torch.maximum(onset[:, t], decay * env)
        out.append(env)
    return torch.stack(out, dim=1)


def onset_sync_loss(motion: torch.Tensor, onset: torch.Tensor, base: float, gain: float) -> torch.Tensor:
    """Huber distance of motion [B, T-1] from base + gain * onset [B, T-1], in units of `gain`."""
    target = base + gain * onset.clamp(0, 1)
    return F.smooth_l1_loss(motion / gain, target / gain, beta=0.25)


def onset_corr_loss(motion: torch.Tensor, onset: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """1 - Pearson correlation over time, averaged over the clips whose onset strength varies."""
    m = motion - motion.mean(dim=1, keepdim=True)
    o = onset - onset.mean(dim=1, keepdim=True)
    o_norm = o.norm(dim=1)
    valid = o_norm > 1e-3
    if not bool(valid.any()):
        return motion.sum() * 0.0
    corr = (m * o).sum(dim=1) / (m.norm(dim=1) * o_norm + eps)
    return (1 - corr[valid]).mean()


def latent_regulariser(ws_hat: torch.Tensor) -> torch.Tensor:
    """ws_hat [B, T, num_ws, w_dim]: mean over frames of || w^_t - mean_t w^ ||^2 / w_dim (paper eq. 3)."""
    return (ws_hat - ws_hat.mean(dim=1, keepdim=True)).square().sum(dim=-1).mean()


def offset_regulariser(ws_hat: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """ws_hat [B, T, num_ws, w_dim], w [B, num_ws, w_dim]: mean || w^_t - w ||^2 per W+ row."""
    return (ws_hat - w[:, None]).square().sum(dim=-1).mean()


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean 1 - cos(a, b) over rows (the paper's L_CLIP)."""
    return (1 - F.cosine_similarity(a.float(), b.float(), dim=-1)).mean()


def encoder_contrastive_loss(e_a: torch.Tensor, e_b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE between two views [B, ...] of B clips: row i of e_a should match row i of e_b."""
    if e_a.shape[0] < 2:
        return e_a.sum() * 0.0
    a = F.normalize(e_a.flatten(1).float(), dim=1)
    b = F.normalize(e_b.flatten(1).float(), dim=1)
    logits = a @ b.t() / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


class VideoPatchDiscriminator(nn.Module):
    """Clips [B, T, 3, H, W] in [-1, 1] -> one logit per clip: a stack of 3-D convolutions classifies
    overlapping spatio-temporal patches as real or fake, and the patch logits are averaged (PatchGAN on
    video, as MoCoGAN-HD uses).  Time is reduced only by the kernels' valid extent, so short clips work."""

    def __init__(self, channels: int = 32, layers: int = 3):
        super().__init__()
        blocks = []
        cin = 3
        for i in range(layers):
            cout = channels * 2 ** i
            blocks += [nn.Conv3d(cin, cout, kernel_size=(3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1)),
                       nn.GroupNorm(min(8, cout), cout) if i else nn.Identity(), nn.LeakyReLU(0.2)]
            cin = cout
        blocks.append(nn.Conv3d(cin, 1, kernel_size=(3, 3, 3), padding=(0, 1, 1)))
        self.net = nn.Sequential(*blocks)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.ndim != 5 or clips.shape[2] != 3:
            raise ValueError(f"clips must be [B, T, 3, H, W], got {tuple(clips.shape)}")
        if clips.shape[1] < 3:
            raise ValueError("the video discriminator needs clips of at least 3 frames")
        x = self.net(clips.transpose(1, 2))          # [B, 1, T', H', W']
        return x.flatten(1).mean(dim=1)
