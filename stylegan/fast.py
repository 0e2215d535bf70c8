"""Fast inference path for the StyleGAN2 / StyleGAN3 synthesis networks.

    fast = FastSynthesis(G)                 # picks precision / memory format for G's device
    img = fast(ws)                          # [N, C, R, R] float32, noise_mode="const", no autograd
    print(fast.describe())

The exact path (``G.synthesis``) follows NVIDIA's reference semantics op by op and is what tests and
checkpoint conversions check against.  This module computes the same function with cheaper, equivalent
op sequences, from weights snapshotted when it is built (call ``refresh()`` after changing G's
parameters; StyleGAN3's user ``transform`` is read live):

* modulated convolution: demodulation coefficients from a precomputed sum of squared weights
  (``styles^2 @ sum_k(w^2)``) instead of materialising per-sample weights; per layer either the
  weights are modulated ("fused", batch 1, when the weight tensor is smaller than the activations) or
  the activations are ("unfused"), and the demodulation, activation gain and bias are folded into the
  convolution / FIR weights or one ``addcmul``;
* FIR resampling: zero insertion + filter becomes one polyphase (strided transposed) depthwise
  convolution, filter + decimation one strided depthwise convolution, padding goes into the conv;
* channels_last activations (oneDNN's native layout on CPU, tensor cores' on CUDA);
* reduced precision: bf16 on CPUs that run it natively fast (AMX), fp16 on CUDA for the checkpoint's
  fp16 layers (NVIDIA's mixed precision); activations in that dtype, styles / demodulation / image
  accumulation in fp32;
* optionally ``torch.compile`` of the whole synthesis (fuses the elementwise epilogues).

fp32 results match the exact path to float rounding (max|diff| / max|ref| ~1e-6 .. 1e-5); bf16 to
about 1e-2 (StyleGAN2) .. 5e-2 (StyleGAN3), see tests/test_fast_path.py and docs/history.md.
"""
from __future__ import annotations

import copy
import math
import platform

import numpy as np
import torch
import torch.nn.functional as F

from stylegan.layers import broadcast_ws, normalize_2nd_moment

__all__ = ["FastMapping", "FastSynthesis", "cpu_bf16_support", "fast_upfirdn2d", "FIR"]

_HOMOGENEOUS = {"linear", "relu", "lrelu"}   # act(g * x) == g * act(x) for g > 0


# ---------------------------------------------------------------------------------------------
# Hardware probing


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform says."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16_support() -> dict:
    """What the CPU offers for bf16: ``native`` (avx512_bf16 / AMX instructions present and oneDNN
    usable), ``amx`` (AMX tiles, where bf16 convolutions beat fp32 by several times) and the oneDNN
    capability string.  Without AMX, avx512_bf16 convolutions run at or below fp32 speed (the bf16
    dot-product instruction issues on one port, fp32 FMA on two), so ``auto`` precision only picks
    bf16 when AMX is present."""
    flags = _cpu_flags()
    try:
        mkldnn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - older / exotic builds
        mkldnn_bf16 = False
    amx = bool({"amx_bf16", "amx_tile"} & flags)
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001
        capability = "unknown"
    native = mkldnn_bf16 and (amx or "avx512_bf16" in flags)
    return {"native": native, "amx": amx and mkldnn_bf16, "avx512_bf16": "avx512_bf16" in flags,
            "capability": capability}


# ---------------------------------------------------------------------------------------------
# FIR resampling with depthwise (transposed) convolutions


def _parse_padding(padding) -> tuple[int, int, int, int]:
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    return tuple(padding)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


class FIR:
    """``cuda_ops.upfirdn2d(x, f, up, down, padding, flip_filter, gain)`` precomputed for reuse.

    Same function, different ops: upsampling is a strided transposed depthwise convolution (the
    polyphase form: no zero-inserted intermediate, 1/up^2 of the multiplies), downsampling a strided
    depthwise convolution (only the kept outputs are computed), padding goes into the convolution.
    1-D filters of ``separable_min_taps`` or more taps run as two 1-D passes, shorter ones and 2-D
    filters as one 2-D pass (faster on oneDNN's channels_last depthwise kernels).
    """

    def __init__(self, f: torch.Tensor | None, up=1, down=1, padding=0, gain: float = 1.0,
                 flip_filter: bool = False, separable_min_taps: int = 8, fp32_on_cpu_bf16: bool = True):
        self.fp32_on_cpu_bf16 = fp32_on_cpu_bf16
        self.up = _pair(up)
        self.down = _pair(down)
        self.pad = _parse_padding(padding)   # x0, x1, y0, y1
        self.separable = False
        self.k2 = self.kx = self.ky = None    # true-convolution kernels (un-flipped), fp32
        if f is not None:
            f = f.detach().to(torch.float32)
            g = gain ** (f.ndim / 2)
            if f.ndim == 1:
                fx = f * g
                if f.numel() >= separable_min_taps:
                    self.separable = True
                    self.kx, self.ky = fx, fx
                else:
                    self.k2 = torch.outer(fx, fx)
            else:
                self.k2 = f * g
            # The kernels below are for a *true* convolution (F.conv2d correlates, so they get
            # flipped there); flip_filter asks upfirdn2d to correlate with f, i.e. to convolve with
            # f flipped.
            if flip_filter:
                if self.k2 is not None:
                    self.k2 = self.k2.flip([0, 1])
                else:
                    self.kx, self.ky = self.kx.flip(0), self.ky.flip(0)
        self._cache: dict = {}

    @property
    def taps(self) -> tuple[int, int]:
        if self.k2 is not None:
            return int(self.k2.shape[1]), int(self.k2.shape[0])
        if self.kx is not None:
            return int(self.kx.numel()), int(self.ky.numel())
        return 1, 1

    def _weights(self, c: int, dtype: torch.dtype, device) -> tuple:
        key = (c, dtype, device)
        if key not in self._cache:
            def dw(k, transpose):
                if k is None:
                    return None
                k = k if transpose else k.flip(list(range(k.ndim)))    # conv2d correlates
                return k.to(device=device, dtype=dtype).expand(c, 1, *k.shape).contiguous()
            up = self.up != (1, 1)
            if self.k2 is not None:
                self._cache[key] = (dw(self.k2, up), None, None)
            elif self.kx is not None:
                self._cache[key] = (None, dw(self.kx.reshape(1, -1), up), dw(self.ky.reshape(-1, 1), up))
            else:
                self._cache[key] = (None, None, None)
        return self._cache[key]

    def __call__(self, x: torch.Tensor, scale: torch.Tensor | None = None,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
        """Filter x [N, C, H, W].  ``scale`` [C] multiplies channel c's filter, ``bias`` [C] is added
        to the result (both folded into the depthwise convolution, so free); both need a filter."""
        if x.dtype == torch.bfloat16 and x.device.type == "cpu" and self.fp32_on_cpu_bf16:
            # oneDNN's bf16 depthwise (transposed) convolutions are several times slower than its fp32
            # ones; the two conversions cost less, and keep the filtering exact.
            return self(x.float(), scale=scale, bias=bias).to(torch.bfloat16)
        c = x.shape[1]
        k2, kx, ky = self._weights(c, x.dtype, x.device)
        (ux, uy), (dx, dy), (x0, x1, y0, y1) = self.up, self.down, self.pad
        if k2 is None and kx is None:            # no filter: pad / crop / subsample only
            if scale is not None or bias is not None:
                raise ValueError("scale/bias need a filter")
            if (ux, uy) != (1, 1):
                n, _, h, w = x.shape
                x = x.reshape(n, c, h, 1, w, 1)
                x = F.pad(x, [0, ux - 1, 0, 0, 0, uy - 1]).reshape(n, c, h * uy, w * ux)
            x = F.pad(x, [x0, x1, y0, y1])
            return x[:, :, ::dy, ::dx] if (dx, dy) != (1, 1) else x
        if scale is not None:
            s = scale.to(x.dtype).reshape(c, 1, 1, 1)
            if k2 is not None:
                k2 = k2 * s
            else:
                ky = ky * s
        if bias is not None:
            bias = bias.to(x.dtype)
        if k2 is not None:
            return self._apply(x, k2, (ux, uy), (dx, dy), (x0, x1, y0, y1), bias)
        x = self._apply(x, kx, (ux, 1), (dx, 1), (x0, x1, 0, 0), None)
        return self._apply(x, ky, (1, uy), (1, dy), (0, 0, y0, y1), bias)

    @staticmethod
    def _apply(x, k, up, down, pad, bias):
        c = x.shape[1]
        kh, kw = k.shape[2], k.shape[3]
        (ux, uy), (dx, dy), (x0, x1, y0, y1) = up, down, pad
        if (ux, uy) == (1, 1):
            if x0 == x1 and y0 == y1 and x0 >= 0 and y0 >= 0:
                return F.conv2d(x, k, bias, stride=(dy, dx), padding=(y0, x0), groups=c)
            x = F.pad(x, [x0, x1, y0, y1])
            return F.conv2d(x, k, bias, stride=(dy, dx), groups=c)
        if (dx, dy) != (1, 1):
            x = FIR._apply(x, k, up, (1, 1), pad, bias)
            return x[:, :, ::dy, ::dx]
        # Polyphase upsampling.  out[o] = sum_i x[i] k[o + s - u*i] with s = K-1-p0, which is the
        # full transposed convolution (padding 0) read from offset s; symmetric crops go into the
        # transposed convolution's padding, the rest is cropped / zero-padded afterwards.
        h, w = x.shape[2], x.shape[3]
        crops = []
        for n_in, u, kk, p0, p1 in ((w, ux, kw, x0, x1), (h, uy, kh, y0, y1)):
            full = (n_in - 1) * u + kk
            length = n_in * u + p0 + p1 - kk + 1
            s = kk - 1 - p0
            e = full - s - length
            p = max(0, min(s, e))
            crops.append((p, s - p, e - p))
        (px, lx, rx), (py, ly, ry) = crops
        extend = min(lx, rx, ly, ry) < 0                 # zero-padded output: add the bias after
        x = F.conv_transpose2d(x, k, None if extend else bias, stride=(uy, ux), padding=(py, px), groups=c)
        if lx or rx or ly or ry:
            x = F.pad(x, [-lx, -rx, -ly, -ry])
        if extend and bias is not None:
            x = x + bias.reshape(1, -1, 1, 1)
        return x


def fast_upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up=1, down=1, padding=0,
                   flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Drop-in for ``cuda_ops.upfirdn2d`` (same result to float rounding), see :class:`FIR`."""
    return FIR(f, up=up, down=down, padding=padding, gain=gain, flip_filter=flip_filter)(x)


# ---------------------------------------------------------------------------------------------
# StyleGAN2


def _affine(fc) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight.T, bias) of a linear FullyConnectedLayer with its gains applied."""
    if fc.activation != "linear" or fc.bias is None:
        raise NotImplementedError("affine layers are linear with bias")
    w = (fc.weight.detach().float() * fc.weight_gain).t().contiguous()
    b = fc.bias.detach().float() * fc.bias_gain
    return w, b


def _act(x: torch.Tensor, act: str, alpha: float, gain: float, clamp: float | None,
         gain_folded: bool) -> torch.Tensor:
    """In-place activation (+ gain unless folded into x already) + clamp."""
    if act == "lrelu":
        x = F.leaky_relu_(x, alpha)
    elif act == "relu":
        x = F.relu_(x)
    elif act != "linear":
        from cuda_ops.bias_act import activation
        x = activation(act).func(x, alpha)
    if not gain_folded and gain != 1:
        x = x.mul_(gain)
    if clamp is not None and clamp >= 0:
        x = x.clamp_(-clamp, clamp)
    return x


class _ModConv:
    """Shared machinery of a modulated convolution layer (StyleGAN2 SynthesisLayer / ToRGB and
    StyleGAN3 SynthesisLayer)."""

    def __init__(self, weight: torch.Tensor, demodulate: bool):
        self.weight = weight.detach().float()                     # [O, I, kh, kw]
        self.out_channels, self.in_channels, self.kh, self.kw = self.weight.shape
        self.demodulate = demodulate
        self.wsq = self.weight.square().sum(dim=[2, 3]) if demodulate else None   # [O, I]
        self._cache: dict = {}

    def weight_as(self, dtype, memory_format, transpose=False, fp16_norm=False):
        key = (dtype, memory_format, transpose, fp16_norm)
        if key not in self._cache:
            w = self.weight
            if fp16_norm:
                w = self.fp16_weight()
            if transpose:
                w = w.transpose(0, 1)
            self._cache[key] = w.to(dtype).contiguous(memory_format=memory_format)
        return self._cache[key]

    def fp16_weight(self):
        # NVIDIA's range guard for fp16 activations: scale each output filter to unit max-abs / fan-in
        # (demodulation cancels the factor).
        k = self.in_channels * self.kh * self.kw
        return self.weight * (1 / math.sqrt(k) / self.weight.abs().amax(dim=[1, 2, 3], keepdim=True))

    def dcoefs(self, styles: torch.Tensor, fp16_norm: bool = False) -> torch.Tensor:
        wsq = self.wsq
        if fp16_norm:
            wsq = self._cache.setdefault("wsq16", self.fp16_weight().square().sum(dim=[2, 3]))
        return (styles.square() @ wsq.t() + 1e-8).rsqrt()          # [N, O]


class _SG2Layer(_ModConv):
    def __init__(self, layer):
        super().__init__(layer.weight, demodulate=True)
        self.aw, self.ab = _affine(layer.affine)
        self.up = layer.up
        self.padding = layer.padding
        self.act, self.act_gain = layer.activation, float(layer.act_gain)
        from cuda_ops.bias_act import activation
        self.alpha = activation(self.act).default_alpha
        self.conv_clamp = layer.conv_clamp
        self.bias = layer.bias.detach().float()
        self.resolution = layer.resolution
        self.use_noise = layer.use_noise
        self.noise_const = self.noise_strength = None
        if layer.use_noise:
            self.noise_strength = float(layer.noise_strength.detach())
            self.noise_const = layer.noise_const.detach().float()
        if self.up > 1:
            # conv2d_resample's transposed-convolution branch, with flip_weight=False.
            f = layer.resample_filter
            fw, fh = (int(f.shape[-1]), int(f.shape[0])) if f.ndim == 2 else (f.numel(), f.numel())
            p, up = self.padding, self.up
            px0, px1 = p + (fw + up - 1) // 2 - (self.kw - 1), p + (fw - up) // 2 - (self.kw - up)
            py0, py1 = p + (fh + up - 1) // 2 - (self.kh - 1), p + (fh - up) // 2 - (self.kh - up)
            self.pxt, self.pyt = max(min(-px0, -px1), 0), max(min(-py0, -py1), 0)
            self.fir = FIR(f, padding=[px0 + self.pxt, px1 + self.pxt, py0 + self.pyt, py1 + self.pyt],
                           gain=up ** 2)

    def __call__(self, x, w, *, noise_mode, fused, gain=1.0, fp16_norm=False):
        n = x.shape[0]
        dtype, mf = x.dtype, _memory_format(x)
        styles = torch.addmm(self.ab, w, self.aw)                          # [N, I] fp32
        if fp16_norm:
            styles = styles / styles.abs().amax(dim=1, keepdim=True)
        g = self.act_gain * gain
        fold = self.act in _HOMOGENEOUS
        dg = self.dcoefs(styles, fp16_norm) * (g if fold else 1.0)         # [N, O]
        bg = self.bias * (g if fold else 1.0)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([n, 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const" and self.noise_strength != 0:
            noise = self.noise_const * self.noise_strength
        if noise is not None and fold:
            noise = noise * g
        if fused and n == 1:
            base = self.weight_as(torch.float32, torch.contiguous_format, fp16_norm=True) if fp16_norm \
                else self.weight
            wm = base * styles.reshape(1, -1, 1, 1) * dg.reshape(-1, 1, 1, 1)
            if self.up == 1:
                wm = wm.to(dtype).contiguous(memory_format=mf)
                y = F.conv2d(x, wm, bg.to(dtype), padding=self.padding)
            else:
                wm = wm.transpose(0, 1).to(dtype).contiguous(memory_format=mf)
                y = F.conv_transpose2d(x, wm, stride=self.up, padding=[self.pyt, self.pxt])
                y = self.fir(y, bias=bg)
        else:
            x = x * styles.to(dtype).reshape(n, -1, 1, 1)
            if self.up == 1:
                y = F.conv2d(x, self.weight_as(dtype, mf, fp16_norm=fp16_norm), padding=self.padding)
            else:
                y = F.conv_transpose2d(x, self.weight_as(dtype, mf, transpose=True, fp16_norm=fp16_norm),
                                       stride=self.up, padding=[self.pyt, self.pxt])
            if self.up > 1 and n == 1:
                y = self.fir(y, scale=dg[0], bias=bg)
            else:
                if self.up > 1:
                    y = self.fir(y)
                y = torch.addcmul(bg.to(dtype).reshape(1, -1, 1, 1), y, dg.to(dtype).reshape(n, -1, 1, 1))
        if noise is not None:
            y = y.add_(noise.to(dtype))
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return _act(y, self.act, self.alpha, g, clamp, gain_folded=fold)


class _SG2ToRGB(_ModConv):
    def __init__(self, layer):
        super().__init__(layer.weight, demodulate=False)
        self.aw, self.ab = _affine(layer.affine)
        self.aw, self.ab = self.aw * layer.weight_gain, self.ab * layer.weight_gain
        self.bias = layer.bias.detach().float()
        self.conv_clamp = layer.conv_clamp
        self.w2 = self.weight[:, :, 0, 0] if (self.kh, self.kw) == (1, 1) else None

    def __call__(self, x, w):
        n, c, h, wd = x.shape
        dtype = x.dtype
        styles = torch.addmm(self.ab, w, self.aw)                          # [N, I]
        if self.w2 is None:                                                # k > 1: plain conv
            y = F.conv2d(x * styles.to(dtype).reshape(n, -1, 1, 1), self.weight_as(dtype, _memory_format(x)))
            y = y + self.bias.to(dtype).reshape(1, -1, 1, 1)
        else:
            wn = (self.w2.unsqueeze(0) * styles.unsqueeze(1)).to(dtype)    # [N, O, I]
            b = self.bias.to(dtype)
            if _memory_format(x) == torch.channels_last:
                y = torch.baddbmm(b.reshape(1, 1, -1), x.permute(0, 2, 3, 1).reshape(n, h * wd, c),
                                  wn.transpose(1, 2))                      # [N, HW, O]
                y = y.reshape(n, h, wd, -1).permute(0, 3, 1, 2)
            else:
                y = torch.baddbmm(b.reshape(1, -1, 1), wn, x.reshape(n, c, h * wd)).reshape(n, -1, h, wd)
        if self.conv_clamp is not None and self.conv_clamp >= 0:
            y = y.clamp_(-self.conv_clamp, self.conv_clamp)
        return y


class _SG2Skip:
    """Resnet skip: Conv2dLayer(1x1, bias=False, up=2), i.e. a 1x1 conv then upsample2d."""

    def __init__(self, layer):
        if layer.weight.shape[2:] != (1, 1) or layer.up != 2 or layer.down != 1 or layer.bias is not None \
                or layer.activation != "linear":
            raise NotImplementedError("unexpected resnet skip layer")
        self.weight = layer.weight.detach().float() * layer.weight_gain
        fw = _filter_taps(layer.resample_filter)
        self.fir = FIR(layer.resample_filter, up=2, padding=[(fw + 1) // 2, (fw - 2) // 2] * 2, gain=4)
        self.act_gain = float(layer.act_gain)
        self.conv_clamp = layer.conv_clamp
        self._cache = {}

    def __call__(self, x, gain):
        key = (x.dtype, _memory_format(x))
        if key not in self._cache:
            self._cache[key] = self.weight.to(x.dtype).contiguous(memory_format=key[1])
        y = self.fir(F.conv2d(x, self._cache[key]))
        g = self.act_gain * gain
        if g != 1:
            y = y.mul_(g)
        if self.conv_clamp is not None:
            y = y.clamp_(-self.conv_clamp * gain, self.conv_clamp * gain)
        return y


def _filter_taps(f):
    return int(f.shape[-1])


def _memory_format(x: torch.Tensor):
    if x.dim() == 4 and x.shape[1] > 1 and not x.is_contiguous() \
            and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class _SG2Block:
    def __init__(self, block):
        self.in_channels, self.out_channels = block.in_channels, block.out_channels
        self.architecture, self.is_last, self.use_fp16 = block.architecture, block.is_last, block.use_fp16
        self.num_conv, self.num_torgb = block.num_conv, block.num_torgb
        self.const = block.const.detach().float() if block.in_channels == 0 else None
        self.conv0 = _SG2Layer(block.conv0) if block.in_channels != 0 else None
        self.conv1 = _SG2Layer(block.conv1)
        self.torgb = _SG2ToRGB(block.torgb) if hasattr(block, "torgb") else None
        self.skip = _SG2Skip(block.skip) if hasattr(block, "skip") else None
        f = block.resample_filter
        fw = _filter_taps(f)
        # upsample2d(img, f): padding ((fw+1)//2, (fw-2)//2) per axis, gain 4.
        self.img_up = FIR(f, up=2, padding=[(fw + 1) // 2, (fw - 2) // 2, (fw + 1) // 2, (fw - 2) // 2],
                          gain=4)
        # cuda_ops.upsample2d_clamped: the border repeated outward by m samples, upsampled, 2m cropped off.
        self.img_clamp = -(-((fw + 1) // 2) // 2) if block.clamp_image_border else 0

    def upsample_image(self, img):
        m = self.img_clamp
        if not m:
            return self.img_up(img)
        fmt = _memory_format(img)
        y = self.img_up(F.pad(img, [m, m, m, m], mode="replicate").contiguous(memory_format=fmt))
        return y[..., 2 * m:y.shape[-2] - 2 * m, 2 * m:y.shape[-1] - 2 * m].contiguous(memory_format=fmt)


class _SG2Executor:
    def __init__(self, synthesis):
        self.blocks = [_SG2Block(b) for b in synthesis.blocks()]
        self.num_ws, self.w_dim = synthesis.num_ws, synthesis.w_dim

    def __call__(self, ws, *, noise_mode, dtype_for, memory_format, fused, block_hook=None, max_resolution=None):
        n = ws.shape[0]
        x = img = None
        w_idx = 0
        for blk in self.blocks:
            dtype = dtype_for(blk.use_fp16)
            fp16_norm = dtype == torch.float16
            bws = ws.narrow(1, w_idx, blk.num_conv + blk.num_torgb).unbind(1)
            w_idx += blk.num_conv
            if blk.const is not None:
                x = blk.const.to(dtype).unsqueeze(0).contiguous(memory_format=memory_format)
                x = x.expand(n, -1, -1, -1).contiguous(memory_format=memory_format)
            else:
                x = x.to(dtype=dtype).contiguous(memory_format=memory_format)
            f0 = fused(blk.conv0, x, n) if blk.conv0 is not None else None
            if blk.conv0 is None:
                x = blk.conv1(x, bws[0], noise_mode=noise_mode, fused=fused(blk.conv1, x, n),
                              fp16_norm=fp16_norm)
                i = 1
            elif blk.architecture == "resnet":
                y = blk.skip(x, gain=np.sqrt(0.5))
                x = blk.conv0(x, bws[0], noise_mode=noise_mode, fused=f0, fp16_norm=fp16_norm)
                x = blk.conv1(x, bws[1], noise_mode=noise_mode, fused=fused(blk.conv1, x, n),
                              gain=np.sqrt(0.5), fp16_norm=fp16_norm)
                x = y.add_(x)
                i = 2
            else:
                x = blk.conv0(x, bws[0], noise_mode=noise_mode, fused=f0, fp16_norm=fp16_norm)
                x = blk.conv1(x, bws[1], noise_mode=noise_mode, fused=fused(blk.conv1, x, n),
                              fp16_norm=fp16_norm)
                i = 2
            if img is not None:
                img = blk.upsample_image(img)
            if blk.torgb is not None:
                y = blk.torgb(x, bws[i]).to(torch.float32)
                # The image in the activations' layout: its upsampling runs 4x faster channels_last on CPU.
                img = y.contiguous(memory_format=memory_format) if img is None else img.add_(y)
            if block_hook is not None:
                x, img = block_hook(x.shape[-1], x, img)
            if max_resolution is not None and x.shape[-1] >= max_resolution and img is not None:
                break                          # a draft: the picture as it stands at this block
        return img.contiguous()


# ---------------------------------------------------------------------------------------------
# StyleGAN3


class _SG3Layer(_ModConv):
    def __init__(self, layer):
        demod = not layer.is_torgb
        super().__init__(layer.weight, demodulate=False)
        self.demodulate = demod
        self.is_torgb = layer.is_torgb
        self.use_fp16 = layer.use_fp16
        self.aw, self.ab = _affine(layer.affine)
        if layer.is_torgb:
            sc = 1 / np.sqrt(layer.in_channels * layer.conv_kernel ** 2)
            self.aw, self.ab = self.aw * sc, self.ab * sc
        if demod:
            self.weight = self.weight * self.weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
            self.wsq = self.weight.square().sum(dim=[2, 3])
        self.input_gain = layer.magnitude_ema.detach().float().rsqrt()
        self.padding = layer.conv_kernel - 1
        self.bias = layer.bias.detach().float()
        self.gain = 1.0 if layer.is_torgb else float(np.sqrt(2))
        self.slope = 1.0 if layer.is_torgb else 0.2
        self.clamp = layer.conv_clamp
        up, down = layer.up_factor, layer.down_factor
        self.fir_up = FIR(layer.up_filter, up=up, padding=layer.padding, gain=up ** 2 * self.gain)
        self.fir_down = FIR(layer.down_filter, down=down)
        self.has_up_filter = layer.up_filter is not None

    def dcoefs(self, styles, fp16_norm=False):
        return (styles.square() @ self.wsq.t() + 1e-8).rsqrt()

    def __call__(self, x, w, *, fused):
        n = x.shape[0]
        dtype, mf = x.dtype, _memory_format(x)
        styles = torch.addmm(self.ab, w, self.aw)
        if self.demodulate:
            styles = styles * styles.square().mean().rsqrt()
            d = self.dcoefs(styles)
        else:
            d = None
        s_in = styles * self.input_gain
        # The lrelu gain is folded into the up filter (lrelu(g z) = g lrelu(z)); without an up filter
        # it is applied after the activation.
        if fused and n == 1:
            wm = self.weight * s_in.reshape(1, -1, 1, 1)
            if d is not None:
                wm = wm * d.reshape(-1, 1, 1, 1)
            wm = wm.to(dtype).contiguous(memory_format=mf)
            y = F.conv2d(x, wm, self.bias.to(dtype), padding=self.padding)
        else:
            y = F.conv2d(x * s_in.to(dtype).reshape(n, -1, 1, 1), self.weight_as(dtype, mf), padding=self.padding)
            b = self.bias.to(dtype).reshape(1, -1, 1, 1)
            y = torch.addcmul(b, y, d.to(dtype).reshape(n, -1, 1, 1)) if d is not None else y.add_(b)
        y = self.fir_up(y)
        gain = 1.0 if self.has_up_filter else self.gain
        if self.slope != 1:
            y = F.leaky_relu_(y, self.slope)
        if gain != 1:
            y = y.mul_(gain)
        if self.clamp is not None:
            y = y.clamp_(-self.clamp, self.clamp)
        return self.fir_down(y)


def _call_module(module, *args):
    return module(*args)


# StyleGAN3's input layer (numpy sizes, in-place matrix edits) is cheap and upsets dynamo, so a compiled synthesis
# runs it eagerly.  The dynamo-disabled wrapper is made when a compile is asked for (`_enable_compile`): importing
# torch._dynamo takes over a second, which an eager run should not pay at start-up.
_run_eager = _call_module


def _enable_compile():
    global _run_eager
    if _run_eager is _call_module:
        _run_eager = torch.compiler.disable(_call_module)


class _SG3Executor:
    def __init__(self, synthesis):
        self.input = synthesis.input                 # live module: its `transform` is user-settable
        self.layers = [_SG3Layer(getattr(synthesis, name)) for name in synthesis.layer_names]
        self.output_scale = synthesis.output_scale
        self.num_ws, self.w_dim = synthesis.num_ws, synthesis.w_dim

    def __call__(self, ws, *, noise_mode, dtype_for, memory_format, fused):
        ws = ws.unbind(1)
        x = _run_eager(self.input, ws[0])
        for layer, w in zip(self.layers, ws[1:]):
            x = x.to(dtype_for(layer.use_fp16)).contiguous(memory_format=memory_format)
            x = layer(x, w, fused=fused(layer, x, x.shape[0]))
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32).contiguous()


# ---------------------------------------------------------------------------------------------
# Public API


_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class FastSynthesis:
    """Fast inference for ``G.synthesis`` (StyleGAN2 or StyleGAN3, any resolution).

    precision: ``auto`` | ``fp32`` | ``bf16`` | ``fp16``.  ``auto``: CUDA -> fp16 for the layers the
        checkpoint marks fp16 (fp32 elsewhere, as NVIDIA runs it), CPU -> bf16 where the CPU has AMX
        (several times fp32 speed), else fp32 (avx512_bf16 alone measured slower than fp32).
        Explicit ``fp16`` on CUDA also uses the checkpoint's fp16 layers only; ``bf16`` applies to
        every layer.
    channels_last: None (= True) or bool.
    fused_modconv: ``auto`` (per layer at batch 1: modulate the weights when they are smaller than the
        activations, else the activations; batch > 1 always activations), True or False.
    compile: wrap the synthesis in ``torch.compile`` (first call compiles, about a minute on CPU).
    backend: ``fast`` (the re-expressed ops, default) or ``native`` (``G.synthesis`` with the chosen
        compute dtype: the exact ops, for comparison).
    """

    def __init__(self, G, device=None, precision: str = "auto", channels_last: bool | None = None,
                 compile: bool = False, fused_modconv="auto", backend: str = "fast"):
        synthesis = getattr(G, "synthesis", G)
        cur = _module_device(synthesis)
        self.device = torch.device(device) if device is not None else cur
        if self.device != cur:
            synthesis = copy.deepcopy(synthesis).to(self.device)
        self.synthesis = synthesis
        self.kind = getattr(G, "kind", "stylegan3" if hasattr(synthesis, "layer_names") else "stylegan2")
        self.num_ws, self.w_dim = synthesis.num_ws, synthesis.w_dim
        self.img_resolution = int(synthesis.img_resolution)
        if precision not in ("auto", *_DTYPES):
            raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
        if backend not in ("fast", "native"):
            raise ValueError(f"backend must be 'fast' or 'native', got {backend!r}")
        if fused_modconv not in ("auto", True, False):
            raise ValueError("fused_modconv must be 'auto', True or False")
        self.backend = backend
        self.fused_modconv = fused_modconv
        self.requested_precision = precision
        self.precision = self._resolve_precision(precision)
        self.channels_last = True if channels_last is None else bool(channels_last)
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.compile = bool(compile)
        self._executor = None
        self.refresh()

    # -- configuration --------------------------------------------------------------------------

    def configure(self, precision: str | None = None, channels_last: bool | None = None,
                  fused_modconv=None) -> None:
        """Change the execution settings in place (None keeps one); the per-layer weight copies follow on the
        next call, those of a precision no longer used are dropped."""
        if fused_modconv is not None:
            if fused_modconv not in ("auto", True, False):
                raise ValueError("fused_modconv must be 'auto', True or False")
            self.fused_modconv = fused_modconv
        if channels_last is not None:
            self.channels_last = bool(channels_last)
            self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        if precision is not None and precision != self.precision:
            self.precision = self._resolve_precision(precision)
            self.refresh()

    def _has_fp16_layers(self) -> bool:
        s = self.synthesis
        mods = s.blocks() if hasattr(s, "blocks") else [getattr(s, n) for n in s.layer_names]
        return any(getattr(m, "use_fp16", False) for m in mods)

    def _resolve_precision(self, precision: str) -> str:
        if self.device.type == "cuda":
            if precision == "auto":
                return "fp16" if self._has_fp16_layers() else "fp32"
            return precision
        if precision == "auto":
            return "bf16" if cpu_bf16_support()["amx"] else "fp32"
        if precision == "fp16":
            raise ValueError("fp16 is for CUDA; use bf16 or fp32 on CPU")
        return precision

    def _dtype_for(self, layer_uses_fp16: bool) -> torch.dtype:
        if self.precision == "fp16":
            # NVIDIA's mixed precision: only the layers the checkpoint trained in fp16.
            return torch.float16 if layer_uses_fp16 else torch.float32
        return _DTYPES[self.precision]

    def _fused(self, layer, x, n) -> bool:
        if self.fused_modconv != "auto":
            return bool(self.fused_modconv) and n == 1
        if n != 1:
            return False
        return layer.weight.numel() <= x[0].numel()

    def refresh(self) -> None:
        """Re-read the weights from the network (after editing its parameters)."""
        with torch.no_grad():
            if self.backend == "native":
                self._executor = None
            elif self.kind == "stylegan2":
                self._executor = _SG2Executor(self.synthesis)
            elif self.kind == "stylegan3":
                self._executor = _SG3Executor(self.synthesis)
            else:
                raise ValueError(f"unknown generator kind {self.kind!r}")
        self._compiled = None

    def describe(self) -> str:
        bf = cpu_bf16_support() if self.device.type == "cpu" else None
        parts = [f"{self.kind} on {self.device.type}", f"backend={self.backend}"]
        if self.precision == "fp16":
            parts.append("precision=fp16 (checkpoint's fp16 layers) + fp32")
        else:
            parts.append(f"precision={self.precision}")
        if self.requested_precision == "auto" and bf is not None:
            parts.append(f"(auto: amx={bf['amx']}, avx512_bf16={bf['avx512_bf16']})")
        parts.append("channels_last" if self.channels_last else "contiguous")
        if self.backend == "fast":
            parts.append(f"fused_modconv={self.fused_modconv}")
            parts.append("polyphase FIR")
        parts.append("torch.compile" if self.compile else "eager")
        return ", ".join(parts)

    # -- running ------------------------------------------------------------------------------------

    def _forward(self, ws: torch.Tensor, noise_mode: str = "const", block_hook=None,
                 max_resolution=None) -> torch.Tensor:
        staged = block_hook is not None or max_resolution is not None
        if staged and not self.supports_block_hook:
            raise ValueError("block_hook and max_resolution need the fast StyleGAN2 path")
        if staged:
            return self._executor(ws, noise_mode=noise_mode, dtype_for=self._dtype_for,
                                  memory_format=self.memory_format, fused=self._fused, block_hook=block_hook,
                                  max_resolution=max_resolution)
        if self.backend == "native":
            cd = None if self.precision == "fp16" else _DTYPES[self.precision]
            force_fp32 = self.precision == "fp32"
            fm = None if self.fused_modconv == "auto" else bool(self.fused_modconv)
            img = self.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32, fused_modconv=fm,
                                 compute_dtype=cd)
            return img.to(torch.float32).contiguous()
        return self._executor(ws, noise_mode=noise_mode, dtype_for=self._dtype_for,
                              memory_format=self.memory_format, fused=self._fused)

    @property
    def supports_block_hook(self) -> bool:
        """Whether __call__ takes a block_hook (the fast StyleGAN2 path)."""
        return self.backend == "fast" and self.kind == "stylegan2"

    def __call__(self, ws: torch.Tensor, noise_mode: str = "const", block_hook=None,
                 max_resolution: int | None = None) -> torch.Tensor:
        """ws [N, num_ws, w_dim] -> images.  block_hook(resolution, x, img) -> (x, img), called after every
        synthesis block (fast StyleGAN2 path), may transform the features and the image so far: layer
        transformations ("network bending").  max_resolution (fast StyleGAN2 path): stop after the first block
        of at least that resolution and return the picture as it stands there (a draft at a fraction of the
        cost; the skip architecture's image is complete at every block)."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        ws = ws.to(device=self.device, dtype=torch.float32)
        with torch.inference_mode():
            if max_resolution is not None and max_resolution >= self.img_resolution:
                max_resolution = None
            if block_hook is not None or max_resolution is not None:
                return self._forward(ws, noise_mode, block_hook, max_resolution)
            if self.compile and self._compiled is None:
                # One eager call first fills the per-layer weight caches, so that the compiled graph
                # sees them as constants (otherwise the second call recompiles).
                out = self._forward(ws, noise_mode)
                _enable_compile()
                self._compiled = torch.compile(self._forward, dynamic=False)
                return out
            fn = self._compiled if self._compiled is not None else self._forward
            return fn(ws, noise_mode)


class FastMapping:
    """Inference for a ``MappingNetwork`` (z [, c] -> w) from a snapshot of its weights: the same function to float
    rounding, for the steering's per-frame calls.

    The module recomputes its scaled weights and the latent bank's normalisation on every call, and each of those
    small elementwise ops wakes every OpenMP thread: 1.1 ms per call on one thread and 4.3 ms on two for the
    built-in model (batch 1).  Here the layer gains (and lrelu's gain) are folded into weights kept transposed,
    and the bank is normalised once.  Build it again (or call ``refresh()``) after changing the module's weights.
    """

    def __init__(self, mapping):
        self.mapping = mapping
        self.refresh()

    def refresh(self) -> None:
        from cuda_ops.bias_act import activation
        m = self.mapping
        self.z_dim, self.c_dim, self.num_ws = m.z_dim, m.c_dim, m.num_ws
        self.layers: list[tuple[torch.Tensor, torch.Tensor, str, float]] | None = []
        with torch.no_grad():
            for i in range(m.num_layers):
                fc = getattr(m, f"fc{i}")
                if fc.activation not in _HOMOGENEOUS or fc.bias is None:
                    self.layers = None          # an activation gain cannot fold into: run the module itself
                    break
                gain = activation(fc.activation).default_gain
                w = (fc.weight.detach().float() * (fc.weight_gain * gain)).t().contiguous()
                b = fc.bias.detach().float() * (fc.bias_gain * gain)
                self.layers.append((w, b.unsqueeze(0), fc.activation, activation(fc.activation).default_alpha))
            self.bank = None
            if getattr(m, "latent_bank", 0):
                self.bank = m.z_bank.detach().float()
                self.bank_unit_t = F.normalize(self.bank, dim=1).t().contiguous()
                self.sharpness = float(m.latent_bank_sharpness)
            self.w_avg = m.w_avg.detach().float() if getattr(m, "w_avg_beta", None) is not None \
                and hasattr(m, "w_avg") else None

    def __call__(self, z: torch.Tensor | None, c: torch.Tensor | None = None, truncation_psi: float = 1,
                 truncation_cutoff: int | None = None) -> torch.Tensor:
        m = self.mapping
        if self.layers is None or self.c_dim > 0:      # conditional models: the module (its embedding) as it is
            with torch.no_grad():
                return m(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        if self.z_dim > 0 and (z is None or z.ndim != 2 or z.shape[1] != self.z_dim):
            raise ValueError(f"z must have shape [N, {self.z_dim}], got {None if z is None else tuple(z.shape)}")
        with torch.no_grad():
            x = z.to(torch.float32)
            if self.bank is not None:
                cosine = F.normalize(x, dim=1) @ self.bank_unit_t
                x = torch.softmax(cosine * self.sharpness, dim=1) @ self.bank
            x = normalize_2nd_moment(x)
            for w, b, act, alpha in self.layers:
                x = torch.addmm(b, x, w)
                if act == "lrelu":
                    x = F.leaky_relu_(x, alpha)
                elif act == "relu":
                    x = F.relu_(x)
            if self.num_ws is None:
                return x
            return broadcast_ws(x, self.num_ws, self.w_avg, truncation_psi, truncation_cutoff)


def _module_device(module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")

