"""StyleGAN3 (alias-free) synthesis network, configs T and R.

Written from Karras et al., "Alias-Free Generative Adversarial Networks" (2021): Fourier-feature
input, modulated convolutions, and a filtered leaky ReLU between an upsampling and a downsampling
low-pass filter.  Names follow NVIDIA's checkpoints (`input`, `L{i}_{size}_{channels}`).
"""
from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cuda_ops import filtered_lrelu
from stylegan.layers import FullyConnectedLayer


def modulated_conv2d(x: torch.Tensor, w: torch.Tensor, s: torch.Tensor, demodulate: bool = True,
                     padding: int = 0, input_gain: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample modulated convolution as one grouped convolution (StyleGAN3 variant: weights and
    styles are pre-normalised by their RMS, and an optional per-input-channel gain is applied)."""
    n = x.shape[0]
    out_channels, in_channels, kh, kw = w.shape
    if demodulate:
        w = w * w.square().mean([1, 2, 3], keepdim=True).rsqrt()
        s = s * s.square().mean().rsqrt()
    w = w.unsqueeze(0) * s.reshape(n, 1, in_channels, 1, 1)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        w = w * dcoefs.reshape(n, out_channels, 1, 1, 1)
    if input_gain is not None:
        w = w * input_gain.expand(n, in_channels).reshape(n, 1, in_channels, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    x = F.conv2d(x, w.reshape(-1, in_channels, kh, kw).to(x.dtype), padding=padding, groups=n)
    return x.reshape(n, -1, *x.shape[2:])


def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float,
                          radial: bool = False) -> torch.Tensor | None:
    """Kaiser-windowed low-pass FIR: separable 1-D taps, or a 2-D jinc-based radial filter."""
    if numtaps < 1:
        raise ValueError("numtaps must be >= 1")
    if numtaps == 1:
        return None
    import scipy.signal     # here, not at import: scipy.signal takes about a second to import
    import scipy.special
    if not radial:
        f = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
        return torch.as_tensor(f, dtype=torch.float32)
    t = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(t, t))
    f = scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = np.kaiser(numtaps, beta)
    f *= np.outer(window, window)
    f /= np.sum(f)
    return torch.as_tensor(f, dtype=torch.float32)


class SynthesisInput(nn.Module):
    """Fourier features of a (rotated, translated) sampling grid, mixed by a learned matrix.

    `transform` is a user-settable 3x3 matrix applied to the canvas (translate/rotate the image).
    """

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float):
        super().__init__()
        self.w_dim, self.channels = w_dim, channels
        self.size = np.broadcast_to(np.asarray(size), [2])
        self.sampling_rate, self.bandwidth = sampling_rate, bandwidth
        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs /= radii * radii.square().exp().pow(0.25)
        freqs *= bandwidth
        phases = torch.rand([channels]) - 0.5
        self.weight = nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnectedLayer(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3, 3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", phases)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        n = w.shape[0]
        t = self.affine(w)                                   # (cos, sin, tx, ty), unnormalised
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        rotate = torch.eye(3, device=w.device).repeat([n, 1, 1])
        rotate[:, 0, 0] = t[:, 0]
        rotate[:, 0, 1] = -t[:, 1]
        rotate[:, 1, 0] = t[:, 1]
        rotate[:, 1, 1] = t[:, 0]
        translate = torch.eye(3, device=w.device).repeat([n, 1, 1])
        translate[:, 0, 2] = -t[:, 2]
        translate[:, 1, 2] = -t[:, 3]
        transforms = rotate @ translate @ self.transform.unsqueeze(0)

        freqs = self.freqs.unsqueeze(0)
        phases = self.phases.unsqueeze(0) + (freqs @ transforms[:, :2, 2:]).squeeze(2)
        freqs = freqs @ transforms[:, :2, :2]
        # Fade out frequencies that the user transform pushed beyond the band limit.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth)
                      / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)

        theta = torch.eye(2, 3, device=w.device)
        theta[0, 0] = 0.5 * self.size[0] / self.sampling_rate
        theta[1, 1] = 0.5 * self.size[1] / self.sampling_rate
        grid = F.affine_grid(theta.unsqueeze(0), [1, 1, int(self.size[1]), int(self.size[0])],
                             align_corners=False)
        x = (grid.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)
        x = x + phases.unsqueeze(1).unsqueeze(2)
        x = torch.sin(x * (np.pi * 2)) * amplitudes.unsqueeze(1).unsqueeze(2)
        x = x @ (self.weight / np.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


class SynthesisLayer(nn.Module):
    def __init__(self, w_dim: int, is_torgb: bool, is_critically_sampled: bool, use_fp16: bool,
                 in_channels: int, out_channels: int, in_size: int, out_size: int,
                 in_sampling_rate: int, out_sampling_rate: int, in_cutoff: float, out_cutoff: float,
                 in_half_width: float, out_half_width: float, conv_kernel: int = 3, filter_size: int = 6,
                 lrelu_upsampling: int = 2, use_radial_filters: bool = False,
                 conv_clamp: float | None = 256, magnitude_ema_beta: float = 0.999):
        super().__init__()
        self.is_torgb, self.use_fp16 = is_torgb, use_fp16
        self.in_channels, self.out_channels = in_channels, out_channels
        self.in_size = np.broadcast_to(np.asarray(in_size), [2])
        self.out_size = np.broadcast_to(np.asarray(out_size), [2])
        self.conv_kernel = 1 if is_torgb else conv_kernel   # toRGB is always a 1x1 convolution
        self.conv_clamp, self.magnitude_ema_beta = conv_clamp, magnitude_ema_beta
        tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, self.conv_kernel, self.conv_kernel]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))

        self.up_factor = int(np.rint(tmp_sampling_rate / in_sampling_rate))
        if in_sampling_rate * self.up_factor != tmp_sampling_rate:
            raise ValueError("sampling rates do not divide evenly")
        up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        self.register_buffer("up_filter", design_lowpass_filter(up_taps, in_cutoff, in_half_width * 2,
                                                                tmp_sampling_rate))
        self.down_factor = int(np.rint(tmp_sampling_rate / out_sampling_rate))
        if out_sampling_rate * self.down_factor != tmp_sampling_rate:
            raise ValueError("sampling rates do not divide evenly")
        down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        radial = use_radial_filters and not is_critically_sampled
        self.register_buffer("down_filter", design_lowpass_filter(down_taps, out_cutoff, out_half_width * 2,
                                                                  tmp_sampling_rate, radial=radial))
        # Padding so that the output lands on the centres of the output sampling grid.
        pad_total = (self.out_size - 1) * self.down_factor + 1
        pad_total -= (self.in_size + self.conv_kernel - 1) * self.up_factor
        pad_total += up_taps + down_taps - 2
        pad_lo = (pad_total + self.up_factor) // 2
        pad_hi = pad_total - pad_lo
        self.padding = [int(pad_lo[0]), int(pad_hi[0]), int(pad_lo[1]), int(pad_hi[1])]

    def forward(self, x: torch.Tensor, w: torch.Tensor, force_fp32: bool = False, update_emas: bool = False,
                compute_dtype: torch.dtype | None = None, **_ignored) -> torch.Tensor:
        if update_emas:
            with torch.autograd.no_grad():
                magnitude = x.detach().to(torch.float32).square().mean()
                self.magnitude_ema.copy_(magnitude.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        input_gain = self.magnitude_ema.rsqrt()
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * (1 / np.sqrt(self.in_channels * self.conv_kernel ** 2))
        dtype = torch.float16 if (self.use_fp16 and not force_fp32 and x.device.type == "cuda") \
            else torch.float32
        if compute_dtype is not None:
            dtype = compute_dtype
        x = modulated_conv2d(x.to(dtype), self.weight, styles, padding=self.conv_kernel - 1,
                             demodulate=not self.is_torgb, input_gain=input_gain)
        gain = 1 if self.is_torgb else np.sqrt(2)
        slope = 1 if self.is_torgb else 0.2
        return filtered_lrelu(x, fu=self.up_filter, fd=self.down_filter, b=self.bias.to(x.dtype),
                              up=self.up_factor, down=self.down_factor, padding=self.padding, gain=gain,
                              slope=slope, clamp=self.conv_clamp)


def layer_schedule(img_resolution: int, img_channels: int, channel_base: int, channel_max: int,
                   num_layers: int, num_critical: int, first_cutoff: float, first_stopband: float,
                   last_stopband_rel: float, margin_size: int) -> dict[str, np.ndarray]:
    """Per-layer cutoffs, stopbands, sampling rates, filter half-widths, sizes and channels."""
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * last_stopband_rel
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
    stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + margin_size * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
    channels[-1] = img_channels
    return dict(cutoffs=cutoffs, stopbands=stopbands, sampling_rates=sampling_rates,
                half_widths=half_widths, sizes=sizes, channels=channels)


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_layers: int = 14, num_critical: int = 2,
                 first_cutoff: float = 2, first_stopband: float = 2 ** 2.1, last_stopband_rel: float = 2 ** 0.3,
                 margin_size: int = 10, output_scale: float = 0.25, num_fp16_res: int = 4, **layer_kwargs):
        super().__init__()
        if img_resolution < 4 or 2 ** int(np.log2(img_resolution)) != img_resolution:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.num_ws = num_layers + 2
        self.num_layers, self.output_scale = num_layers, output_scale
        s = layer_schedule(img_resolution, img_channels, channel_base, channel_max, num_layers, num_critical,
                           first_cutoff, first_stopband, last_stopband_rel, margin_size)
        self.input = SynthesisInput(w_dim, channels=int(s["channels"][0]), size=int(s["sizes"][0]),
                                    sampling_rate=s["sampling_rates"][0], bandwidth=s["cutoffs"][0])
        self.layer_names = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(
                w_dim, is_torgb=(idx == num_layers), is_critically_sampled=(idx >= num_layers - num_critical),
                use_fp16=bool(s["sampling_rates"][idx] * (2 ** num_fp16_res) > img_resolution),
                in_channels=int(s["channels"][prev]), out_channels=int(s["channels"][idx]),
                in_size=int(s["sizes"][prev]), out_size=int(s["sizes"][idx]),
                in_sampling_rate=int(s["sampling_rates"][prev]), out_sampling_rate=int(s["sampling_rates"][idx]),
                in_cutoff=s["cutoffs"][prev], out_cutoff=s["cutoffs"][idx],
                in_half_width=s["half_widths"][prev], out_half_width=s["half_widths"][idx], **layer_kwargs)
            name = f"L{idx}_{layer.out_size[0]}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", force_fp32: bool = False,
                update_emas: bool = False, compute_dtype: torch.dtype | None = None, **_ignored) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        ws = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws[0])
        for name, w in zip(self.layer_names, ws[1:]):
            x = getattr(self, name)(x, w, force_fp32=force_fp32, update_emas=update_emas,
                                    compute_dtype=compute_dtype)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32)
