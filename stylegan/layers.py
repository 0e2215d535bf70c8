"""Building blocks shared by the StyleGAN2 and StyleGAN3 networks.

Parameter names and shapes follow NVIDIA's checkpoints so that their state dicts load directly.
Learning-rate equalisation lives in the modules (weight_gain), not in the stored weights.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cuda_ops import bias_act, filter_size, upfirdn2d
from cuda_ops.bias_act import activation as activation_spec
from cuda_ops.upfirdn2d import parse_padding


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalised learning rate: y = act(x @ (W * lr / sqrt(in)).T + b * lr)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 activation: str = "linear", lr_multiplier: float = 1.0, bias_init=0.0,
                 weight_init: float = 1.0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) * (weight_init / lr_multiplier))
        if bias:
            init = np.broadcast_to(np.asarray(bias_init, dtype=np.float32), [out_features])
            self.bias = nn.Parameter(torch.from_numpy(init / lr_multiplier))
        else:
            self.bias = None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, act={self.activation}"


def bank_cosine(z: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """[N, K] cosine between each z [N, z_dim] and each latent-bank entry [K, z_dim] (MappingNetwork's bank
    weights are softmax(sharpness * this))."""
    return F.normalize(z, dim=1) @ F.normalize(bank, dim=1).T


class MappingNetwork(nn.Module):
    """z (and optional class label c) -> w, broadcast to num_ws rows, with truncation toward w_avg.

    Optional latent bank (sgvis's own models from train-glo): `latent_bank` learned latents [K, z_dim] that z is
    drawn towards before the layers: z is replaced by the softmax-weighted mean of the bank entries, weighted by
    `latent_bank_sharpness` times the cosine between z and each entry.  A random z then lands on (a blend of a few
    of) the latents the generator was trained to draw, and moving z moves smoothly from one to the next.
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 embed_features: int | None = None, layer_features: int | None = None,
                 activation: str = "lrelu", lr_multiplier: float = 0.01,
                 w_avg_beta: float | None = 0.995, latent_bank: int = 0, latent_bank_sharpness: float = 0.0):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.latent_bank, self.latent_bank_sharpness = int(latent_bank), float(latent_bank_sharpness)
        if self.latent_bank:
            if z_dim == 0:
                raise ValueError("a latent bank needs z (z_dim > 0)")
            self.register_buffer("z_bank", torch.zeros([self.latent_bank, z_dim]))
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for i in range(num_layers):
            self.add_module(f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], activation=activation,
                                                          lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def draw_from_bank(self, z: torch.Tensor) -> torch.Tensor:
        """z [N, z_dim] -> the bank entries' mean, weighted by softmax(sharpness * cosine(z, entry))."""
        return torch.softmax(bank_cosine(z, self.z_bank) * self.latent_bank_sharpness, dim=1) @ self.z_bank

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None = None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        x = None
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"z must have shape [N, {self.z_dim}], got "
                                 f"{None if z is None else tuple(z.shape)}")
            z = z.to(torch.float32)
            if self.latent_bank:
                z = self.draw_from_bank(z)
            x = normalize_2nd_moment(z)
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f"this model is conditional: c must have shape [N, {self.c_dim}] "
                                 f"(one-hot class), got {None if c is None else tuple(c.shape)}")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = y if x is None else torch.cat([x, y], dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_emas and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is None:
            return x
        return broadcast_ws(x, self.num_ws, self.w_avg if self.w_avg_beta is not None else None, truncation_psi,
                            truncation_cutoff)


def broadcast_ws(w: torch.Tensor, num_ws: int, w_avg: torch.Tensor | None, truncation_psi: float = 1,
                 truncation_cutoff: int | None = None) -> torch.Tensor:
    """w [N, w_dim] -> W+ [N, num_ws, w_dim], its first `truncation_cutoff` rows (all if None) truncated toward
    `w_avg` by `truncation_psi` (a network without w_avg cannot truncate)."""
    x = w.unsqueeze(1).repeat([1, num_ws, 1])
    if truncation_psi != 1:
        if w_avg is None:
            raise ValueError("this mapping network has no w_avg, so it cannot truncate")
        rows = slice(None) if truncation_cutoff is None else slice(0, int(truncation_cutoff))
        x[:, rows] = w_avg.lerp(x[:, rows], truncation_psi)
    return x


def _conv(x: torch.Tensor, w: torch.Tensor, stride: int = 1, padding=0, groups: int = 1,
          transpose: bool = False, flip: bool = False) -> torch.Tensor:
    if flip and (w.shape[2] > 1 or w.shape[3] > 1):
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1,
                    down: int = 1, padding=0, groups: int = 1, flip_weight: bool = True,
                    flip_filter: bool = False) -> torch.Tensor:
    """2-D convolution with optional FIR upsampling before it and FIR downsampling after it.

    Equivalent to: zero-insert by `up`, filter with `f` (gain up^2), convolve with `w` (correlation
    when flip_weight, true convolution otherwise), filter with `f` and keep every `down`-th sample;
    padding as given plus what the filter needs to keep sizes exact.  Each case runs the cheapest
    equivalent sequence of ops.
    """
    out_channels, in_per_group, kh, kw = w.shape
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    flip = not flip_weight

    if kw == 1 and kh == 1:
        # A 1x1 convolution commutes with resampling: run it at the lower resolution.
        if down > 1 and up == 1:
            x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
            return _conv(x, w, groups=groups)
        if up > 1 and down == 1:
            x = _conv(x, w, groups=groups)
            return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2,
                             flip_filter=flip_filter)

    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip=flip)

    if up > 1:
        # Transposed convolution = zero insertion + true convolution, then the FIR filter.
        if groups == 1:
            wt = w.transpose(0, 1)
        else:
            wt = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
            wt = wt.reshape(groups * in_per_group, out_channels // groups, kh, kw)
        px0, px1 = px0 - (kw - 1), px1 - (kw - up)
        py0, py1 = py0 - (kh - 1), py1 - (kh - up)
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv(x, wt, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip=not flip)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up ** 2,
                      flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    if up == 1 and down == 1 and px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip=flip)

    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up ** 2,
                  flip_filter=flip_filter)
    x = _conv(x, w, groups=groups, flip=flip)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x


class Conv2dLayer(nn.Module):
    """Plain (unmodulated) convolution with equalised learning rate, optional resampling, bias and
    activation; used by the discriminator and the resnet generator skips."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1, resample_filter=(1, 3, 3, 1),
                 conv_clamp: float | None = None):
        super().__init__()
        from cuda_ops import setup_filter
        self.in_channels, self.out_channels = in_channels, out_channels
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = activation_spec(activation).default_gain
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding, flip_weight=(self.up == 1))
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)
