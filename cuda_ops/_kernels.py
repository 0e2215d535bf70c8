"""CUDA implementations of upfirdn2d, bias_act and filtered_lrelu: autograd Functions over the compiled
kernels (cuda_ops/csrc).  The public functions in cuda_ops dispatch here (see cuda_ops/_dispatch.py); the
functions below take the same arguments as the reference ops and give the same results to float rounding.

Kernel interface (cuda_ops/csrc/bindings.cpp), all outputs allocated here:
    ext.chain(x, bias, taps, y, mask, stages, gain, slope, clamp, act)      upfirdn2d / filtered_lrelu
    ext.bias_act(x, b, g1, g2, y, mode, act, alpha, gain, clamp, inner, channels)
    ext.mask_mul(g, mask, y, gain, slope)

Gradients:
* upfirdn2d is linear in x; its adjoint is again an upfirdn2d: taps reversed, up and down swapped, leading
  padding K - 1 - pad0, output size = the input size.  The backward calls the same Function, so every
  order of derivative works.  Gradients with respect to the filter are not computed here: the dispatcher
  sends calls whose filter requires grad to the reference op.
* bias_act: the forward saves x and b; the first derivative is a kernel (`_BiasActGrad`), whose own
  backward uses the second-derivative kernel (enough for R1's double backward; a third derivative raises).
* filtered_lrelu: the fused forward writes a one-byte code per pixel of the activated intermediate
  (negative / positive / clamped).  The backward is composed: the adjoint of the down filter (upfirdn2d),
  the mask's derivative (`_MaskMul`), the adjoint of the up filter (upfirdn2d), so it is differentiable
  once more with respect to the incoming gradient (the second derivative with respect to x is zero, as
  for the reference: leaky ReLU and clamp are piecewise linear).
"""
from __future__ import annotations

import math

import torch

from cuda_ops.bias_act import activation
from cuda_ops.upfirdn2d import _pair, filter_size, parse_padding

ACT_IDS = {"linear": 0, "relu": 1, "lrelu": 2, "tanh": 3, "sigmoid": 4, "elu": 5, "selu": 6, "softplus": 7,
           "swish": 8}
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
MAX_DIM = 2 ** 31 - 1

_backend = None  # tests put the CPU emulator here (tests/cuda_emulator.py)


def _ext():
    if _backend is not None:
        return _backend
    from cuda_ops import _build
    return _build.require_extension()


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _format(x: torch.Tensor) -> torch.memory_format:
    """channels_last when x is stored that way (and not also plain contiguous), else contiguous."""
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def is_dense(t: torch.Tensor) -> bool:
    """No gaps and no overlaps in memory (some permutation of a contiguous layout)."""
    if t.is_contiguous() or (t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last)):
        return True
    expected = 1
    for stride, size in sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _empty(shape, like: torch.Tensor, fmt, dtype=None) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device, memory_format=fmt)


# ---------------------------------------------------------------------------------------------------------
# Filter taps (correlation form, gain folded in), cached per filter tensor and call parameters.

class _Taps:
    """Taps oriented for correlation: 2-D [kh, kw], or 1-D [k] applied along x and then y."""
    __slots__ = ("g", "flat", "kw", "kh", "sep", "_rev", "_joined")

    def __init__(self, g: torch.Tensor):
        self.g = g
        self.sep = g.ndim == 1
        if self.sep:
            self.kw = self.kh = int(g.shape[0])
            self.flat = torch.cat([g, g]).contiguous()
        else:
            self.kh, self.kw = int(g.shape[0]), int(g.shape[1])
            self.flat = g.reshape(-1).contiguous()
        self._rev = None
        self._joined = {}

    def reversed(self) -> "_Taps":
        """The taps of the adjoint (reversed along every axis)."""
        if self._rev is None:
            self._rev = _Taps(self.g.flip(list(range(self.g.ndim))))
        return self._rev

    def joined(self, other: "_Taps") -> torch.Tensor:
        """self.flat followed by other.flat (filtered_lrelu's up and down taps in one buffer)."""
        hit = self._joined.get(id(other))
        if hit is None or hit[0] is not other:
            hit = (other, torch.cat([self.flat, other.flat]))
            self._joined[id(other)] = hit
        return hit[1]

    def stages(self, upx, upy, downx, downy, padx, pady, tap_off=0, act_last=False) -> list[int]:
        if not self.sep:
            return [upx, upy, downx, downy, padx, pady, self.kw, self.kh, tap_off, int(act_last)]
        return [upx, 1, downx, 1, padx, 0, self.kw, 1, tap_off, 0,
                1, upy, 1, downy, 0, pady, 1, self.kh, tap_off + self.kw, int(act_last)]


_TAPS_CACHE: dict = {}
_TAPS_CACHE_MAX = 256


def _tensor_key(t: torch.Tensor | None):
    if t is None:
        return None
    try:
        return (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype, t.device, t._version)
    except Exception:  # inference tensors have no version counter, fake tensors no data: no caching
        return False


def make_taps(f: torch.Tensor | None, gain: float, flip_filter: bool, dtype: torch.dtype,
              device: torch.device) -> _Taps:
    """The reference's filter handling: None -> [[1]]; f * gain ** (f.ndim / 2); flipped unless
    flip_filter (the reference convolves, the kernel correlates)."""
    key = _tensor_key(f)
    if key is not False:
        key = (key, float(gain), bool(flip_filter), dtype, device)
        hit = _TAPS_CACHE.get(key)
        if hit is not None:
            return hit[1]
    src = torch.ones([1, 1]) if f is None else f
    g = src.detach().to(device=device, dtype=dtype) * (gain ** (src.ndim / 2))
    if not flip_filter:
        g = g.flip(list(range(g.ndim)))
    taps = _Taps(g.contiguous())
    if key is not False:
        if len(_TAPS_CACHE) >= _TAPS_CACHE_MAX:
            _TAPS_CACHE.pop(next(iter(_TAPS_CACHE)))
        _TAPS_CACHE[key] = (f, taps)  # keeps f alive, so its data pointer cannot be reused meanwhile
    return taps


# ---------------------------------------------------------------------------------------------------------
# upfirdn2d

def _run_upfirdn(x: torch.Tensor, taps: _Taps, p: tuple) -> torch.Tensor:
    upx, upy, downx, downy, padx, pady, out_h, out_w = p
    fmt = _format(x)
    y = _empty([x.shape[0], x.shape[1], out_h, out_w], x, fmt)
    stages = taps.stages(upx, upy, downx, downy, padx, pady)
    _ext().chain(x, None, taps.flat, y, None, stages, 1.0, 0.0, -1.0, False)
    return y


class _Upfirdn2d(torch.autograd.Function):
    """y = upfirdn2d in correlation form; p = (upx, upy, downx, downy, padx0, pady0, out_h, out_w)."""

    @staticmethod
    def forward(ctx, x, taps, p):
        ctx.taps = taps
        ctx.p = p
        ctx.in_hw = (int(x.shape[2]), int(x.shape[3]))
        return _run_upfirdn(x, taps, p)

    @staticmethod
    def backward(ctx, dy):
        if not ctx.needs_input_grad[0]:
            return None, None, None
        upx, upy, downx, downy, padx, pady, _, _ = ctx.p
        taps = ctx.taps
        p = (downx, downy, upx, upy, taps.kw - 1 - padx, taps.kh - 1 - pady, *ctx.in_hw)
        return _Upfirdn2d.apply(dy, taps.reversed(), p), None, None


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up=1, down=1, padding=0, flip_filter: bool = False,
              gain: float = 1.0) -> torch.Tensor:
    """CUDA upfirdn2d; same arguments and result as cuda_ops.upfirdn2d.upfirdn2d_ref."""
    if x.ndim != 4:
        raise ValueError(f"upfirdn2d expects a 4-D input [N, C, H, W], got shape {tuple(x.shape)}")
    upx, upy = _pair(up)
    downx, downy = _pair(down)
    if min(upx, upy, downx, downy) < 1:
        raise ValueError(f"up and down factors must be >= 1, got up={up} down={down}")
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    out_w = (x.shape[3] * upx + px0 + px1 - fw) // downx + 1
    out_h = (x.shape[2] * upy + py0 + py1 - fh) // downy + 1
    if out_w < 1 or out_h < 1:
        raise ValueError(f"upfirdn2d: input {tuple(x.shape)} with up={up}, down={down}, padding={padding} and a "
                         f"{fw}x{fh} filter leaves no output pixels")
    taps = make_taps(f, gain, flip_filter, _acc(x.dtype), x.device)
    return _Upfirdn2d.apply(x, taps, (upx, upy, downx, downy, px0, py0, out_h, out_w))


# ---------------------------------------------------------------------------------------------------------
# bias_act

def _layout_for_bias(x: torch.Tensor, dim: int):
    """(x, inner): x dense in memory (contiguous, or channels_last when dim is the channel axis) and the
    number of consecutive elements sharing one bias value."""
    if x.is_contiguous():
        return x, math.prod(x.shape[dim + 1:])
    if x.ndim == 4 and dim == 1 and x.is_contiguous(memory_format=torch.channels_last):
        return x, 1
    x = x.contiguous()
    return x, math.prod(x.shape[dim + 1:])


def _same_layout(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """t with exactly like's strides (the kernels index every operand by the same memory offset)."""
    if t.stride() == like.stride():
        return t
    out = torch.empty_like(like, dtype=t.dtype)  # preserve_format keeps dense strides
    out.copy_(t)
    return out


class _BiasActGrad(torch.autograd.Function):
    """dx = dy * d/dz act(z) * gain (zero where clamped), z = x + b."""

    @staticmethod
    def forward(ctx, dy, x, b, cfg):
        dy = _same_layout(dy, x)
        dx = torch.empty_like(x)
        act, alpha, gain, clamp, inner, channels, dim = cfg
        _ext().bias_act(x, b, dy, None, dx, 1, act, alpha, gain, clamp, inner, channels)
        ctx.save_for_backward(dy, x, b)
        ctx.cfg = cfg
        return dx

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, ggx):
        dy, x, b = ctx.saved_tensors
        act, alpha, gain, clamp, inner, channels, dim = ctx.cfg
        ggx = _same_layout(ggx, x)
        d_dy = d_x = d_b = None
        if ctx.needs_input_grad[0]:
            d_dy = torch.empty_like(x)
            _ext().bias_act(x, b, ggx, None, d_dy, 1, act, alpha, gain, clamp, inner, channels)
        if ctx.needs_input_grad[1] or (b is not None and ctx.needs_input_grad[2]):
            d_x = torch.empty_like(x)
            _ext().bias_act(x, b, dy, ggx, d_x, 2, act, alpha, gain, clamp, inner, channels)
            if b is not None and ctx.needs_input_grad[2]:
                d_b = d_x.sum([d for d in range(x.ndim) if d != dim])
            if not ctx.needs_input_grad[1]:
                d_x = None
        return d_dy, d_x, d_b, None


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, cfg):
        act, alpha, gain, clamp, inner, channels, dim = cfg
        y = torch.empty_like(x)
        _ext().bias_act(x, b, None, None, y, 0, act, alpha, gain, clamp, inner, channels)
        ctx.save_for_backward(x, b)
        ctx.cfg = cfg
        return y

    @staticmethod
    def backward(ctx, dy):
        x, b = ctx.saved_tensors
        dim = ctx.cfg[-1]
        dx = db = None
        if ctx.needs_input_grad[0] or (b is not None and ctx.needs_input_grad[1]):
            dx = _BiasActGrad.apply(dy, x, b, ctx.cfg)
            if b is not None and ctx.needs_input_grad[1]:
                db = dx.sum([d for d in range(x.ndim) if d != dim])
        return (dx if ctx.needs_input_grad[0] else None), db, None


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None) -> torch.Tensor:
    """CUDA bias_act; same arguments and result as cuda_ops.bias_act.bias_act_ref."""
    spec = activation(act)
    alpha = spec.default_alpha if alpha is None else float(alpha)
    gain = spec.default_gain if gain is None else float(gain)
    clamp = float(clamp) if clamp is not None and clamp >= 0 else -1.0
    if b is not None:
        if b.ndim != 1 or x.ndim == 0 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias of shape {tuple(b.shape)} does not match dimension {dim} of input "
                             f"{tuple(x.shape)}")
        dim = dim % x.ndim
        x, inner = _layout_for_bias(x, dim)
        channels = int(x.shape[dim])
        b = b.to(x.dtype).contiguous()
    else:
        dim = dim % x.ndim if x.ndim else 0
        x = x if is_dense(x) else x.contiguous()
        inner, channels = 1, 1
    cfg = (ACT_IDS[act], alpha, gain, clamp, int(inner), channels, dim)
    return _BiasAct.apply(x, b, cfg)


# ---------------------------------------------------------------------------------------------------------
# filtered_lrelu

class _MaskMul(torch.autograd.Function):
    """g * (gain where mask == 1, gain * slope where mask == 0, 0 where mask == 2): linear in g, its own
    adjoint."""

    @staticmethod
    def forward(ctx, g, mask, gain, slope):
        y = torch.empty_like(g)
        _ext().mask_mul(g, mask, y, gain, slope)
        ctx.save_for_backward(mask)
        ctx.gs = (gain, slope)
        return y

    @staticmethod
    def backward(ctx, gy):
        mask, = ctx.saved_tensors
        return _MaskMul.apply(gy, mask, *ctx.gs), None, None, None


class _FilteredLrelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, tu, td, cfg):
        up, down, px0, py0, mid_h, mid_w, out_h, out_w, gain, slope, clamp, use_down, need_mask = cfg
        fmt = _format(x)
        y = _empty([x.shape[0], x.shape[1], out_h, out_w], x, fmt)
        mask = _empty([x.shape[0], x.shape[1], mid_h, mid_w], x, fmt, torch.uint8).zero_() if need_mask else None
        stages = tu.stages(up, up, 1, 1, px0, py0, 0, act_last=True)
        taps = tu.flat
        if use_down:
            stages += td.stages(1, 1, down, down, 0, 0, tap_off=int(tu.flat.numel()))
            taps = tu.joined(td)
        _ext().chain(x, b, taps, y, mask, stages, gain, slope, clamp, True)
        ctx.save_for_backward(mask)
        ctx.taps = (tu, td)
        ctx.cfg = cfg
        ctx.in_hw = (int(x.shape[2]), int(x.shape[3]))
        ctx.has_bias = b is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        mask, = ctx.saved_tensors
        if mask is None:
            return None, None, None, None, None
        up, down, px0, py0, mid_h, mid_w, out_h, out_w, gain, slope, clamp, use_down, _ = ctx.cfg
        tu, td = ctx.taps
        g = dy
        if use_down:  # adjoint of the down filter: up by `down`, reversed taps
            g = _Upfirdn2d.apply(g, td.reversed(), (down, down, 1, 1, td.kw - 1, td.kh - 1, mid_h, mid_w))
        g = _MaskMul.apply(g, mask, gain, slope)
        dx = _Upfirdn2d.apply(g, tu.reversed(), (1, 1, up, up, tu.kw - 1 - px0, tu.kh - 1 - py0, *ctx.in_hw))
        db = dx.sum([0, 2, 3]) if ctx.has_bias and ctx.needs_input_grad[1] else None
        return (dx if ctx.needs_input_grad[0] else None), db, None, None, None


def filtered_lrelu(x: torch.Tensor, fu: torch.Tensor | None = None, fd: torch.Tensor | None = None,
                   b: torch.Tensor | None = None, up: int = 1, down: int = 1, padding=0, gain: float = math.sqrt(2),
                   slope: float = 0.2, clamp: float | None = None, flip_filter: bool = False) -> torch.Tensor:
    """CUDA filtered_lrelu (one fused kernel); same arguments and result as
    cuda_ops.filtered_lrelu.filtered_lrelu_ref."""
    if x.ndim != 4:
        raise ValueError(f"filtered_lrelu expects a 4-D input [N, C, H, W], got {tuple(x.shape)}")
    up, down = int(up), int(down)
    if up < 1 or down < 1:
        raise ValueError(f"up and down factors must be >= 1, got up={up} down={down}")
    px0, px1, py0, py1 = parse_padding(padding)
    fu_w, fu_h = filter_size(fu)
    fd_w, fd_h = filter_size(fd)
    mid_w = x.shape[3] * up + px0 + px1 - fu_w + 1
    mid_h = x.shape[2] * up + py0 + py1 - fu_h + 1
    out_w = (mid_w - fd_w + down) // down
    out_h = (mid_h - fd_h + down) // down
    if out_w < 1 or out_h < 1:
        raise ValueError(f"filtered_lrelu: input {tuple(x.shape)} with up={up}, down={down}, "
                         f"padding={padding} leaves no output pixels")
    acc = _acc(x.dtype)
    tu = make_taps(fu, up ** 2, flip_filter, acc, x.device)
    td = make_taps(fd, 1.0, flip_filter, acc, x.device)
    use_down = fd is not None or down > 1
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[1]:
            raise ValueError(f"bias of shape {tuple(b.shape)} does not match the {x.shape[1]} channels of the input")
        b = b.to(x.dtype).contiguous()
    clamp = float(clamp) if clamp is not None and clamp >= 0 else -1.0
    # The gradient mask is only written when a backward pass can follow.
    need_mask = torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad))
    cfg = (up, down, px0, py0, mid_h, mid_w, out_h, out_w, float(gain), float(slope), clamp, use_down, need_mask)
    return _FilteredLrelu.apply(x, b, tu, td, cfg)


# ---------------------------------------------------------------------------------------------------------
# What the kernels cannot do (the dispatcher uses the reference op for these).

def _common_blocker(x: torch.Tensor) -> str | None:
    if x.dtype not in DTYPES:
        return f"dtype {x.dtype} (supported: float32, float16, bfloat16, float64)"
    if x.numel() == 0:
        return "empty input"
    if any(s > MAX_DIM for s in x.shape):
        return f"a dimension larger than 2^31 - 1 ({tuple(x.shape)})"
    return None


def _filter_blocker(*filters) -> str | None:
    for f in filters:
        if f is not None and f.requires_grad and torch.is_grad_enabled():
            return "gradients with respect to the filter"
    return None


# Invalid arguments are not blockers: the CUDA wrappers raise the same ValueError as the reference ops.

def upfirdn2d_blocker(x: torch.Tensor, f: torch.Tensor | None) -> str | None:
    return _common_blocker(x) or _filter_blocker(f)


def bias_act_blocker(x: torch.Tensor) -> str | None:
    return _common_blocker(x)


def filtered_lrelu_blocker(x: torch.Tensor, fu, fd) -> str | None:
    return _common_blocker(x) or _filter_blocker(fu, fd)
