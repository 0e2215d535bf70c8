"""Tests for the CUDA ops (cuda_ops/csrc, _kernels, _build, _dispatch), the CUDA -> OpenGL uploader and
`sgvis doctor`.

Without a GPU (CI) these run:
* every .cu file compiles with nvcc (compile only, one architecture) and bindings.cpp passes g++'s syntax
  check against torch's headers (all in parallel; a pass is remembered per source hash in the sgvis cache);
* the kernels' own per-block code, compiled for the host, runs in a CPU emulator (tests/cuda_emulator.py)
  behind the real autograd Functions of the CUDA path and is compared with the reference ops: forward,
  first and second derivatives, float64/32/16/bf16, contiguous / channels_last / strided inputs, forced
  tilings and reversed thread order, and whole StyleGAN2 / StyleGAN3 generators through the dispatcher;
* SGVIS_OPS dispatch, the build fallback (a broken source really built through cpp_extension.load gives
  exactly one warning and the reference ops), `ops_status`, `sgvis doctor`, and the GL uploader's host path.
With a CUDA GPU, the tests marked `gpu` compare the compiled kernels with the reference ops (see
docs/cuda_ops.md for the tolerances); without one they skip with the reason "needs a CUDA GPU".
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import sysconfig
import types
import warnings
from pathlib import Path

import pytest
import torch

import cuda_ops
from cuda_ops import (_build, _dispatch, _kernels, bias_act, bias_act_ref, filtered_lrelu, filtered_lrelu_ref,
                      setup_filter, upfirdn2d, upfirdn2d_ref)
from cuda_ops.gl_interop import PATH_HOST, GLFrameUploader, InteropUnavailable

sys.path.insert(0, os.path.dirname(__file__))
import cuda_emulator  # noqa: E402
from conftest import tiny_generator  # noqa: E402

CSRC = Path(cuda_ops.__file__).resolve().parent / "csrc"
HAS_GPU = torch.cuda.is_available()
gpu = [pytest.mark.gpu, pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")]


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Small tensors: intra-op threads only add contention on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def rand(*shape, seed=0, dtype=torch.float64, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.detach().double().cpu(), ref.detach().double().cpu()
    assert a.shape == ref.shape, f"shape {tuple(a.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(a).all(), "non-finite values"
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


# ---------------------------------------------------------------------------------------------------------
# 1. Compile checks (no GPU needed)

NVCC_FLAGS = ["-std=c++17", "-O3", "-arch=sm_80", "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
              "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__", "--expt-relaxed-constexpr"]


def _check_cache_key(kind: str, flags: list[str], tool_version: str) -> Path:
    h = hashlib.sha256(repr((kind, flags, tool_version)).encode())
    for p in sorted(CSRC.iterdir()):
        h.update(p.name.encode() + p.read_bytes())
    return _build.cache_root().parent / "compile-check" / f"{kind}-{h.hexdigest()[:16]}.ok"


@pytest.fixture(scope="module")
def compile_jobs(tmp_path_factory):
    """Starts every compile check at once (they run in parallel) -> {name: (marker, Popen | None, cmd)}."""
    out = tmp_path_factory.mktemp("nvcc")
    jobs = {}
    nvcc = _build.nvcc_path()
    if nvcc:
        version = _build.nvcc_version() or "?"
        for cu in sorted(CSRC.glob("*.cu")):
            cmd = [nvcc, "-c", *NVCC_FLAGS, "-I", str(CSRC), str(cu), "-o", str(out / (cu.stem + ".o"))]
            jobs[cu.name] = (_check_cache_key(cu.name, NVCC_FLAGS, version), cmd)
    from torch.utils import cpp_extension
    gxx = cuda_emulator.compiler()
    if gxx:
        flags = ["-fsyntax-only", "-std=c++20", "-DTORCH_EXTENSION_NAME=sgvis_check", "-DTORCH_API_INCLUDE_EXTENSION_H"]
        incs = [f"-I{p}" for p in cpp_extension.include_paths()] + [f"-I{sysconfig.get_paths()['include']}",
                                                                     f"-I{CSRC}"]
        cmd = [gxx, *flags, *incs, str(CSRC / "bindings.cpp")]
        jobs["bindings.cpp"] = (_check_cache_key("bindings.cpp", flags, torch.__version__), cmd)
    started = {}
    for name, (marker, cmd) in jobs.items():
        proc = None
        if not marker.exists() or os.environ.get("SGVIS_TEST_NO_COMPILE_CACHE"):
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started[name] = (marker, proc, cmd)
    yield started
    for _, proc, _ in started.values():
        if proc is not None and proc.poll() is None:
            proc.kill()


def _wait(job):
    marker, proc, cmd = job
    if proc is None:
        return  # passed before with these exact sources, flags and compiler
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{output[-6000:]}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("ok\n")


def test_source_list_is_complete():
    assert sorted(p.name for p in CSRC.glob("*.cu")) == ["bias_act.cu", "filtered_lrelu.cu", "upfirdn2d.cu"]
    assert set(_build.SOURCES) == {"bindings.cpp", "bias_act.cu", "filtered_lrelu.cu", "upfirdn2d.cu"}
    headers = {p.name for p in CSRC.iterdir() if p.suffix in (".h", ".cuh")}
    assert headers == set(_build.HEADERS), "a header is missing from _build.HEADERS (the build cache key)"


@pytest.mark.parametrize("name", ["upfirdn2d.cu", "bias_act.cu", "filtered_lrelu.cu"])
def test_nvcc_compiles(name, compile_jobs):
    if name not in compile_jobs:
        pytest.skip("nvcc not found (install the CUDA toolkit to run the compile check)")
    _wait(compile_jobs[name])


def test_binding_compiles_against_torch_headers(compile_jobs):
    if "bindings.cpp" not in compile_jobs:
        pytest.skip("no host C++ compiler")
    _wait(compile_jobs["bindings.cpp"])


def test_binding_needs_no_cuda_headers():
    """The binding reaches the device guard and stream through c10's generic interfaces only, so it builds
    (and the extension imports) without CUDA headers or libc10_cuda symbols."""
    text = (CSRC / "bindings.cpp").read_text()
    assert "cuda_runtime" not in text and "c10/cuda" not in text and "ATen/cuda" not in text
    for cu in CSRC.glob("*.cu*"):
        assert "torch/" not in cu.read_text() and "ATen/" not in cu.read_text(), cu.name


# ---------------------------------------------------------------------------------------------------------
# 2. The kernels in the CPU emulator, behind the CUDA path's autograd Functions

@pytest.fixture(scope="session")
def emu_lib(tmp_path_factory):
    reason = cuda_emulator.unavailable()
    if reason:
        pytest.skip(f"kernel emulator unavailable: {reason}")
    return cuda_emulator.build(tmp_path_factory.mktemp("emu"))


@pytest.fixture
def emu(emu_lib):
    """Installs an emulated extension as the CUDA path's backend; returns a setter for tiles / thread order."""
    ext = cuda_emulator.EmulatedExtension(emu_lib)
    old = _kernels._backend
    _kernels._backend = ext

    def configure(tiles=(0, 0, 0), reverse_threads=False):
        ext.tiles, ext.reverse_threads = tuple(tiles), reverse_threads
        return ext
    configure.ext = ext
    yield configure
    _kernels._backend = old


F1_ASYM = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
F2_ASYM = torch.tensor([[1.0, 2.0], [-0.5, 3.0], [0.25, -1.5]], dtype=torch.float64)
FILTERS = {"none": None, "1d_asym": F1_ASYM, "2d_asym": F2_ASYM, "1331": setup_filter([1, 3, 3, 1]).double(),
           "sep8": setup_filter([1, 2, 4, 6, 6, 4, 2, 1]).double()}


UPFIRDN_CASES = [
    # up, down, padding, flip, gain
    (1, 1, 0, False, 1.0),
    (2, 1, [2, 1, 2, 1], False, 4.0),
    (1, 2, [1, 1, 1, 1], True, 1.0),
    (3, 2, [-1, 2, 1, -2], False, 1.7),
    ((2, 1), (1, 3), [3, -2, -1, 2], True, 0.5),
    (2, 2, [-2, -1, -1, -1], False, 2.0),
]


@pytest.mark.parametrize("fname", list(FILTERS))
@pytest.mark.parametrize("up,down,padding,flip,gain", UPFIRDN_CASES, ids=str)
def test_emulated_upfirdn2d_matches_reference(emu, fname, up, down, padding, flip, gain):
    emu()
    x = rand(2, 3, 7, 9, seed=1)
    f = FILTERS[fname]
    kw = dict(up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    try:
        ref = upfirdn2d_ref(x, f, **kw)
    except RuntimeError:  # the reference's conv2d refuses (no output pixels): the CUDA path says so too
        with pytest.raises(ValueError, match="no output pixels"):
            _kernels.upfirdn2d(x, f, **kw)
        return
    out = _kernels.upfirdn2d(x, f, **kw)
    assert out.dtype == x.dtype
    assert rel_err(out, ref) < 1e-13


@pytest.mark.parametrize("tiles", [(1, 1, 1), (3, 2, 2), (5, 7, 3), (16, 1, 1)], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_emulated_upfirdn2d_tilings_and_layouts(emu, tiles, layout):
    """Partial tiles, several tiles per plane, several channels per block, both work orders; results must
    not depend on the thread order inside a phase."""
    x = rand(2, 5, 11, 13, seed=2)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "strided":
        x = rand(2, 5, 22, 27, seed=2)[:, :, ::2, 1::2]
    for f, kw in [(FILTERS["1331"], dict(up=2, padding=[2, 1, 2, 1], gain=4.0)),
                  (FILTERS["sep8"], dict(down=2, padding=[3, 3, 3, 3])),
                  (F2_ASYM, dict(up=(1, 2), down=(3, 1), padding=[1, 2, 0, -1], flip_filter=True))]:
        ref = upfirdn2d_ref(x, f, **kw)
        emu(tiles)
        a = _kernels.upfirdn2d(x, f, **kw)
        emu(tiles, reverse_threads=True)
        b = _kernels.upfirdn2d(x, f, **kw)
        assert rel_err(a, ref) < 1e-13 and torch.equal(a, b)
        if layout == "channels_last":
            assert a.is_contiguous(memory_format=torch.channels_last)
    plans = emu.ext.plans
    assert all(p["c_fastest"] == (layout == "channels_last") for p in plans)
    assert all((p["tile_w"], p["tile_h"], p["tile_c"]) == tiles for p in plans)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)],
                         ids=str)
def test_emulated_low_precision_upfirdn2d_and_flrelu(emu, dtype, tol):
    """Reduced precision in, accumulation in float32: error vs a float64 computation on the same (rounded)
    inputs is about one rounding of the output."""
    emu()
    x = rand(2, 4, 12, 10, seed=3).to(dtype)
    f = setup_filter([1, 3, 3, 1])
    out = _kernels.upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4.0)
    assert out.dtype == dtype
    assert rel_err(out, upfirdn2d_ref(x.double(), f.double(), up=2, padding=[2, 1, 2, 1], gain=4.0)) < tol
    b = rand(4, seed=4).to(dtype)
    fu, fd = setup_filter([1, 2, 4, 6, 6, 4, 2, 1]), setup_filter([1, 3, 3, 1])
    kw = dict(up=2, down=2, padding=[5, 4, 5, 4], clamp=0.9)
    out = _kernels.filtered_lrelu(x, fu, fd, b, **kw)
    assert out.dtype == dtype
    assert rel_err(out, filtered_lrelu_ref(x.double(), fu.double(), fd.double(), b.double(), **kw)) < 2 * tol


@pytest.mark.parametrize("kw", [dict(up=2, padding=[2, 1, 2, 1]), dict(down=2, padding=1),
                                dict(up=(2, 1), down=(1, 3), padding=[1, -1, 2, 0]),
                                dict(up=3, down=2, padding=[-1, 2, 1, 1], flip_filter=True, gain=2.0)], ids=str)
@pytest.mark.parametrize("fname", ["1d_asym", "2d_asym"])
def test_emulated_upfirdn2d_gradients(emu, kw, fname):
    emu()
    x = rand(1, 2, 4, 5, seed=40).requires_grad_()
    f = FILTERS[fname]
    assert torch.autograd.gradcheck(lambda x: _kernels.upfirdn2d(x, f, **kw), (x,))
    assert torch.autograd.gradgradcheck(lambda x: _kernels.upfirdn2d(x, f, **kw), (x,))


ACTS = list(_kernels.ACT_IDS)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("alpha,gain,clamp", [(None, None, None), (0.05, 1.7, 0.9)], ids=str)
def test_emulated_bias_act_values_and_derivatives(emu, act, alpha, gain, clamp):
    """Forward, dx / db, and every second derivative (d/dx, d/db, d/d(dy) of a contraction of the
    gradient) equal the reference's autograd results."""
    emu()
    x = rand(2, 5, 4, 3, seed=20, scale=3.0).requires_grad_()
    b = rand(5, seed=21).requires_grad_()
    kw = dict(act=act, alpha=alpha, gain=gain, clamp=clamp)
    results = []
    for fn in (bias_act_ref, _kernels.bias_act):
        y = fn(x, b, **kw)
        gy = rand(*y.shape, seed=22).requires_grad_()
        gx, gb = torch.autograd.grad(y, (x, b), gy, create_graph=True)
        w = rand(*x.shape, seed=23)
        second = torch.autograd.grad((gx * w).sum() + (gb * gb).sum(), (x, b, gy), allow_unused=True)
        second = [torch.zeros_like(t) if s is None else s for s, t in zip(second, (x, b, gy))]
        results.append([y, gx, gb, *second])
    for name, a, r in zip(["y", "dx", "db", "d2x", "d2b", "d2dy"], results[1], results[0]):
        assert torch.allclose(a, r, rtol=1e-12, atol=1e-12), f"{name}: max diff {(a - r).abs().max():.3g}"


@pytest.mark.parametrize("dim,shape", [(0, (3, 2, 4)), (2, (2, 3, 4)), (-1, (2, 3, 5)), (1, (6, 7))])
def test_emulated_bias_act_dims_and_layouts(emu, dim, shape):
    emu()
    x = rand(*shape, seed=24, scale=2.0)
    for xx in (x, x.transpose(0, -1)):  # contiguous, and a transposed (dense but permuted) view
        bb = rand(xx.shape[dim], seed=25)
        out = _kernels.bias_act(xx, bb, dim=dim, act="swish", clamp=1.0)
        assert rel_err(out, bias_act_ref(xx, bb, dim=dim, act="swish", clamp=1.0)) < 1e-13
    x4 = rand(2, 6, 5, 4, seed=26).to(memory_format=torch.channels_last)
    b4 = rand(6, seed=27)
    out = _kernels.bias_act(x4, b4, act="lrelu", clamp=0.5)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert rel_err(out, bias_act_ref(x4, b4, act="lrelu", clamp=0.5)) < 1e-13
    assert rel_err(_kernels.bias_act(x, None, act="tanh"), bias_act_ref(x, None, act="tanh")) < 1e-13
    xs = x[..., ::2]  # strided: copied to a dense layout first
    bs = rand(xs.shape[dim], seed=28)
    assert rel_err(_kernels.bias_act(xs, bs, dim=dim, act="elu"), bias_act_ref(xs, bs, dim=dim, act="elu")) < 1e-13


def test_emulated_bias_act_third_derivative_is_refused(emu):
    emu()
    x, b = rand(2, 3, seed=1).requires_grad_(), rand(3, seed=2).requires_grad_()
    y = _kernels.bias_act(x, b, act="tanh")
    gx, = torch.autograd.grad(y.sum(), x, create_graph=True)
    g2, = torch.autograd.grad(gx.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(g2.sum(), x)


FLRELU_CASES = [
    # up, down, fu, fd, padding
    (1, 1, "none", "none", 0),
    (2, 1, "1331", "none", [2, 1, 2, 1]),
    (1, 2, "none", "1331", [1, 1, 1, 1]),
    (2, 2, "sep8", "2d_asym", [5, 4, 3, 4]),
    (3, 2, "1d_asym", "sep8", [4, 5, 6, 3]),
    (2, 2, "2d_asym", "1d_asym", [-1, 3, 2, 0]),
    (2, 1, "none", "none", 1),
]


@pytest.mark.parametrize("up,down,fu,fd,padding", FLRELU_CASES, ids=str)
@pytest.mark.parametrize("clamp,flip", [(None, False), (0.7, True)], ids=str)
def test_emulated_filtered_lrelu_values_and_gradients(emu, up, down, fu, fd, padding, clamp, flip):
    emu()
    x = rand(2, 3, 5, 6, seed=30, scale=2.0).requires_grad_()
    b = rand(3, seed=31).requires_grad_()
    kw = dict(up=up, down=down, padding=padding, clamp=clamp, flip_filter=flip, gain=1.3, slope=0.1)
    results = []
    for fn in (filtered_lrelu_ref, _kernels.filtered_lrelu):
        y = fn(x, FILTERS[fu], FILTERS[fd], b, **kw)
        gy = rand(*y.shape, seed=32).requires_grad_()
        gx, gb = torch.autograd.grad(y, (x, b), gy, create_graph=True)
        d2, = torch.autograd.grad((gx * rand(*x.shape, seed=33)).sum() + gb.sum(), gy)
        results.append((y, gx, gb, d2))
    for name, a, r in zip(["y", "dx", "db", "d2dy"], results[1], results[0]):
        assert rel_err(a, r) < 1e-12, name
    if clamp is not None:
        unclamped = filtered_lrelu_ref(x, FILTERS[fu], FILTERS[fd], b, **dict(kw, clamp=None))
        assert (unclamped - results[0][0]).abs().max() > 1e-3  # the clamp bites on this data


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_emulated_filtered_lrelu_stylegan3_layers(emu, layout):
    """StyleGAN3-like layers: 12/24-tap separable filters, up 2 or 4, down 2, negative padding, a radial
    (2-D) down filter, channels_last, fp32; gradients checked with gradcheck in float64."""
    import stylegan.stylegan3 as sg3
    emu()
    fu12 = sg3.design_lowpass_filter(12, 16, 8, 64)
    fu24 = sg3.design_lowpass_filter(24, 16, 8, 128)
    fd12 = sg3.design_lowpass_filter(12, 16, 8, 64)
    fdr = sg3.design_lowpass_filter(12, 16, 8, 64, radial=True)
    x = rand(1, 6, 18, 18, seed=50, dtype=torch.float32, scale=2.0)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    b = rand(6, seed=51, dtype=torch.float32)
    layers = [(fu12, fd12, 2, [9, 8, 9, 8]), (fu24, fd12, 4, [-6, -9, -6, -9]), (fu12, fdr, 2, [9, 8, 9, 8])]
    for fu, fd, up, pad in layers:
        kw = dict(up=up, down=2, padding=pad, clamp=1.5)
        out = _kernels.filtered_lrelu(x, fu, fd, b, **kw)
        assert rel_err(out, filtered_lrelu_ref(x, fu, fd, b, **kw)) < 1e-5
        if layout == "channels_last":
            assert out.is_contiguous(memory_format=torch.channels_last)
    xd = x.double()[:, :2, :9, :9].contiguous().requires_grad_()
    bd = b.double()[:2].clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, b: _kernels.filtered_lrelu(x, fu12.double(), fdr.double(), b, up=2, down=2, padding=[9, 8, 9, 8]),
        (xd, bd), fast_mode=True)


def test_emulated_plans_fit_shared_memory(emu):
    """Tile choice at real layer sizes: 48 KiB of shared memory at most, about 1024 outputs per block."""
    emu()
    x = torch.zeros(1, 64, 129, 129)
    _kernels.upfirdn2d(x, setup_filter([1, 3, 3, 1]), padding=[1, 1, 1, 1], gain=4)
    _kernels.upfirdn2d(x.to(memory_format=torch.channels_last), setup_filter([1, 3, 3, 1]), down=2, padding=1)
    import stylegan.stylegan3 as sg3
    f = sg3.design_lowpass_filter(24, 16, 8, 128)
    _kernels.filtered_lrelu(torch.zeros(1, 8, 40, 40), f, sg3.design_lowpass_filter(12, 16, 8, 64), up=4, down=2,
                            padding=[-6, -9, -6, -9])
    for p in emu.ext.plans:
        assert p["smem"] <= 48 * 1024
        assert 256 <= p["tile_w"] * p["tile_h"] * p["tile_c"] <= 1024, p


@pytest.mark.parametrize("kind", ["stylegan2", "stylegan3"])
def test_emulated_generators_through_dispatch(emu, monkeypatch, kind):
    """Whole networks with every op routed to the CUDA path (emulated) match the reference networks, and
    so do gradients with respect to ws."""
    emu()
    G = tiny_generator(kind, resolution=32 if kind == "stylegan2" else 16)
    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0)), None)
    monkeypatch.setenv("SGVIS_OPS", "ref")
    ref = G.synthesis(ws.clone().requires_grad_(), noise_mode="const")
    monkeypatch.setenv("SGVIS_OPS", "auto")
    monkeypatch.setattr(_dispatch, "EMULATE_ON_CPU", True)
    calls_before = dict(emu.ext.calls)
    w1 = ws.clone().requires_grad_()
    out = G.synthesis(w1, noise_mode="const")
    assert emu.ext.calls["chain"] > calls_before["chain"]
    assert rel_err(out, ref) < 1e-5
    g = rand(*out.shape, seed=5, dtype=torch.float32)
    gout, = torch.autograd.grad(out, w1, g)
    monkeypatch.setenv("SGVIS_OPS", "ref")
    w2 = ws.clone().requires_grad_()
    gref, = torch.autograd.grad(G.synthesis(w2, noise_mode="const"), w2, g)
    assert rel_err(gout, gref) < 1e-4


# ---------------------------------------------------------------------------------------------------------
# 3. Dispatch, build and fallback

@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """An isolated build state and cache directory; restored afterwards."""
    monkeypatch.setenv("SGVIS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SGVIS_OPS_REBUILD", raising=False)
    _build.reset()
    yield tmp_path
    _build.reset()


def test_ref_mode_forces_reference(monkeypatch, emu):
    emu()
    monkeypatch.setattr(_dispatch, "EMULATE_ON_CPU", True)
    x = rand(1, 2, 5, 5, seed=1)
    monkeypatch.setenv("SGVIS_OPS", "ref")
    calls = dict(emu.ext.calls)
    upfirdn2d(x, FILTERS["1331"], up=2, padding=[2, 1, 2, 1])
    bias_act(x, rand(2), act="lrelu")
    filtered_lrelu(x, FILTERS["1331"], None, up=2, padding=[2, 1, 2, 1])
    assert emu.ext.calls == calls
    monkeypatch.setenv("SGVIS_OPS", "auto")
    upfirdn2d(x, FILTERS["1331"], up=2, padding=[2, 1, 2, 1])
    assert emu.ext.calls["chain"] == calls["chain"] + 1


def test_auto_mode_on_cpu_uses_reference_silently(monkeypatch):
    monkeypatch.setenv("SGVIS_OPS", "auto")
    monkeypatch.setattr(_kernels, "upfirdn2d", lambda *a, **k: pytest.fail("CUDA path taken for a CPU tensor"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = upfirdn2d(rand(1, 1, 4, 4), FILTERS["1331"], padding=[2, 1, 2, 1])
    assert out.shape == (1, 1, 4, 4)


@pytest.mark.skipif(HAS_GPU, reason="checks the behaviour without a GPU")
def test_cuda_mode_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("SGVIS_OPS", "cuda")
    for call in (lambda: upfirdn2d(rand(1, 1, 4, 4), None), lambda: bias_act(rand(2, 3)),
                 lambda: filtered_lrelu(rand(1, 1, 4, 4))):
        with pytest.raises(cuda_ops.CudaOpsUnavailable, match="SGVIS_OPS=cuda, but .*(CPU-only|no CUDA GPU)"):
            call()


def test_unknown_mode_warns_once_and_means_auto(monkeypatch):
    monkeypatch.setenv("SGVIS_OPS", "fastest-please")
    monkeypatch.setattr(_dispatch, "_bad_mode_warned", set())
    with pytest.warns(RuntimeWarning, match="not one of auto, cuda, ref"):
        assert _dispatch.mode() == "auto"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _dispatch.mode() == "auto"


def test_cuda_mode_refuses_what_the_kernels_cannot_do(monkeypatch, emu):
    emu()
    monkeypatch.setattr(_dispatch, "EMULATE_ON_CPU", False)
    monkeypatch.setattr(_build, "load_extension", lambda warn=True: object())
    fake = types.SimpleNamespace(is_cuda=True)
    monkeypatch.setenv("SGVIS_OPS", "cuda")
    with pytest.raises(cuda_ops.CudaOpsUnavailable, match="gradients with respect to the filter"):
        _dispatch.use_cuda("upfirdn2d", fake, lambda: "gradients with respect to the filter")
    assert _dispatch.use_cuda("upfirdn2d", fake, lambda: None)
    monkeypatch.setenv("SGVIS_OPS", "auto")
    assert not _dispatch.use_cuda("upfirdn2d", fake, lambda: "gradients with respect to the filter")
    f = FILTERS["1331"].clone().requires_grad_()
    assert _kernels.upfirdn2d_blocker(rand(1, 1, 4, 4), f) == "gradients with respect to the filter"
    assert _kernels.bias_act_blocker(torch.zeros(2, 3, dtype=torch.int32)).startswith("dtype")
    assert _kernels.filtered_lrelu_blocker(torch.zeros(0, 3, 4, 4), None, None) == "empty input"


def _broken_build(monkeypatch, tmp_path):
    """Point the real build (cpp_extension.load + ninja + nvcc) at one broken CUDA source."""
    if _build.nvcc_path() is None or not _build.ninja_available():
        pytest.skip("needs nvcc and ninja to run a real (failing) build")
    src = tmp_path / "csrc"
    src.mkdir()
    (src / "broken.cu").write_text("__global__ void k() { this_is_not_cuda; }\n")
    monkeypatch.setattr(_build, "CSRC", src)
    monkeypatch.setattr(_build, "SOURCES", ("broken.cu",))
    monkeypatch.setattr(_build, "HEADERS", ())
    monkeypatch.setattr(_build, "unavailable_reason", lambda: None)  # pretend there is a GPU
    monkeypatch.setattr(_build, "device_archs", lambda: ["8.0"])
    from torch.utils import cpp_extension
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", _build.cuda_home())


def test_failed_build_falls_back_with_one_warning(monkeypatch, fresh_build):
    _broken_build(monkeypatch, fresh_build)
    monkeypatch.setenv("SGVIS_OPS", "auto")
    fake = types.SimpleNamespace(is_cuda=True)  # what the dispatcher sees of a CUDA tensor
    with pytest.warns(RuntimeWarning) as record:
        assert _dispatch.use_cuda("upfirdn2d", fake) is False
        assert _dispatch.use_cuda("bias_act", fake) is False
        assert _build.load_extension() is None
    msgs = [str(w.message) for w in record if "CUDA ops unavailable" in str(w.message)]
    assert len(msgs) == 1, msgs
    assert "building the CUDA ops failed" in msgs[0] and "this_is_not_cuda" in msgs[0]
    assert "Fix:" in msgs[0] and "SGVIS_OPS=ref" in msgs[0]
    failed = _build.build_dir() / "FAILED"
    assert failed.exists()
    # A new process (reset) does not compile again: it reports the recorded failure.
    _build.reset()
    monkeypatch.setattr(_build, "_compile_and_import", lambda d: pytest.fail("rebuilt despite FAILED"))
    with pytest.warns(RuntimeWarning, match="an earlier build failed"):
        assert _build.load_extension() is None
    # SGVIS_OPS=cuda turns the failure into an error.
    monkeypatch.setenv("SGVIS_OPS", "cuda")
    with pytest.raises(cuda_ops.CudaOpsUnavailable, match="cannot be loaded"):
        _dispatch.use_cuda("upfirdn2d", fake)
    status = cuda_ops.ops_status()
    assert status["extension"]["state"] == "failed"
    assert all(op["active"] == "ref" and not op["compiled"] for op in status["ops"].values())


def test_build_cache_location_and_lock(monkeypatch, fresh_build):
    monkeypatch.setattr(_build, "device_archs", lambda: ["8.6", "9.0"])
    d = _build.build_dir()
    assert str(d).startswith(str(fresh_build / "cache" / "torch_extensions"))
    assert f"-cu{torch.version.cuda or 'none'}-sm86_90" in d.parent.name and d.name.startswith("sgvis_cuda_ops_")
    # The lock is exclusive across processes: a child cannot take it while we hold it.
    lock = d.parent / "x.lock"
    code = ("import fcntl,sys; f=open(sys.argv[1],'a+')\n"
            "try:\n fcntl.flock(f.fileno(), fcntl.LOCK_EX|fcntl.LOCK_NB); print('got')\n"
            "except BlockingIOError: print('busy')")
    with _build._FileLock(lock):
        assert subprocess.run([sys.executable, "-c", code, str(lock)], capture_output=True,
                              text=True).stdout.strip() == "busy"
    after = subprocess.run([sys.executable, "-c", code, str(lock)], capture_output=True, text=True)
    assert after.stdout.strip() == "got"


@pytest.mark.skipif(HAS_GPU, reason="checks the report without a GPU")
def test_ops_status_without_gpu(fresh_build):
    st = cuda_ops.ops_status()
    assert st["cuda_available"] is False
    assert st["extension"]["state"] == "unavailable"
    assert set(st["ops"]) == {"upfirdn2d", "bias_act", "filtered_lrelu"}
    assert all(op["active"] == "ref" and op["compiled"] is False for op in st["ops"].values())


# ---------------------------------------------------------------------------------------------------------
# 4. sgvis doctor

def _doctor(*argv) -> tuple[int, str]:
    import contextlib
    import io
    from sgvis import doctor
    parser = argparse.ArgumentParser(prog="sgvis")
    doctor.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["doctor", *argv])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = args.func(args)
    return rc, buf.getvalue()


def test_doctor_reports_ops_and_registered_checks(monkeypatch):
    from sgvis import doctor
    monkeypatch.setattr(doctor, "_CHECKS", dict(doctor._CHECKS))
    doctor.register_check("audio", lambda: {"input devices": 0})
    doctor.register_check("broken", lambda: 1 / 0)
    rc, out = _doctor()
    assert rc == 0
    for section in ("[torch / GPU]", "[CUDA toolkit]", "[CUDA ops]", "[CUDA -> OpenGL]", "[audio]", "[OpenGL]",
                    "[broken]"):
        assert section in out
    assert "input devices  0" in out and "ZeroDivisionError" in out
    for op in ("upfirdn2d", "bias_act", "filtered_lrelu"):
        assert op in out
    if not HAS_GPU:
        assert "no CUDA GPU: reference ops active" in out


# ---------------------------------------------------------------------------------------------------------
# 5. CUDA -> OpenGL uploader (host path here; interop needs a GPU and a GL context)

class FakeTexture:
    def __init__(self, w, h, components=4, dtype="f1"):
        self.size, self.components, self.dtype, self.glo = (w, h), components, dtype, 7
        self.data = None

    def write(self, data):
        self.data = bytes(data)


class FakeBuffer:
    def __init__(self, size):
        self.size, self.glo, self.data = size, 8, None

    def write(self, data):
        self.data = bytes(data)


def test_gl_uploader_host_path_and_alpha():
    tex = FakeTexture(5, 3, components=4)
    up = GLFrameUploader(tex)
    frame = torch.arange(3 * 5 * 3, dtype=torch.uint8).reshape(3, 5, 3)
    assert up.upload(frame) == PATH_HOST
    got = torch.frombuffer(bytearray(tex.data), dtype=torch.uint8).reshape(3, 5, 4)
    assert torch.equal(got[..., :3], frame) and (got[..., 3] == 255).all()
    assert up.reason == "the frame is a CPU tensor"
    with pytest.raises(ValueError, match="does not fit"):
        up.upload(torch.zeros(4, 5, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="dtype"):
        up.upload(torch.zeros(3, 5, 4))
    buf = FakeBuffer(60)
    assert GLFrameUploader(buf).upload(torch.ones(3, 5, 4, dtype=torch.uint8)) == PATH_HOST and len(buf.data) == 60
    with pytest.raises(InteropUnavailable, match="needs CUDA tensors"):
        GLFrameUploader(tex, mode="interop").upload(frame)


@pytest.mark.skipif(HAS_GPU, reason="checks the report without a GPU")
def test_gl_interop_status_without_gpu():
    from cuda_ops.gl_interop import interop_status
    st = interop_status()
    assert st["available"] is False and "host copy" in st["reason"]


# ---------------------------------------------------------------------------------------------------------
# 6. The benchmark's call recorder (the timing itself needs a GPU)

def test_bench_ops_records_the_network_calls():
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_ops", Path(__file__).resolve().parent.parent / "bench" /
                                                  "bench_ops.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    use_cuda = _dispatch.use_cuda
    for kind, ops in [("stylegan2", {"upfirdn2d", "bias_act"}), ("stylegan3", {"filtered_lrelu"})]:
        calls = bench.record_calls(kind, 32, channel_base=512, channel_max=16, device="cpu")
        assert {c["op"] for c in calls} >= ops and all(c["count"] >= 1 for c in calls)
        for c in calls[:6]:
            x, a, kw = bench.build_call(c, 2, torch.float32, "cpu")
            assert getattr(cuda_ops, c["op"])(x, *a, **kw).shape[0] == 2
    assert _dispatch.use_cuda is use_cuda and _kernels.upfirdn2d.__module__ == "cuda_ops._kernels"
    assert "upfirdn2d" in bench.table([dict(kind="stylegan2", resolution=512, batch=1, dtype="fp32", op="upfirdn2d",
                                            calls=9, ref_ms=1.0, cuda_ms=0.25, speedup=4.0, rel_err=1e-7)], False)


# ---------------------------------------------------------------------------------------------------------
# 7. On a GPU: the compiled kernels against the reference ops

def _gpu_tol(dtype):
    return {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2, torch.float64: 1e-12}[dtype]


def _assert_parity(out, ref_lowp, ref64, dtype, what):
    """fp32/64: relative error (max|diff| / max|ref|) below _gpu_tol.  fp16/bf16: the CUDA result is at
    least as close to a float64 computation as the reference op run in that dtype (within 2x), or below
    _gpu_tol."""
    if dtype in (torch.float32, torch.float64):
        assert rel_err(out, ref64) <= _gpu_tol(dtype), what
    else:
        e_cuda, e_ref = rel_err(out, ref64), rel_err(ref_lowp, ref64)
        assert e_cuda <= max(2 * e_ref, _gpu_tol(dtype)), f"{what}: cuda {e_cuda:.3g} vs reference {e_ref:.3g}"


# Layer configurations of a StyleGAN2 at 512^2 / 1024^2 (channel_base 32768, channel_max 512) and a
# StyleGAN3-T 1024^2, as recorded from the networks (bench/bench_ops.py prints the full list).
GPU_UPFIRDN = [
    ((4, 512, 9, 9), "1331", dict(padding=[1, 1, 1, 1], gain=4)),                    # conv0 up, 4 -> 8
    ((4, 512, 65, 65), "1331", dict(padding=[1, 1, 1, 1], gain=4)),                  # conv0 up, 32 -> 64
    ((2, 128, 257, 257), "1331", dict(padding=[1, 1, 1, 1], gain=4)),                # conv0 up, 128 -> 256
    ((1, 32, 1025, 1025), "1331", dict(padding=[1, 1, 1, 1], gain=4)),               # conv0 up, 512 -> 1024
    ((4, 3, 256, 256), "1331", dict(up=2, padding=[2, 1, 2, 1], gain=4)),            # skip image upsample2d
    ((1, 3, 512, 512), "1331", dict(up=2, padding=[2, 1, 2, 1], gain=4)),
    ((4, 256, 128, 128), "1331", dict(down=2, padding=[1, 1, 1, 1])),                # D downsample
    ((2, 64, 130, 130), "sep8", dict(up=2, down=1, padding=[4, 3, 4, 3])),           # long separable filter
]
GPU_FLRELU = [  # x shape, fu taps, fd taps (radial = 2-D), up, padding
    ((2, 512, 38, 38), 12, 12, False, 2, [9, 8, 9, 8]),
    ((1, 512, 54, 54), 24, 12, False, 4, [-6, -9, -6, -9]),
    ((1, 128, 150, 150), 12, 12, True, 2, [9, 8, 9, 8]),
    ((1, 64, 276, 276), 12, 12, False, 2, [9, 8, 9, 8]),
]
GPU_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _cuda_filter(name):
    return FILTERS[name].float().cuda() if FILTERS[name] is not None else None


@pytest.fixture
def cuda_mode(monkeypatch):
    monkeypatch.setenv("SGVIS_OPS", "cuda")
    if _build.load_extension(warn=False) is None:
        pytest.fail(f"CUDA ops failed to build on this GPU machine: {_build.failure()}")


@pytest.mark.parametrize("shape,fname,kw", GPU_UPFIRDN, ids=str)
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True])
def test_gpu_upfirdn2d_parity(cuda_mode, shape, fname, kw, dtype, channels_last):
    x = torch.randn(shape, device="cuda").to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    f = _cuda_filter(fname)
    out = upfirdn2d(x, f, **kw)
    assert out.dtype == dtype
    ref = upfirdn2d_ref(x, f, **kw)
    ref64 = upfirdn2d_ref(x.double(), f.double(), **kw)
    _assert_parity(out, ref, ref64, dtype, "forward")
    if channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)
    xg = x.detach().float().requires_grad_()
    gy = torch.randn_like(ref64).float()
    gx, = torch.autograd.grad(upfirdn2d(xg, f, **kw), xg, gy)
    gref, = torch.autograd.grad(upfirdn2d_ref(xg, f, **kw), xg, gy)
    assert rel_err(gx, gref) <= 1e-5


@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("act", ACTS)
def test_gpu_bias_act_parity(cuda_mode, dtype, act):
    for shape, clamp in [((4, 512, 8, 8), None), ((2, 64, 512, 512), 256.0), ((1, 32, 1024, 1024), 256.0),
                         ((16, 512), None)]:
        x = (3 * torch.randn(shape, device="cuda")).to(dtype)
        b = torch.randn(shape[1], device="cuda").to(dtype)
        out = bias_act(x, b, act=act, clamp=clamp)
        _assert_parity(out, bias_act_ref(x, b, act=act, clamp=clamp),
                       bias_act_ref(x.double(), b.double(), act=act, clamp=clamp), dtype, f"{act} {shape}")
        if x.ndim == 4:
            xc = x.to(memory_format=torch.channels_last)
            assert torch.equal(bias_act(xc, b, act=act, clamp=clamp), out)


@pytest.mark.parametrize("act", ACTS)
def test_gpu_bias_act_double_backward(cuda_mode, act):
    """R1-style double backward in float64 on the GPU: gradcheck and gradgradcheck of the kernels."""
    x = (3 * torch.randn(2, 6, 5, 4, device="cuda", dtype=torch.float64)).requires_grad_()
    b = torch.randn(6, device="cuda", dtype=torch.float64).requires_grad_()
    fn = lambda x, b: bias_act(x, b, act=act, alpha=0.1, gain=1.3)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.parametrize("case", GPU_FLRELU, ids=str)
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True])
def test_gpu_filtered_lrelu_parity(cuda_mode, case, dtype, channels_last):
    import stylegan.stylegan3 as sg3
    shape, nu, nd, radial, up, pad = case
    fu = sg3.design_lowpass_filter(nu, 16, 8, 32 * up).cuda()
    fd = sg3.design_lowpass_filter(nd, 16, 8, 64, radial=radial).cuda()
    x = torch.randn(shape, device="cuda").to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    b = torch.randn(shape[1], device="cuda").to(dtype)
    kw = dict(up=up, down=2, padding=pad, clamp=256.0)
    out = filtered_lrelu(x, fu, fd, b, **kw)
    _assert_parity(out, filtered_lrelu_ref(x, fu, fd, b, **kw),
                   filtered_lrelu_ref(x.double(), fu.double(), fd.double(), b.double(), **kw), dtype, "forward")
    xg, bg = x.detach().float().requires_grad_(), b.detach().float().requires_grad_()
    gy = torch.randn(out.shape, device="cuda")
    g = torch.autograd.grad(filtered_lrelu(xg, fu, fd, bg, **kw), (xg, bg), gy)
    gr = torch.autograd.grad(filtered_lrelu_ref(xg, fu, fd, bg, **kw), (xg, bg), gy)
    assert rel_err(g[0], gr[0]) <= 1e-5 and rel_err(g[1], gr[1]) <= 1e-5


def test_gpu_filtered_lrelu_gradcheck(cuda_mode):
    import stylegan.stylegan3 as sg3
    fu = sg3.design_lowpass_filter(12, 16, 8, 64).cuda().double()
    fd = sg3.design_lowpass_filter(12, 16, 8, 64, radial=True).cuda().double()
    x = torch.randn(1, 3, 9, 9, device="cuda", dtype=torch.float64).requires_grad_()
    b = torch.randn(3, device="cuda", dtype=torch.float64).requires_grad_()
    fn = lambda x, b: filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=[9, 8, 9, 8])  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, b), fast_mode=True)


@pytest.mark.parametrize("kind,res", [("stylegan2", 512), ("stylegan2", 1024), ("stylegan3", 1024)], ids=str)
def test_gpu_generator_parity(cuda_mode, monkeypatch, kind, res):
    """Whole networks at full size: the CUDA ops and the reference ops give the same images (README's
    exactness bar), fp32."""
    from stylegan.generator import Generator
    torch.manual_seed(0)
    G = Generator(kind, z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3,
                  synthesis_kwargs=dict(channel_base=32768, channel_max=512)).eval().cuda()
    ws = G.mapping(torch.randn(2, 512, device="cuda"), None, truncation_psi=0.7)
    with torch.no_grad():
        img = G.synthesis(ws, noise_mode="const", force_fp32=True)
        monkeypatch.setenv("SGVIS_OPS", "ref")
        ref = G.synthesis(ws, noise_mode="const", force_fp32=True)
    assert (img - ref).abs().max() <= 1e-4 * ref.abs().max() + 1e-6


def test_gpu_ops_status_reports_loaded(cuda_mode):
    st = cuda_ops.ops_status()
    assert st["extension"]["state"] == "loaded"
    assert all(op["active"] == "cuda" and op["compiled"] for op in st["ops"].values())


def test_gpu_gl_interop_texture_roundtrip():
    """Needs a GPU, moderngl and an EGL driver on that GPU (NVIDIA's libEGL)."""
    moderngl = pytest.importorskip("moderngl")
    try:
        ctx = moderngl.create_context(standalone=True, backend="egl")
    except Exception as e:  # no EGL on the GPU: nothing to test
        pytest.skip(f"no EGL context: {e}")
    renderer = ctx.info.get("GL_RENDERER", "")
    if "NVIDIA" not in renderer.upper():
        pytest.skip(f"the EGL context renders on {renderer!r}, not the NVIDIA GPU")
    tex = ctx.texture((64, 32), 4)
    frame = torch.randint(0, 256, (32, 64, 4), dtype=torch.uint8, device="cuda")
    up = GLFrameUploader(tex, mode="interop")
    assert up.upload(frame) == "cuda-gl interop"
    ctx.finish()
    got = torch.frombuffer(bytearray(tex.read()), dtype=torch.uint8).reshape(32, 64, 4)
    assert torch.equal(got, frame.cpu())
    up.release()


for _name, _obj in list(globals().items()):  # every test_gpu_* carries the gpu marker and the skip reason
    if _name.startswith("test_gpu_") and callable(_obj):
        for _mark in gpu:
            _obj = _mark(_obj)
        globals()[_name] = _obj
