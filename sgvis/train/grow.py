"""Progressive growing for `sgvis train-gan --grow-from`: start a higher-resolution run from a trained
lower-resolution one.

On a CPU a low-resolution StyleGAN2 trains several times faster per iteration (64x64 is about four times
cheaper than 256x256), and a GAN's large-scale structure is what takes the most iterations to learn.  Growing
keeps that structure and only has to learn the detail at the new resolutions:

- Generator (skip architecture): the blocks up to the old resolution keep their weights; the new blocks' toRGB
  layers start at zero, so before any step the grown generator's image is exactly the old image upsampled with
  the generator's own filter, its border clamped (SynthesisNetwork's grown_from: zero padding would give the old
  image a rim of mid grey that the new blocks would have to learn to cancel).  The new layers then add detail as their toRGB weights grow.
- Discriminator (resnet architecture): the blocks at and below the old resolution keep their weights, and the
  old input layer (fromRGB at the old resolution) is kept beside the new full-resolution blocks.  Their two
  outputs are blended, alpha = 0 -> 1 over `fade_kimg` (progressive growing's fade-in): at first the
  discriminator sees the downsampled image exactly as it was trained to, at the end only the new path.
"""
from __future__ import annotations

import torch
from torch import nn

from sgvis.errors import UserError

# Architecture keys that must match between the old run and the grown one (everything but the resolution).
SHARED_ARCH_KEYS = ("channel_base", "channel_max", "z_dim", "w_dim", "map_layers", "mbstd_group")


def grown_arch(low_arch: dict, resolution: int, fade_kimg: float, fp16_res: int, conv_clamp) -> dict:
    """The architecture dict of the grown run (stored in its training state, so --resume rebuilds it)."""
    low = int(low_arch["resolution"])
    if resolution <= low:
        raise UserError(f"--grow-from: the run to grow is {low}x{low}; the new resolution must be higher "
                        f"(got {resolution}x{resolution})")
    if fade_kimg < 0:
        raise UserError(f"--fade-kimg must be >= 0 (got {fade_kimg})")
    arch = {k: low_arch[k] for k in SHARED_ARCH_KEYS}
    arch.update(resolution=int(resolution), fp16_res=fp16_res, conv_clamp=conv_clamp,
                noise=bool(low_arch.get("noise", True)),
                grow=dict(from_resolution=low, fade_kimg=float(fade_kimg)),
                grown_from=int(low_arch.get("grown_from") or low))
    return arch


class FadeInDiscriminator(nn.Module):
    """A full-resolution resnet discriminator whose input is blended, at the old resolution, with the old
    discriminator's fromRGB of the downsampled image.  `alpha` (0..1) weights the new path."""

    def __init__(self, D: nn.Module, low_resolution: int):
        super().__init__()
        from cuda_ops import setup_filter
        from stylegan.layers import Conv2dLayer
        if low_resolution not in D.block_resolutions or low_resolution >= D.img_resolution:
            raise ValueError(f"low_resolution {low_resolution} is not an inner block of a "
                             f"{D.img_resolution}x{D.img_resolution} discriminator")
        self.D = D
        self.low_resolution = int(low_resolution)
        block = getattr(D, f"b{low_resolution}")
        self.fromrgb_low = Conv2dLayer(D.img_channels, block.conv0.in_channels, kernel_size=1, activation="lrelu",
                                       conv_clamp=block.conv0.conv_clamp)
        self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))
        self.register_buffer("alpha", torch.zeros([]))
        # What the training loop and the samplers read from a discriminator.
        self.img_resolution, self.img_channels, self.c_dim = D.img_resolution, D.img_channels, D.c_dim

    def downsample(self, img: torch.Tensor) -> torch.Tensor:
        from cuda_ops import downsample2d
        while img.shape[-1] > self.low_resolution:
            img = downsample2d(img, self.resample_filter)
        return img

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        alpha = float(self.alpha)
        x, full = None, img
        for res in self.D.block_resolutions:
            if res > self.low_resolution and alpha <= 0:
                continue                                 # the new path has no weight yet: skip its cost
            if res == self.low_resolution and alpha < 1:
                old = self.fromrgb_low(self.downsample(full))
                x = old if alpha <= 0 else torch.lerp(old, x.to(old.dtype), alpha)
            x, img = getattr(self.D, f"b{res}")(x, img)      # blocks below the top ignore img (resnet)
        cmap = self.D.mapping(None, c) if self.D.c_dim > 0 else None
        return self.D.b4(x, img, cmap)


def set_fade(D: nn.Module, cur_nimg: int, fade_kimg: float) -> float:
    """Set a FadeInDiscriminator's alpha for the images shown so far; returns it (1.0 for a plain D)."""
    if not isinstance(D, FadeInDiscriminator):
        return 1.0
    alpha = 1.0 if fade_kimg <= 0 else min(1.0, cur_nimg / (fade_kimg * 1000))
    D.alpha.fill_(alpha)
    return alpha


def _load_subset(module: nn.Module, state: dict, new_prefixes: tuple[str, ...], what: str) -> None:
    """Load `state` into `module`; every parameter the state lacks must belong to a new block."""
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(new_prefixes)]
    if missing or result.unexpected_keys:
        raise UserError(f"--grow-from: the {what} of the run to grow does not fit the grown network "
                        f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})")


def plain_discriminator_state(d_state: dict) -> dict:
    """A discriminator state dict as a plain Discriminator stores it. The D of a run that was itself grown is a
    FadeInDiscriminator: its plain D is under "D.", beside the old input layer, which is dropped (by the end of
    the fade its weight is 0)."""
    if not any(k.startswith("D.") for k in d_state):
        return dict(d_state)
    return {k[len("D."):]: v for k, v in d_state.items() if k.startswith("D.")}


def _shape_error(e: RuntimeError) -> UserError:
    """Shape mismatches while loading: torch names the tensor on the last line of its message."""
    lines = str(e).strip().splitlines()
    return UserError(f"--grow-from: the run to grow does not fit the grown network: "
                     f"{lines[-1].strip() if lines else e}")


def init_generator_from_lower(G: nn.Module, g_state: dict, low_resolution: int) -> None:
    """Load a lower-resolution generator state into a freshly built grown generator (in place). The new blocks'
    toRGB start at zero, so the image is the old one, upsampled with the generator's own filter."""
    new_res = [r for r in G.synthesis.block_resolutions if r > low_resolution]
    try:
        _load_subset(G, g_state, tuple(f"synthesis.b{r}." for r in new_res), "generator")
    except RuntimeError as e:
        raise _shape_error(e) from None
    with torch.no_grad():
        for r in new_res:
            torgb = getattr(G.synthesis, f"b{r}").torgb
            torgb.weight.zero_()
            torgb.bias.zero_()


def init_from_lower(G: nn.Module, D: FadeInDiscriminator, G_ema: nn.Module, low_state: dict) -> None:
    """Copy a lower-resolution training state's networks into freshly built grown ones (in place)."""
    low = D.low_resolution
    for net, key in ((G, "G"), (G_ema, "G_ema")):
        init_generator_from_lower(net, low_state[key], low)
    try:
        d_state = plain_discriminator_state(low_state["D"])
        fromrgb = {k[len(f"b{low}.fromrgb."):]: d_state.pop(k) for k in list(d_state)
                   if k.startswith(f"b{low}.fromrgb.")}
        D.fromrgb_low.load_state_dict(fromrgb)
        _load_subset(D.D, d_state, tuple(f"b{r}." for r in D.D.block_resolutions if r > low), "discriminator")
    except RuntimeError as e:
        raise _shape_error(e) from None


__all__ = ["grown_arch", "FadeInDiscriminator", "set_fade", "init_from_lower", "init_generator_from_lower",
           "plain_discriminator_state",
           "SHARED_ARCH_KEYS"]
