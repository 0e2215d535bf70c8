"""The fast inference path (stylegan.fast) computes the exact path's images within stated tolerances.

Tolerances (relative to the exact fp32 path's images, max over pixels / mean over pixels):
  fp32 (contiguous or channels_last, fused or unfused modulation):  max|diff| / max|ref| < 1e-5
  bf16 (CPU) / fp16 (CUDA):  max|diff| / max|ref| < 0.05 and mean|diff| / mean|ref| < 0.025
"""
from __future__ import annotations


import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cuda_ops import setup_filter, upfirdn2d
from stylegan import Generator
from stylegan import fast as fast_mod
from stylegan.fast import FastSynthesis, cpu_bf16_support, fast_upfirdn2d

FP32_TOL = 1e-5
LOW_MAX_TOL, LOW_MEAN_TOL = 0.05, 0.025

SG2 = dict(kind="stylegan2", img_resolution=32, z_dim=32, w_dim=32,
           synthesis_kwargs=dict(channel_base=256, channel_max=32))
SG3 = dict(kind="stylegan3", img_resolution=32, z_dim=32, w_dim=32,
           synthesis_kwargs=dict(channel_base=512, channel_max=32, num_layers=6, margin_size=4))


def _make(cfg, **synth):
    cfg = dict(cfg, synthesis_kwargs=dict(cfg["synthesis_kwargs"], **synth))
    torch.manual_seed(0)
    G = Generator(**cfg).eval()
    # Random init leaves noise strengths, biases and magnitude EMAs at trivial values; make them
    # matter so that the test sees every term.
    with torch.no_grad():
        for name, p in G.synthesis.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
            elif name.endswith(".bias") and "affine" not in name:
                p.normal_(0, 0.1)
        for name, b in G.synthesis.named_buffers():
            if name.endswith("magnitude_ema"):
                b.fill_(0.7)
    return G


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sg2():
    return _make(SG2)


@pytest.fixture(scope="module")
def sg3():
    return _make(SG3)


def _ws(G, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn([n, G.num_ws, G.w_dim], generator=g)


def _rel(out, ref):
    d = (out - ref).abs()
    return (d.max() / ref.abs().max()).item(), (d.mean() / ref.abs().mean()).item()


def _exact(G, ws, noise_mode="const"):
    with torch.no_grad():
        return G.synthesis(ws, noise_mode=noise_mode)


class ConvRecorder(TorchDispatchMode):
    """Records (dtype, channels_last) of the input of every non-depthwise convolution."""

    def __init__(self):
        super().__init__()
        self.convs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        aten = torch.ops.aten
        if func.overloadpacket in (aten.conv2d, aten.conv_transpose2d, aten.convolution, aten._convolution):
            x, w = args[0], args[1]
            if w.shape[1] > 1:                   # skip the depthwise FIR filters
                self.convs.append((x.dtype, x.shape[1] > 1 and not x.is_contiguous()
                                   and x.is_contiguous(memory_format=torch.channels_last)))
        return func(*args, **(kwargs or {}))


# --------------------------------------------------------------------------------------------- fp32


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("fused", ["auto", True, False])
@pytest.mark.parametrize("n", [1, 2])
def test_sg2_fp32_matches_exact(sg2, channels_last, fused, n):
    ws = _ws(sg2, n)
    fs = FastSynthesis(sg2, precision="fp32", channels_last=channels_last, fused_modconv=fused)
    out = fs(ws)
    assert out.dtype == torch.float32 and out.shape == (n, 3, 32, 32) and out.is_contiguous()
    rel_max, _ = _rel(out, _exact(sg2, ws))
    assert rel_max < FP32_TOL


@pytest.mark.parametrize("arch", ["resnet", "orig"])
def test_sg2_architectures(arch):
    G = _make(SG2, architecture=arch, conv_clamp=0.5)
    for n in (1, 2):
        ws = _ws(G, n)
        rel_max, _ = _rel(FastSynthesis(G, precision="fp32")(ws), _exact(G, ws))
        assert rel_max < FP32_TOL


@pytest.mark.parametrize("radial", [False, True])
@pytest.mark.parametrize("n", [1, 2])
def test_sg3_fp32_matches_exact(sg3, radial, n):
    G = _make(SG3, use_radial_filters=True, conv_kernel=1) if radial else sg3
    ws = _ws(G, n)
    for channels_last in (False, True):
        out = FastSynthesis(G, precision="fp32", channels_last=channels_last)(ws)
        rel_max, _ = _rel(out, _exact(G, ws))
        assert rel_max < FP32_TOL


def test_noise_modes(sg2):
    ws = _ws(sg2, 2)
    fs = FastSynthesis(sg2, precision="fp32")
    rel_max, _ = _rel(fs(ws, noise_mode="none"), _exact(sg2, ws, noise_mode="none"))
    assert rel_max < FP32_TOL
    a, b = fs(ws, noise_mode="random"), fs(ws, noise_mode="random")
    assert a.shape == (2, 3, 32, 32) and not torch.equal(a, b)
    with pytest.raises(ValueError):
        fs(ws, noise_mode="bogus")
    with pytest.raises(ValueError):
        fs(ws[:, :-1])


def test_refresh_picks_up_new_weights():
    G = _make(SG2)
    ws = _ws(G, 1)
    fs = FastSynthesis(G, precision="fp32")
    with torch.no_grad():
        G.synthesis.b8.conv1.weight.mul_(-1.5)
    assert _rel(fs(ws), _exact(G, ws))[0] > 1e-3        # snapshot: stale until refreshed
    fs.refresh()
    assert _rel(fs(ws), _exact(G, ws))[0] < FP32_TOL


def test_native_backend_is_exact(sg2):
    ws = _ws(sg2, 1)
    out = FastSynthesis(sg2, precision="fp32", backend="native")(ws)
    assert torch.equal(out, _exact(sg2, ws))


@pytest.mark.parametrize("kind", ["stylegan2", "stylegan3"])
def test_fully_randomized_generators(kind):
    # conftest's randomize(): every parameter and buffer non-trivial, including a rotated and
    # translated StyleGAN3 input transform (read live by the fast path).
    from conftest import tiny_generator
    G = tiny_generator(kind)
    ws = _ws(G, 2)
    fs = FastSynthesis(G, precision="fp32")
    assert _rel(fs(ws), _exact(G, ws))[0] < FP32_TOL
    if kind == "stylegan3":
        with torch.no_grad():
            G.synthesis.input.transform[0, 2] += 0.25
        assert _rel(fs(ws), _exact(G, ws))[0] < FP32_TOL


@pytest.mark.parametrize("kind", ["stylegan2", "stylegan3"])
def test_fp16_mixed_precision_logic_on_cpu(kind):
    # The CUDA fp16 path (checkpoint's fp16 layers in fp16, NVIDIA's range normalisation of styles and
    # weights) exercised on the CPU, which also runs fp16 convolutions.
    from conftest import tiny_generator
    G = tiny_generator(kind, **(dict(num_fp16_res=2, conv_clamp=256) if kind == "stylegan2" else {}))
    ws = _ws(G, 2)
    ref = _exact(G, ws)
    for fused in ("auto", False):
        fs = FastSynthesis(G, precision="fp32", fused_modconv=fused)
        assert fs._has_fp16_layers()
        fs.precision = "fp16"
        rel_max, rel_mean = _rel(fs(ws[:1]) if fused == "auto" else fs(ws), ref[:1] if fused == "auto" else ref)
        assert 0 < rel_max < LOW_MAX_TOL and rel_mean < LOW_MEAN_TOL


# ------------------------------------------------------------------------------------- variants apply


def test_channels_last_and_fp32_applied(sg2):
    fs = FastSynthesis(sg2, precision="fp32", channels_last=True)
    assert "channels_last" in fs.describe() and "precision=fp32" in fs.describe()
    rec = ConvRecorder()
    with rec:
        fs(_ws(sg2, 1))
    convs = rec.convs
    assert convs and all(dt == torch.float32 for dt, _ in convs)
    assert all(cl for _, cl in convs)


def test_auto_precision_policy(sg2, monkeypatch):
    monkeypatch.setattr(fast_mod, "cpu_bf16_support",
                        lambda: dict(native=True, amx=True, avx512_bf16=True, capability="AVX512"))
    assert FastSynthesis(sg2).precision == "bf16"
    monkeypatch.setattr(fast_mod, "cpu_bf16_support",
                        lambda: dict(native=True, amx=False, avx512_bf16=True, capability="AVX512"))
    assert FastSynthesis(sg2).precision == "fp32"
    with pytest.raises(ValueError):
        FastSynthesis(sg2, precision="fp16")                # fp16 is a CUDA precision


# --------------------------------------------------------------------------------------------- bf16

needs_bf16 = pytest.mark.skipif(not cpu_bf16_support()["native"],
                                reason="CPU has no native bf16 (avx512_bf16 / AMX) or oneDNN lacks it")


@needs_bf16
@pytest.mark.parametrize("which", ["sg2", "sg3"])
def test_bf16_within_tolerance(which, sg2, sg3):
    G = sg2 if which == "sg2" else sg3
    for n in (1, 2):
        ws = _ws(G, n)
        fs = FastSynthesis(G, precision="bf16")
        assert "precision=bf16" in fs.describe()
        rec = ConvRecorder()
        with rec:
            out = fs(ws)
        assert out.dtype == torch.float32
        assert rec.convs and all(dt == torch.bfloat16 for dt, _ in rec.convs)
        rel_max, rel_mean = _rel(out, _exact(G, ws))
        assert 0 < rel_max < LOW_MAX_TOL and rel_mean < LOW_MEAN_TOL


# ---------------------------------------------------------------------------------- FIR resampling


@pytest.mark.parametrize("case", [
    dict(f=[1, 3, 3, 1], up=2, padding=[2, 1, 2, 1], gain=4),           # upsample2d
    dict(f=[1, 3, 3, 1], padding=1, gain=4),                             # filter after transposed conv
    dict(f=[1, 3, 3, 1], down=2, padding=[1, 1, 1, 1]),                  # downsample2d
    dict(f=[1, 2, 3, 4, 5, 4, 3, 2, 1, 0.5], up=2, padding=[7, 4, 6, 5], gain=4, separable=True),
    dict(f=[1, 2, 3, 4, 5, 4, 3, 2, 1, 0.5], down=2, padding=[5, 4, 4, 5], separable=True),
    dict(f=[1, 2, 3, 4, 5, 4, 3, 2, 1, 0.5], up=2, padding=[-3, 2, 1, -1], separable=True),
    dict(f=[1, 2, 3, 1], up=4, padding=[3, 9, 0, 2], flip_filter=True),
    dict(f=[2, 1, 0.5], up=1, down=3, padding=[2, 0, 1, 3], flip_filter=True),
    dict(f=None, up=2, padding=[1, -1, 0, 2]),
    dict(f="2d", up=2, padding=[3, 2, 2, 3], gain=4),
])
def test_fast_upfirdn2d_matches_reference(case):
    case = dict(case)
    g = torch.Generator().manual_seed(0)
    f = case.pop("f")
    sep = case.pop("separable", None)
    if f == "2d":
        f = torch.rand([5, 4], generator=g)
    elif f is not None:
        f = setup_filter(f, separable=sep)
    x = torch.randn([2, 5, 9, 11], generator=g)
    ref = upfirdn2d(x, f, **case)
    for xx in (x, x.contiguous(memory_format=torch.channels_last)):
        out = fast_upfirdn2d(xx, f, **case)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bank", [False, True])
def test_fast_mapping_is_the_mapping_network(bank):
    from stylegan.fast import FastMapping
    G = _make(SG2)
    with torch.no_grad():
        for name, p in G.mapping.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)               # random init leaves them 0: make them count
        G.mapping.w_avg.normal_()
    if bank:
        G.set_latent_bank(torch.randn(50, G.z_dim, generator=torch.Generator().manual_seed(3)), sharpness=8.0)
    fast = FastMapping(G.mapping)
    z = torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(2))
    for psi, cutoff in ((1.0, None), (0.7, None), (0.5, 2)):
        with torch.no_grad():
            ref = G.mapping(z, None, truncation_psi=psi, truncation_cutoff=cutoff)
        out = fast(z, None, truncation_psi=psi, truncation_cutoff=cutoff)
        assert out.shape == ref.shape == (4, G.num_ws, G.w_dim)
        assert _rel(out, ref)[0] < FP32_TOL
    with torch.no_grad():
        for p in G.mapping.parameters():
            p.mul_(1.5)
    stale = fast(z)
    fast.refresh()                              # a snapshot: it follows edited weights only when refreshed
    with torch.no_grad():
        ref = G.mapping(z, None)
    assert _rel(stale, ref)[0] > 1e-3
    assert _rel(fast(z), ref)[0] < FP32_TOL
    with pytest.raises(ValueError, match="z must have shape"):
        fast(torch.zeros(2, G.z_dim + 1))


# ------------------------------------------------------------------------------------ slow / GPU


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sg2", "sg3"])
def test_compile_matches_exact(kind, request):
    G = request.getfixturevalue(kind)                       # sg3: its input layer runs eagerly inside the graph
    ws = _ws(G, 1)
    fs = FastSynthesis(G, precision="fp32", compile=True)
    for _ in range(2):                                       # eager warm-up call, then compiled
        rel_max, _ = _rel(fs(ws), _exact(G, ws))
        assert rel_max < FP32_TOL


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("which", ["sg2", "sg3"])
def test_cuda_fp16(which):
    G = _make(SG2, num_fp16_res=2, conv_clamp=256) if which == "sg2" else _make(SG3)
    G = G.cuda()
    ws = _ws(G, 2).cuda()
    with torch.no_grad():
        ref = G.synthesis(ws, noise_mode="const", force_fp32=True)
    fs = FastSynthesis(G)
    assert fs.precision == "fp16"
    rel_max, rel_mean = _rel(fs(ws), ref)
    assert rel_max < LOW_MAX_TOL and rel_mean < LOW_MEAN_TOL
    rel_max, _ = _rel(FastSynthesis(G, precision="fp32")(ws), ref)
    assert rel_max < 1e-3                                   # TF32 convolutions may be enabled
