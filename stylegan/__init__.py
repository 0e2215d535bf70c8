"""StyleGAN2 / StyleGAN3 networks and checkpoint loading.

    G = stylegan.load("network.pkl", device="cuda")
    ws = G.mapping(z, c, truncation_psi=0.7)
    img = G.synthesis(ws, noise_mode="const")     # [N, 3, H, W] float32 in about [-1, 1]
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # see sgvis/__init__.py: spinning OpenMP threads starve others

from stylegan.errors import CheckpointError
from stylegan.generator import Generator
from stylegan.loading import load, load_discriminator, read_checkpoint
from stylegan.formats.native import save

__all__ = ["Generator", "CheckpointError", "load", "load_discriminator", "read_checkpoint", "save"]
