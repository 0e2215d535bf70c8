"""The generator users load: mapping network + StyleGAN2 or StyleGAN3 synthesis network."""
from __future__ import annotations

import copy

import torch
from torch import nn

from stylegan import stylegan2, stylegan3
from stylegan.layers import MappingNetwork

SYNTHESIS_NETWORKS = {"stylegan2": stylegan2.SynthesisNetwork, "stylegan3": stylegan3.SynthesisNetwork}


class Generator(nn.Module):
    """z [N, z_dim] (+ one-hot c [N, c_dim]) -> image [N, img_channels, R, R] in about [-1, 1].

    `config` is a plain JSON-able description from which the same network can be rebuilt; together
    with `state_dict()` it is everything sgvis's own checkpoint format stores.
    """

    def __init__(self, kind: str = "stylegan2", z_dim: int = 512, c_dim: int = 0, w_dim: int = 512,
                 img_resolution: int = 1024, img_channels: int = 3, mapping_kwargs: dict | None = None,
                 synthesis_kwargs: dict | None = None):
        super().__init__()
        if kind not in SYNTHESIS_NETWORKS:
            raise ValueError(f"unknown generator kind {kind!r}; expected one of {sorted(SYNTHESIS_NETWORKS)}")
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        self.kind = kind
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SYNTHESIS_NETWORKS[kind](w_dim=w_dim, img_resolution=img_resolution,
                                                  img_channels=img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)
        self.config = copy.deepcopy(dict(kind=kind, z_dim=z_dim, c_dim=c_dim, w_dim=w_dim,
                                         img_resolution=img_resolution, img_channels=img_channels,
                                         mapping_kwargs=mapping_kwargs, synthesis_kwargs=synthesis_kwargs))

    @property
    def device(self) -> torch.device:
        return self.mapping.fc0.weight.device

    def set_latent_bank(self, latents: torch.Tensor, sharpness: float) -> None:
        """Give the mapping network a latent bank (MappingNetwork's docstring): random z then draw from these
        latents [K, z_dim]; saved with the model."""
        if latents.ndim != 2 or latents.shape[1] != self.z_dim or latents.shape[0] < 1:
            raise ValueError(f"latent bank must have shape [K, {self.z_dim}], got {tuple(latents.shape)}")
        m = self.mapping
        m.latent_bank, m.latent_bank_sharpness = int(latents.shape[0]), float(sharpness)
        m.register_buffer("z_bank", latents.detach().to(self.device, torch.float32).clone())
        self.config["mapping_kwargs"].update(latent_bank=m.latent_bank,
                                             latent_bank_sharpness=m.latent_bank_sharpness)

    def make_c(self, n: int, class_idx: int | None = None) -> torch.Tensor:
        """Label tensor for n samples: empty for unconditional models, else one-hot of class_idx."""
        c = torch.zeros([n, self.c_dim], device=self.device)
        if self.c_dim > 0:
            if class_idx is None or not 0 <= class_idx < self.c_dim:
                raise ValueError(f"this model is conditional with {self.c_dim} classes: give a class index "
                                 f"0..{self.c_dim - 1}")
            c[:, class_idx] = 1
        return c

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, update_emas: bool = False, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, **synthesis_kwargs)

    def extra_repr(self) -> str:
        return (f"kind={self.kind}, resolution={self.img_resolution}, z_dim={self.z_dim}, c_dim={self.c_dim}, "
                f"w_dim={self.w_dim}, num_ws={self.num_ws}")
