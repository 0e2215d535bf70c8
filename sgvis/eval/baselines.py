"""Baseline videos for `sgvis eval steering --baselines`: what a score means is what it is against these.

    frames = still_frames(image, n)                              # one picture, n times
    frames = random_motion_frames(n, (width, height), seed=0)    # smoothed noise wandering, deaf to the music

* still image: the first frame of the track's render, held.  Lossless, its flow is 0 and it must score 0;
  through the codec it shows what compression noise alone scores (nothing under the 0.1 px peak floor).
* random motion: a texture of smoothed colour noise (periodic, Gaussian-smoothed with TEXTURE_SIGMA = 2 px)
  translated along a smooth random path (Gaussian-smoothed white noise for the position, SMOOTH_FRAMES = 6
  frames; RMS speed SPEED_PX = 1 px per frame).  Sizes are in pixels whatever the frame size, as the 0.1 px
  peak floor is.
  Optical flow follows such a texture exactly (Farneback reads 1.00 px for a 1 px shift), so this is visible
  motion of a known size that ignores the audio: its AV-Align is what chance gives, and a steering that
  follows the music has to beat it.  (It is not the model's picture: Farneback reads a 1 px shift of the
  default model's soft images as 0.02 px, which would put every step of it under the 0.1 px floor.)
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

__all__ = ["BASELINES", "SMOOTH_FRAMES", "SPEED_PX", "TEXTURE_SIGMA", "still_frames", "noise_texture",
           "random_motion_path", "random_motion_frames"]

BASELINES = {"still": "still image", "random": "random motion"}     # key -> label in reports
SMOOTH_FRAMES = 6.0
SPEED_PX = 1.0
TEXTURE_SIGMA = 2.0


def still_frames(image: np.ndarray, n: int) -> Iterator[np.ndarray]:
    for _ in range(int(n)):
        yield image


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    radius = int(np.ceil(4 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    return np.stack([np.convolve(x[:, j], k, mode="same") for j in range(x.shape[1])], axis=1)


def random_motion_path(n: int, seed: int) -> np.ndarray:
    """[n, 2] offsets (x, y) in px: smoothed noise, scaled to SPEED_PX RMS speed per frame."""
    rng = np.random.default_rng(seed)
    pad = int(np.ceil(4 * SMOOTH_FRAMES))
    path = _smooth(rng.standard_normal((int(n) + 2 * pad, 2)), SMOOTH_FRAMES)[pad:pad + int(n)]
    speed = np.sqrt(np.mean(np.sum(np.diff(path, axis=0) ** 2, axis=1))) if n > 1 else 0.0
    return path * (SPEED_PX / speed) if speed > 0 else path


def noise_texture(size: tuple[int, int], seed: int) -> np.ndarray:
    """[height, width, 3] uint8: colour white noise smoothed with a periodic Gaussian (TEXTURE_SIGMA px), so
    that it tiles without seams when shifted with wrap-around."""
    width, height = int(size[0]), int(size[1])
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((height, width, 3))
    sigma = TEXTURE_SIGMA
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    gain = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fx ** 2 + fy ** 2))
    t = np.real(np.fft.ifft2(np.fft.fft2(noise, axes=(0, 1)) * gain[..., None], axes=(0, 1)))
    t = (t - t.mean()) / (t.std() + 1e-12)
    return np.clip(np.rint(128.0 + 50.0 * t), 0, 255).astype(np.uint8)


def random_motion_frames(n: int, size: tuple[int, int], seed: int = 0) -> Iterator[np.ndarray]:
    """RGB uint8 frames of `size` (width, height): noise_texture moved along random_motion_path (bilinear,
    wrapped)."""
    import cv2
    texture = noise_texture(size, seed)
    h, w = texture.shape[:2]
    for dx, dy in random_motion_path(n, seed + 1):
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        yield cv2.warpAffine(texture, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
