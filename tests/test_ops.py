"""Tests for the pure-PyTorch reference ops in cuda_ops/.

Every op is checked against an independent, deliberately naive definition written below with explicit
Python loops over float64 numpy arrays (zero insertion, padding, true convolution and decimation done
index by index; activations evaluated per element with `math`).  A few closed-form cases (nearest and
bilinear upsampling, box/[1,3,3,1] downsampling, "same" filtering) pin down the padding conventions of
upsample2d / downsample2d / filter2d without going through upfirdn2d's own arithmetic.  Gradients are
checked numerically with torch.autograd.gradcheck / gradgradcheck in float64.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cuda_ops import (ACTIVATIONS, bias_act, downsample2d, filter2d, filter_size, filtered_lrelu,
                      setup_filter, upfirdn2d, upsample2d)

# ------------------------------------------------------------------------------------------------
# Naive references.
# ------------------------------------------------------------------------------------------------


def _pair(v):
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _pad4(p):
    if isinstance(p, int):
        return p, p, p, p
    p = list(p)
    if len(p) == 2:
        return p[0], p[0], p[1], p[1]
    return tuple(p)


def _np(t):
    return None if t is None else np.asarray(t.detach().cpu().double().numpy() if torch.is_tensor(t) else t,
                                             dtype=np.float64)


def _conv1d_valid(row, taps, flip_filter):
    """Valid 1-D filtering of a list of (N, C) columns: a true convolution unless flip_filter."""
    k = len(taps)
    out = []
    for y in range(len(row) - k + 1):
        acc = np.zeros_like(row[0])
        for a in range(k):
            # True convolution: out[y] = sum_a in[y + (k-1) - a] * f[a]; correlation: in[y + a] * f[a].
            src = y + a if flip_filter else y + (k - 1) - a
            acc = acc + row[src] * taps[a]
        out.append(acc)
    return out


def naive_upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1.0):
    x = _np(x)
    f = np.ones((1, 1)) if f is None else _np(f)
    upx, upy = _pair(up)
    downx, downy = _pair(down)
    px0, px1, py0, py1 = _pad4(padding)
    n, c, h, w = x.shape

    # 1. Zero insertion: up-1 zeros *after* every input sample.
    uh, uw = h * upy, w * upx
    u = np.zeros((n, c, uh, uw))
    for i in range(h):
        for j in range(w):
            u[:, :, i * upy, j * upx] = x[:, :, i, j]

    # 2. Pad with zeros; a negative pad crops.  p[y, x] = u[y - py0, x - px0].
    ph, pw = uh + py0 + py1, uw + px0 + px1
    p = np.zeros((n, c, ph, pw))
    for y in range(ph):
        for xx in range(pw):
            sy, sx = y - py0, xx - px0
            if 0 <= sy < uh and 0 <= sx < uw:
                p[:, :, y, xx] = u[:, :, sy, sx]

    # 3. FIR filter.
    if f.ndim == 1:
        taps = f * math.sqrt(gain)
        # Along x, row by row.
        rows = []
        for y in range(ph):
            rows.append(_conv1d_valid([p[:, :, y, xx] for xx in range(pw)], taps, flip_filter))
        fw_out = len(rows[0])
        # Along y, column by column.
        cols = [_conv1d_valid([rows[y][xx] for y in range(ph)], taps, flip_filter) for xx in range(fw_out)]
        fh_out = len(cols[0])
        full = np.zeros((n, c, fh_out, fw_out))
        for y in range(fh_out):
            for xx in range(fw_out):
                full[:, :, y, xx] = cols[xx][y]
    else:
        kh, kw = f.shape
        taps = f * gain
        fh_out, fw_out = ph - kh + 1, pw - kw + 1
        full = np.zeros((n, c, fh_out, fw_out))
        for y in range(fh_out):
            for xx in range(fw_out):
                acc = np.zeros((n, c))
                for a in range(kh):
                    for bb in range(kw):
                        if flip_filter:
                            sy, sx = y + a, xx + bb
                        else:
                            sy, sx = y + (kh - 1) - a, xx + (kw - 1) - bb
                        acc = acc + p[:, :, sy, sx] * taps[a, bb]
                full[:, :, y, xx] = acc

    # 4. Keep every down-th sample, starting at 0.
    oh, ow = -(-fh_out // downy), -(-fw_out // downx)
    out = np.zeros((n, c, oh, ow))
    for y in range(oh):
        for xx in range(ow):
            out[:, :, y, xx] = full[:, :, y * downy, xx * downx]
    return out


def _selu(v):
    scale, alpha = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717
    return scale * (v if v > 0 else alpha * (math.exp(v) - 1))


def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


NAIVE_ACTS = {
    # name: (f(v, alpha), default alpha, default gain)
    "linear": (lambda v, a: v, 0.0, 1.0),
    "relu": (lambda v, a: v if v > 0 else 0.0, 0.0, math.sqrt(2)),
    "lrelu": (lambda v, a: v if v > 0 else a * v, 0.2, math.sqrt(2)),
    "tanh": (lambda v, a: math.tanh(v), 0.0, 1.0),
    "sigmoid": (lambda v, a: _sigmoid(v), 0.0, 1.0),
    "elu": (lambda v, a: v if v > 0 else math.exp(v) - 1, 0.0, 1.0),
    "selu": (lambda v, a: _selu(v), 0.0, 1.0),
    "softplus": (lambda v, a: math.log1p(math.exp(v)), 0.0, 1.0),
    "swish": (lambda v, a: v * _sigmoid(v), 0.0, math.sqrt(2)),
}


def naive_bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    x = _np(x)
    b = _np(b)
    func, d_alpha, d_gain = NAIVE_ACTS[act]
    alpha = d_alpha if alpha is None else alpha
    gain = d_gain if gain is None else gain
    dim = dim % x.ndim
    out = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        v = x[idx]
        if b is not None:
            v += b[idx[dim]]
        v = func(v, alpha) * gain
        if clamp is not None:
            v = min(max(v, -clamp), clamp)
        out[idx] = v
    return out


def naive_filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2),
                         slope=0.2, clamp=None, flip_filter=False, return_mid=False):
    x = naive_bias_act(x, b)
    mid = naive_upfirdn2d(x, fu, up=up, padding=padding, gain=up ** 2, flip_filter=flip_filter)
    y = np.zeros_like(mid)
    for idx in np.ndindex(*mid.shape):
        v = mid[idx]
        v = (v if v > 0 else slope * v) * gain
        if clamp is not None:
            v = min(max(v, -clamp), clamp)
        y[idx] = v
    out = naive_upfirdn2d(y, fd, down=down, flip_filter=flip_filter)
    return (out, mid) if return_mid else out


def assert_close(actual, expected, tol=1e-10):
    actual = _np(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    err = np.abs(actual - expected).max() if actual.size else 0.0
    bound = tol * (1 + np.abs(expected).max()) if expected.size else tol
    assert err <= bound, f"max|diff| {err:.3g} > {bound:.3g}"


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """These tensors are tiny: intra-op threading only adds synchronisation cost (10x slower on a busy
    2-core machine), so run this module single-threaded and restore the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# Filters: 1-D symmetric, 1-D asymmetric, 2-D non-square asymmetric.
F1_SYM = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64) / 8
F1_ASYM = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
F2_ASYM = torch.tensor([[1.0, 2.0], [-0.5, 3.0], [0.25, -1.5]], dtype=torch.float64)  # 3 high, 2 wide
FILTERS = {"1d_sym": F1_SYM, "1d_asym": F1_ASYM, "2d_asym": F2_ASYM, "none": None}

# ------------------------------------------------------------------------------------------------
# Sanity of the naive reference itself (so a bug there cannot mirror a bug in the op).
# ------------------------------------------------------------------------------------------------


def test_naive_reference_hand_computed():
    # Along x: [3, 5] up 2 -> [3, 0, 5, 0]; pad 1 on the left -> s = [0, 3, 0, 5, 0]; a valid true
    # convolution with the 2-tap filter f = [1, 2] has length 4.
    x = np.array([[[[3.0, 5.0]]]])
    f = np.array([[1.0, 2.0]])
    out = naive_upfirdn2d(x, f, up=(2, 1), padding=[1, 0, 0, 0])
    # True convolution of s = [0, 3, 0, 5, 0] with f = [1, 2]: out[y] = s[y+1]*1 + s[y]*2.
    s = [0, 3, 0, 5, 0]
    assert_close(out, [[[[s[y + 1] * 1 + s[y] * 2 for y in range(4)]]]])
    corr = naive_upfirdn2d(x, f, up=(2, 1), padding=[1, 0, 0, 0], flip_filter=True)
    assert_close(corr, [[[[s[y] * 1 + s[y + 1] * 2 for y in range(4)]]]])
    # Separable 1-D == 2-D outer product.
    xx = rand(1, 2, 5, 6).numpy()
    f1 = F1_ASYM.numpy()
    assert_close(naive_upfirdn2d(xx, f1, up=2, down=3, padding=[1, 2, 0, 3], gain=3.0),
                 naive_upfirdn2d(xx, np.outer(f1, f1), up=2, down=3, padding=[1, 2, 0, 3], gain=3.0))


# ------------------------------------------------------------------------------------------------
# setup_filter / filter_size
# ------------------------------------------------------------------------------------------------


def test_setup_filter_small_1d_becomes_normalised_outer_product():
    f = setup_filter([1, 3, 3, 1])
    assert f.dtype == torch.float32 and f.shape == (4, 4)
    expected = np.array([[a * b / 64.0 for b in (1, 3, 3, 1)] for a in (1, 3, 3, 1)])
    assert_close(f, expected, tol=1e-7)
    assert filter_size(f) == (4, 4)


def test_setup_filter_long_1d_stays_separable():
    taps = [1, 2, 3, 4, 4, 3, 2, 1]
    f = setup_filter(taps)
    assert f.shape == (8,)
    assert_close(f, np.array(taps) / 20.0, tol=1e-7)
    assert filter_size(f) == (8, 8)
    assert setup_filter([1, 2, 3], separable=True).shape == (3,)
    assert setup_filter(taps, separable=False).shape == (8, 8)


def test_setup_filter_gain_flip_none_and_2d():
    f = setup_filter([1, 2], gain=4.0)  # 2-D outer product, sum 4
    assert_close(f, np.array([[1, 2], [2, 4]]) / 9.0 * 4.0, tol=1e-7)
    f1 = setup_filter([1, 2, 3, 4, 5, 6, 7, 8], gain=4.0)  # separable: sqrt(4) per axis
    assert_close(f1, np.arange(1, 9) / 36.0 * 2.0, tol=1e-7)
    fl = setup_filter([1, 2, 3, 4, 5, 6, 7, 8], flip=True)
    assert_close(fl, np.arange(8, 0, -1) / 36.0, tol=1e-7)
    assert_close(setup_filter(None), [[1.0]])
    f2 = setup_filter([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], normalize=False)
    assert f2.shape == (2, 3) and filter_size(f2) == (3, 2)
    assert filter_size(None) == (1, 1)


# ------------------------------------------------------------------------------------------------
# upfirdn2d
# ------------------------------------------------------------------------------------------------

UPS = [1, 2, 3, (2, 1), (1, 3)]
DOWNS = [1, 2, 3, (1, 2), (3, 2)]


@pytest.mark.parametrize("up", UPS, ids=str)
@pytest.mark.parametrize("down", DOWNS, ids=str)
@pytest.mark.parametrize("fname", ["1d_sym", "2d_asym"])
def test_upfirdn2d_up_down_matches_naive(up, down, fname):
    x = rand(1, 2, 5, 6, seed=1)
    f = FILTERS[fname]
    pad = [2, 1, 1, 2]
    out = upfirdn2d(x, f, up=up, down=down, padding=pad)
    assert_close(out, naive_upfirdn2d(x, f, up=up, down=down, padding=pad))


PADDINGS = [0, 2, (1, 3), [0, 3, 2, 0], [-1, 2, 1, -2], [-2, -1, -1, -1], [3, -2, -1, 2]]


@pytest.mark.parametrize("padding", PADDINGS, ids=str)
@pytest.mark.parametrize("fname", ["1d_sym", "1d_asym", "2d_asym", "none"])
@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2), ((2, 1), (1, 3))], ids=str)
def test_upfirdn2d_padding_matches_naive(padding, fname, up, down):
    x = rand(1, 2, 6, 7, seed=2)
    f = FILTERS[fname]
    out = upfirdn2d(x, f, up=up, down=down, padding=padding)
    assert_close(out, naive_upfirdn2d(x, f, up=up, down=down, padding=padding))


def test_upfirdn2d_output_shape_formula():
    # out = (in * up + pad0 + pad1 - (f - 1) + down - 1) // down, per axis.
    x = rand(2, 3, 5, 7)
    for up, down, pad in [((2, 3), (3, 2), [1, -2, 3, 0]), ((1, 2), (2, 1), [0, 0, -1, 4])]:
        out = upfirdn2d(x, F2_ASYM, up=up, down=down, padding=pad)
        ow = (7 * up[0] + pad[0] + pad[1] - (2 - 1) + down[0] - 1) // down[0]
        oh = (5 * up[1] + pad[2] + pad[3] - (3 - 1) + down[1] - 1) // down[1]
        assert out.shape == (2, 3, oh, ow)


@pytest.mark.parametrize("fname", ["1d_asym", "2d_asym"])
@pytest.mark.parametrize("up,down,pad", [(1, 1, 1), (2, 1, [2, 1, 1, 2]), (1, 2, [0, 2, 1, 1]),
                                         (3, 2, [1, 0, 2, 1])], ids=str)
def test_upfirdn2d_flip_filter(fname, up, down, pad):
    x = rand(1, 2, 5, 6, seed=3)
    f = FILTERS[fname]
    conv = upfirdn2d(x, f, up=up, down=down, padding=pad)
    corr = upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=True)
    assert conv.shape == corr.shape
    assert (conv - corr).abs().max() > 1e-3, "flip_filter had no effect on an asymmetric filter"
    assert_close(conv, naive_upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=False))
    assert_close(corr, naive_upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=True))
    # Correlating with f == convolving with f reversed along every axis.
    f_rev = torch.from_numpy(_np(f)[::-1].copy()) if f.ndim == 1 else torch.from_numpy(_np(f)[::-1, ::-1].copy())
    assert_close(corr, upfirdn2d(x, f_rev, up=up, down=down, padding=pad))


@pytest.mark.parametrize("fname", ["1d_sym", "1d_asym", "2d_asym", "none"])
@pytest.mark.parametrize("gain", [1.0, 0.5, 4.0, 9.0])
def test_upfirdn2d_gain(fname, gain):
    x = rand(1, 2, 5, 6, seed=4)
    f = FILTERS[fname]
    out = upfirdn2d(x, f, up=2, down=1, padding=[1, 2, 2, 1], gain=gain)
    assert_close(out, naive_upfirdn2d(x, f, up=2, padding=[1, 2, 2, 1], gain=gain))
    assert_close(out, gain * naive_upfirdn2d(x, f, up=2, padding=[1, 2, 2, 1]))


def test_upfirdn2d_separable_equals_outer_product():
    x = rand(2, 3, 5, 6, seed=5)
    f1 = F1_ASYM
    f2 = torch.outer(f1, f1)
    for kw in [dict(up=2, padding=[2, 1, 0, 3]), dict(down=2, padding=1), dict(up=3, down=2, gain=2.0)]:
        assert_close(upfirdn2d(x, f1, **kw), upfirdn2d(x, f2, **kw))
        assert_close(upfirdn2d(x, f1, **kw), naive_upfirdn2d(x, f1, **kw))


def test_upfirdn2d_float32_filter_with_float64_input_and_batch_channels():
    x = rand(3, 4, 4, 5, seed=6)
    f = setup_filter([1, 3, 3, 1])  # float32
    out = upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1])
    assert out.dtype == torch.float64
    assert_close(out, naive_upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1]))
    out32 = upfirdn2d(x.float(), f, down=2, padding=1)
    assert out32.dtype == torch.float32
    assert_close(out32, naive_upfirdn2d(x, f, down=2, padding=1), tol=1e-6)


def test_upfirdn2d_impulse_response_is_the_filter():
    # A single impulse at the origin, padded by (k-1) on the leading side, reproduces f exactly.
    x = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    x[..., 0, 0] = 1
    out = upfirdn2d(x, F2_ASYM, padding=[1, 1, 2, 2])
    assert_close(out, F2_ASYM.numpy()[None, None])
    out = upfirdn2d(x, F2_ASYM, padding=[1, 1, 2, 2], flip_filter=True)
    assert_close(out, F2_ASYM.numpy()[::-1, ::-1][None, None])


@pytest.mark.parametrize("bad", [
    dict(x=torch.zeros(2, 5, 6)),
    dict(x=torch.zeros(1, 1, 2, 5, 6)),
    dict(padding=[1, 2, 3]),
    dict(padding=[1, 2, 3, 4, 5]),
    dict(up=0),
    dict(down=0),
    dict(up=(2, 0)),
    dict(down=(-1, 1)),
    dict(up=(1, 2, 3)),
], ids=lambda d: ",".join(f"{k}={tuple(v.shape) if torch.is_tensor(v) else v}" for k, v in d.items()))
def test_upfirdn2d_bad_input_raises_value_error(bad):
    kw = dict(x=torch.zeros(1, 2, 5, 6), f=setup_filter([1, 3, 3, 1]))
    kw.update(bad)
    with pytest.raises(ValueError):
        upfirdn2d(**kw)


def test_filter_and_setup_filter_bad_input():
    with pytest.raises(ValueError):
        filter_size(torch.zeros(2, 2, 2))
    with pytest.raises(ValueError):
        setup_filter([])
    with pytest.raises(ValueError):
        setup_filter(torch.zeros(2, 2, 2))


# ------------------------------------------------------------------------------------------------
# upsample2d / downsample2d / filter2d
# ------------------------------------------------------------------------------------------------


def _zp(x, i, j):
    """x[..., i, j] with zeros outside."""
    h, w = x.shape[-2:]
    return x[..., i, j] if 0 <= i < h and 0 <= j < w else np.zeros(x.shape[:-2])


@pytest.mark.parametrize("up", [2, 3, (2, 1), (1, 3)], ids=str)
def test_upsample2d_box_filter_is_nearest_neighbour(up):
    upx, upy = _pair(up)
    x = rand(1, 2, 5, 6, seed=7)
    # A box filter as long as the factor (its normalised taps sum to 1 per axis) replicates each pixel.
    f = torch.ones(upy, upx, dtype=torch.float64) / (upx * upy)
    out = upsample2d(x, f, up=up)
    xn = x.numpy()
    expected = np.zeros((1, 2, 5 * upy, 6 * upx))
    for y in range(5 * upy):
        for xx in range(6 * upx):
            expected[:, :, y, xx] = xn[:, :, y // upy, xx // upx]
    assert_close(out, expected)


@pytest.mark.parametrize("sep", [False, True])
def test_upsample2d_1331_is_half_pixel_bilinear(sep):
    x = rand(1, 2, 5, 6, seed=8)
    f = setup_filter([1, 3, 3, 1], separable=sep).double()
    out = upsample2d(x, f)
    xn = x.numpy()
    w = {0: [(-1, 0.25), (0, 0.75)], 1: [(0, 0.75), (1, 0.25)]}  # output 2i+r <- x[i+d] * weight
    expected = np.zeros((1, 2, 10, 12))
    for y in range(10):
        for xx in range(12):
            acc = 0
            for dy, wy in w[y % 2]:
                for dx, wx in w[xx % 2]:
                    acc = acc + wy * wx * _zp(xn, y // 2 + dy, xx // 2 + dx)
            expected[:, :, y, xx] = acc
    assert_close(out, expected)


@pytest.mark.parametrize("down", [2, 3, (2, 1), (1, 3)], ids=str)
def test_downsample2d_box_filter_is_average_pooling(down):
    dx, dy = _pair(down)
    x = rand(1, 2, 6, 6, seed=9)
    f = torch.ones(dy, dx, dtype=torch.float64) / (dx * dy)
    out = downsample2d(x, f, down=down)
    xn = x.numpy()
    expected = np.zeros((1, 2, 6 // dy, 6 // dx))
    for y in range(6 // dy):
        for xx in range(6 // dx):
            expected[:, :, y, xx] = xn[:, :, y * dy:(y + 1) * dy, xx * dx:(xx + 1) * dx].mean(axis=(-1, -2))
    assert_close(out, expected)


def test_downsample2d_1331():
    x = rand(1, 2, 6, 8, seed=10)
    out = downsample2d(x, setup_filter([1, 3, 3, 1]).double())
    xn = x.numpy()
    taps = [(-1, 1 / 8), (0, 3 / 8), (1, 3 / 8), (2, 1 / 8)]  # out[Y] <- x[2Y + d] * t
    expected = np.zeros((1, 2, 3, 4))
    for y in range(3):
        for xx in range(4):
            expected[:, :, y, xx] = sum(ty * tx * _zp(xn, 2 * y + dy, 2 * xx + dx)
                                        for dy, ty in taps for dx, tx in taps)
    assert_close(out, expected)


@pytest.mark.parametrize("fname", ["1d_sym", "1d_asym", "2d_asym"])
@pytest.mark.parametrize("flip", [False, True])
def test_filter2d_is_same_size_convolution(fname, flip):
    x = rand(1, 2, 5, 6, seed=11)
    f = FILTERS[fname]
    fn = _np(f)
    k2 = np.outer(fn, fn) if fn.ndim == 1 else fn
    kh, kw = k2.shape
    out = filter2d(x, f, flip_filter=flip, gain=2.0)
    xn = x.numpy()
    expected = np.zeros((1, 2, 5, 6))
    for y in range(5):
        for xx in range(6):
            acc = 0
            for a in range(kh):
                for b in range(kw):
                    if flip:  # correlation anchored at tap (kh//2, kw//2)
                        acc = acc + k2[a, b] * _zp(xn, y + a - kh // 2, xx + b - kw // 2)
                    else:  # convolution anchored at tap ((kh-1)//2, (kw-1)//2)
                        acc = acc + k2[a, b] * _zp(xn, y - a + (kh - 1) // 2, xx - b + (kw - 1) // 2)
            expected[:, :, y, xx] = 2.0 * acc
    assert_close(out, expected)


@pytest.mark.parametrize("fname", ["1d_sym", "1d_asym", "2d_asym", "none"])
@pytest.mark.parametrize("factor", [2, 3, (2, 1), (1, 3)], ids=str)
def test_resample_output_shapes(fname, factor):
    fx, fy = _pair(factor)
    f = FILTERS[fname]
    x = rand(1, 2, 6, 12, seed=12)
    assert upsample2d(x, f, up=factor).shape == (1, 2, 6 * fy, 12 * fx)
    assert downsample2d(x, f, down=factor).shape == (1, 2, 6 // fy, 12 // fx)
    if f is not None:
        assert filter2d(x, f).shape == (1, 2, 6, 12)
    # Extra padding adds to the output size.
    assert upsample2d(x, f, up=factor, padding=[1, 2, 0, 3]).shape == (1, 2, 6 * fy + 3, 12 * fx + 3)
    if f is not None:
        assert filter2d(x, f, padding=(1, 2)).shape == (1, 2, 10, 14)


@pytest.mark.parametrize("fname", ["1d_sym", "1d_asym", "2d_asym"])
@pytest.mark.parametrize("factor", [2, 3, (2, 1)], ids=str)
def test_resample_values_match_naive(fname, factor):
    # NVIDIA's size-preserving paddings, written out per axis:
    #   up:   [(fw + up - 1) // 2, (fw - up) // 2],  gain * up_x * up_y
    #   down: [(fw - down + 1) // 2, (fw - down) // 2]
    fx, fy = _pair(factor)
    f = FILTERS[fname]
    fn = _np(f)
    kh, kw = (len(fn), len(fn)) if fn.ndim == 1 else fn.shape
    x = rand(1, 2, 6, 6, seed=13)
    pu = [(kw + fx - 1) // 2, (kw - fx) // 2, (kh + fy - 1) // 2, (kh - fy) // 2]
    assert_close(upsample2d(x, f, up=factor, gain=0.5),
                 naive_upfirdn2d(x, f, up=factor, padding=pu, gain=0.5 * fx * fy))
    pd = [(kw - fx + 1) // 2, (kw - fx) // 2, (kh - fy + 1) // 2, (kh - fy) // 2]
    assert_close(downsample2d(x, f, down=factor, flip_filter=True),
                 naive_upfirdn2d(x, f, down=factor, padding=pd, flip_filter=True))


# ------------------------------------------------------------------------------------------------
# bias_act
# ------------------------------------------------------------------------------------------------

ACT_NAMES = ["linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"]


def test_activation_table_is_complete_with_documented_defaults():
    assert set(ACTIVATIONS) == set(ACT_NAMES)
    for name, (_, alpha, gain) in NAIVE_ACTS.items():
        assert ACTIVATIONS[name].default_gain == pytest.approx(gain), name
    assert ACTIVATIONS["lrelu"].default_alpha == pytest.approx(0.2)


@pytest.mark.parametrize("act", ACT_NAMES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_bias_act_defaults_match_naive(act, with_bias):
    x = 2 * rand(2, 3, 4, seed=20)
    b = rand(3, seed=21) if with_bias else None
    out = bias_act(x, b, act=act)
    assert out.dtype == torch.float64 and out.shape == x.shape
    assert_close(out, naive_bias_act(x, b, act=act))


@pytest.mark.parametrize("act", ACT_NAMES)
def test_bias_act_alpha_gain_clamp(act):
    x = 3 * rand(2, 3, 2, 2, seed=22)
    b = rand(3, seed=23)
    out = bias_act(x, b, act=act, alpha=0.05, gain=1.7, clamp=0.9)
    expected = naive_bias_act(x, b, act=act, alpha=0.05, gain=1.7, clamp=0.9)
    assert_close(out, expected)
    assert np.abs(expected).max() <= 0.9 + 1e-12
    # The clamp must actually bite on this data for every activation except the bounded ones.
    unclamped = naive_bias_act(x, b, act=act, alpha=0.05, gain=1.7)
    if act not in ("sigmoid", "tanh"):
        assert np.abs(unclamped).max() > 0.9


def test_bias_act_lrelu_alpha_changes_negative_slope():
    x = torch.tensor([[-2.0, -0.5, 0.0, 1.5]], dtype=torch.float64)
    out = bias_act(x, act="lrelu", alpha=0.1, gain=1.0)
    assert_close(out, [[-0.2, -0.05, 0.0, 1.5]])
    out = bias_act(x, act="lrelu")  # alpha 0.2, gain sqrt(2)
    s = math.sqrt(2)
    assert_close(out, [[-0.4 * s, -0.1 * s, 0.0, 1.5 * s]])


@pytest.mark.parametrize("dim,shape", [(0, (3, 2, 4)), (2, (2, 3, 4)), (-1, (2, 3, 5)), (3, (1, 2, 3, 4))])
@pytest.mark.parametrize("act", ["lrelu", "swish", "linear"])
def test_bias_act_other_dims(dim, shape, act):
    x = rand(*shape, seed=24)
    b = rand(shape[dim], seed=25)
    out = bias_act(x, b, dim=dim, act=act, clamp=1.0)
    assert_close(out, naive_bias_act(x, b, dim=dim, act=act, clamp=1.0))


def test_bias_act_clamp_none_and_zero():
    x = 3 * rand(2, 3, seed=26)
    assert_close(bias_act(x, act="linear", clamp=None), x.numpy())
    assert_close(bias_act(x, act="linear", clamp=0.0), np.zeros((2, 3)))


def test_bias_act_bad_input():
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError):
        bias_act(x, torch.zeros(4), dim=1)
    with pytest.raises(ValueError):
        bias_act(x, torch.zeros(3, 1), dim=1)
    with pytest.raises(ValueError):
        bias_act(x, act="gelu-ish")


# ------------------------------------------------------------------------------------------------
# filtered_lrelu
# ------------------------------------------------------------------------------------------------

FLRELU_CASES = [
    # up, down, fu, fd, padding
    (1, 1, None, None, 0),
    (2, 1, "sym2d", None, [2, 1, 2, 1]),
    (1, 2, None, "sym2d", [1, 1, 1, 1]),
    (2, 2, "sym2d", "sym2d", [3, 2, 3, 2]),
    (2, 2, "sep8", "asym2d", [5, 4, 3, 4]),
    (3, 2, "asym1d", "sep8", [4, 5, 6, 3]),
    (2, 2, "asym2d", "asym1d", [-1, 3, 2, 0]),
]


def _flrelu_filter(name):
    return {
        None: None,
        "sym2d": setup_filter([1, 3, 3, 1]).double(),
        "sep8": setup_filter([1, 2, 4, 6, 6, 4, 2, 1]).double(),  # 1-D, separable
        "asym1d": F1_ASYM,
        "asym2d": F2_ASYM / F2_ASYM.sum(),
    }[name]


@pytest.mark.parametrize("up,down,fu,fd,padding", FLRELU_CASES, ids=str)
@pytest.mark.parametrize("clamp", [None, 0.7])
@pytest.mark.parametrize("with_bias", [False, True])
def test_filtered_lrelu_matches_naive(up, down, fu, fd, padding, clamp, with_bias):
    x = rand(1, 2, 5, 6, seed=30)
    b = rand(2, seed=31) if with_bias else None
    fu, fd = _flrelu_filter(fu), _flrelu_filter(fd)
    out = filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=padding, clamp=clamp)
    expected = naive_filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=padding, clamp=clamp)
    assert_close(out, expected)
    # Output size formula from the docstring (and NVIDIA's implementation).
    fuw, fuh = (1, 1) if fu is None else ((len(fu), len(fu)) if fu.ndim == 1 else (fu.shape[1], fu.shape[0]))
    fdw, fdh = (1, 1) if fd is None else ((len(fd), len(fd)) if fd.ndim == 1 else (fd.shape[1], fd.shape[0]))
    px0, px1, py0, py1 = _pad4(padding)
    ow = (6 * up + px0 + px1 - (fuw - 1) - (fdw - 1) + down - 1) // down
    oh = (5 * up + py0 + py1 - (fuh - 1) - (fdh - 1) + down - 1) // down
    assert out.shape == (1, 2, oh, ow)


def test_filtered_lrelu_clamp_bites_and_params():
    x = 3 * rand(1, 2, 5, 6, seed=32)
    fu = setup_filter([1, 3, 3, 1]).double()
    unclamped = naive_filtered_lrelu(x, fu, fu, up=2, down=2, padding=[3, 2, 3, 2])
    clamped = naive_filtered_lrelu(x, fu, fu, up=2, down=2, padding=[3, 2, 3, 2], clamp=0.5)
    assert np.abs(unclamped - clamped).max() > 1e-2
    out = filtered_lrelu(x, fu, fu, up=2, down=2, padding=[3, 2, 3, 2], clamp=0.5)
    assert_close(out, clamped)
    out = filtered_lrelu(x, fu, fu, up=2, down=2, padding=[3, 2, 3, 2], gain=0.8, slope=0.05,
                         flip_filter=True)
    assert_close(out, naive_filtered_lrelu(x, fu, fu, up=2, down=2, padding=[3, 2, 3, 2], gain=0.8,
                                           slope=0.05, flip_filter=True))


def test_filtered_lrelu_flip_filter_asymmetric():
    x = rand(1, 2, 5, 6, seed=33)
    fu, fd = F2_ASYM, F1_ASYM
    a = filtered_lrelu(x, fu, fd, up=2, down=2, padding=[2, 2, 3, 3])
    bb = filtered_lrelu(x, fu, fd, up=2, down=2, padding=[2, 2, 3, 3], flip_filter=True)
    assert (a - bb).abs().max() > 1e-3
    assert_close(bb, naive_filtered_lrelu(x, fu, fd, up=2, down=2, padding=[2, 2, 3, 3], flip_filter=True))


def test_filtered_lrelu_without_filters_is_pointwise_lrelu():
    x = rand(1, 2, 5, 6, seed=34)
    b = rand(2, seed=35)
    out = filtered_lrelu(x, b=b, gain=1.5, slope=0.1, clamp=0.8)
    v = x.numpy() + b.numpy()[None, :, None, None]
    expected = np.clip(np.where(v > 0, v, 0.1 * v) * 1.5, -0.8, 0.8)
    assert_close(out, expected)


def test_filtered_lrelu_keeps_dtype_and_rejects_bad_input():
    x = rand(1, 2, 5, 6).float()
    out = filtered_lrelu(x, setup_filter([1, 3, 3, 1]), setup_filter([1, 3, 3, 1]), up=2, down=2,
                         padding=3)
    assert out.dtype == torch.float32
    with pytest.raises(ValueError):
        filtered_lrelu(torch.zeros(2, 5, 6))
    with pytest.raises(ValueError):
        filtered_lrelu(torch.zeros(1, 1, 5, 6), padding=[1, 2, 3])
    with pytest.raises(ValueError):  # no output pixels left
        filtered_lrelu(torch.zeros(1, 1, 2, 2), setup_filter([1, 3, 3, 1]), setup_filter([1, 3, 3, 1]))


# ------------------------------------------------------------------------------------------------
# Gradients (float64 numerical checks).
# ------------------------------------------------------------------------------------------------

GRAD_UPFIRDN_CASES = [
    dict(up=2, padding=[2, 1, 2, 1]),
    dict(down=2, padding=1),
    dict(up=(2, 1), down=(1, 3), padding=[1, -1, 2, 0]),
    dict(up=3, down=2, padding=[-1, 2, 1, 1], flip_filter=True, gain=2.0),
]


# The full Jacobian check runs once per op on the smallest input; the other cases use gradcheck's fast
# mode (compares random projections of the analytical and numerical Jacobians), which keeps the file fast.


@pytest.mark.parametrize("kw", GRAD_UPFIRDN_CASES, ids=str)
@pytest.mark.parametrize("fname", ["1d_asym", "2d_asym"])
def test_upfirdn2d_gradcheck(kw, fname):
    x = rand(1, 2, 4, 5, seed=40).requires_grad_()
    f = FILTERS[fname].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, f: upfirdn2d(x, f, **kw), (x, f), fast_mode=True)


def test_upfirdn2d_gradcheck_full_jacobian():
    x = rand(1, 1, 3, 3, seed=40).requires_grad_()
    f = F2_ASYM.clone().requires_grad_()
    kw = dict(up=(2, 1), down=(1, 2), padding=[1, -1, 2, 1])
    assert torch.autograd.gradcheck(lambda x, f: upfirdn2d(x, f, **kw), (x, f))


@pytest.mark.parametrize("kw", GRAD_UPFIRDN_CASES, ids=str)
def test_upfirdn2d_gradgradcheck(kw):
    x = rand(1, 2, 4, 5, seed=41).requires_grad_()
    f = F1_ASYM.clone().requires_grad_()
    assert torch.autograd.gradgradcheck(lambda x, f: upfirdn2d(x, f, **kw), (x, f), fast_mode=True)


def test_upfirdn2d_gradgradcheck_full():
    x = rand(1, 1, 3, 3, seed=41).requires_grad_()
    f = F2_ASYM.clone().requires_grad_()
    assert torch.autograd.gradgradcheck(lambda x, f: upfirdn2d(x, f, up=2, down=2, padding=1), (x, f))


# Pre-activation values kept >= 0.1 away from every kink: lrelu at 0; lrelu*sqrt2 clamp 1 at 0.707 and
# -3.54; tanh clamp 0.5 at +-0.549.
SAFE_Z = torch.tensor([-4.5, -2.0, -0.9, -0.3, 0.25, 0.4, 1.0, 2.5], dtype=torch.float64)


def _safe_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    jitter = 0.03 * (2 * torch.rand(2, 4, generator=g, dtype=torch.float64) - 1)
    z = SAFE_Z[torch.randperm(8, generator=g)].reshape(2, 4) + jitter
    z = torch.cat([z, SAFE_Z[torch.randperm(8, generator=g)].reshape(2, 4)]).reshape(2, 2, 2, 2)
    z = z.permute(0, 2, 1, 3).contiguous()  # [2, 2, 2, 2], dim 1 = channels
    b = 0.02 * torch.randn(2, generator=g, dtype=torch.float64)
    x = z - b.reshape(1, 2, 1, 1)
    return x.requires_grad_(), b.requires_grad_()


@pytest.mark.parametrize("act,clamp", [("lrelu", None), ("lrelu", 1.0), ("tanh", None), ("tanh", 0.5),
                                       ("swish", None), ("elu", 2.0)], ids=str)
def test_bias_act_gradcheck(act, clamp):
    x, b = _safe_inputs(42)
    y = naive_bias_act(x, b, act=act, clamp=clamp)
    if clamp is not None and act in ("lrelu", "tanh"):
        assert (np.abs(y) >= clamp).any() and (np.abs(y) < clamp).any()  # both regimes exercised
    assert torch.autograd.gradcheck(lambda x, b: bias_act(x, b, act=act, clamp=clamp), (x, b))


@pytest.mark.parametrize("clamp", [None, 1.0])
def test_bias_act_lrelu_gradgradcheck(clamp):
    x, b = _safe_inputs(43)
    assert torch.autograd.gradgradcheck(lambda x, b: bias_act(x, b, act="lrelu", clamp=clamp), (x, b))


def test_bias_act_tanh_gradgradcheck():
    x, b = _safe_inputs(44)
    assert torch.autograd.gradgradcheck(lambda x, b: bias_act(x, b, act="tanh", gain=1.3), (x, b))


@pytest.mark.parametrize("clamp", [None, 0.6])
@pytest.mark.parametrize("up,down,padding", [(2, 2, [3, 2, 3, 2]), (1, 2, [1, 1, 2, 2]), (2, 1, [2, 1, 2, 1])],
                         ids=str)
def test_filtered_lrelu_gradcheck(clamp, up, down, padding):
    x = (2 * rand(1, 2, 3, 4, seed=46)).requires_grad_()
    b = (0.1 * rand(2, seed=46)).requires_grad_()
    fu = setup_filter([1, 3, 3, 1]).double()
    fd = F1_ASYM / F1_ASYM.sum()
    # Precondition: no intermediate value sits within 1e-3 of the lrelu kink or the clamp boundary, so
    # finite differences are valid.
    _, mid = naive_filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=padding, clamp=clamp,
                                  return_mid=True)
    act = np.where(mid > 0, mid, 0.2 * mid) * math.sqrt(2)
    assert np.abs(mid).min() > 1e-3 or np.abs(mid[np.abs(mid) < 1e-3]).max() == 0.0
    if clamp is not None:
        assert np.abs(np.abs(act) - clamp).min() > 1e-3
        assert (np.abs(act) > clamp).any()
    assert torch.autograd.gradcheck(
        lambda x, b: filtered_lrelu(x, fu, fd, b, up=up, down=down, padding=padding, clamp=clamp), (x, b),
        fast_mode=(up, down) != (2, 2))
