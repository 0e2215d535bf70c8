"""CPU emulator of sgvis's CUDA extension, for tests on machines without a GPU.

`EmulatedExtension` has the compiled module's interface (chain, bias_act, mask_mul, abi_version) and runs
the kernels' own per-block code (cuda_ops/csrc/*.cuh, compiled for the host by g++) on CPU tensors, block
by block, phase by phase, thread by thread (see cuda_emulator.cpp).  With it installed as
cuda_ops._kernels._backend, everything on the CUDA path except the launch itself, the torch binding and
real parallel execution runs here: tap orientation, padding and size arithmetic, tiling, shared-memory
window indexing, dtype conversions, activation formulas and the autograd Functions.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "cuda_emulator.cpp"
CSRC = HERE.parent / "cuda_ops" / "csrc"
HEADERS = ("ops.h", "common.cuh", "chain.cuh", "bias_act.cuh")
DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}


def cuda_include_dir() -> str | None:
    """A directory with cuda_fp16.h / cuda_bf16.h (host-usable headers of the CUDA toolkit)."""
    from cuda_ops import _build
    home = _build.cuda_home()
    for d in ([os.path.join(home, "include"), os.path.join(home, "targets", "x86_64-linux", "include")]
              if home else []):
        if os.path.exists(os.path.join(d, "cuda_fp16.h")):
            return d
    return None


def compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")


def unavailable() -> str | None:
    if compiler() is None:
        return "no host C++ compiler (g++)"
    if cuda_include_dir() is None:
        return "no CUDA toolkit headers (cuda_fp16.h)"
    return None


def build(out_dir: Path) -> Path:
    """Compile the emulator into out_dir (reused while the sources are unchanged)."""
    h = hashlib.sha256(SOURCE.read_bytes())
    for name in HEADERS:
        h.update((CSRC / name).read_bytes())
    lib = Path(out_dir) / f"libsgvis_emu_{h.hexdigest()[:12]}.so"
    if lib.exists():
        return lib
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tmp = lib.with_suffix(f".{os.getpid()}.tmp")
    cmd = [compiler(), "-O2", "-std=c++17", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
           "-I", cuda_include_dir(), str(SOURCE), "-o", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"emulator build failed: {' '.join(cmd)}\n{proc.stderr[-4000:]}")
    os.replace(tmp, lib)
    return lib


def _ptr(t: torch.Tensor | None):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _i64(values) -> ctypes.Array:
    values = [int(v) for v in values]
    return (ctypes.c_longlong * max(len(values), 1))(*values)


class EmulatedExtension:
    abi_version = 1

    def __init__(self, lib_path: Path, tiles=(0, 0, 0), reverse_threads: bool = False):
        self.lib = ctypes.CDLL(str(lib_path))
        self.tiles = tuple(tiles)
        self.reverse_threads = reverse_threads
        self.plans: list[dict] = []  # every chain launch's plan (tile, smem, grid), for tests
        self.calls = {"chain": 0, "bias_act": 0, "mask_mul": 0}

    @staticmethod
    def _check(t: torch.Tensor, name: str):
        if t.device.type != "cpu":
            raise RuntimeError(f"emulator: {name} must be a CPU tensor")

    def _err(self):
        return ctypes.create_string_buffer(1024)

    def chain(self, x, bias, taps, y, mask, stages, gain, slope, clamp, act):
        self.calls["chain"] += 1
        for t, n in ((x, "x"), (y, "y"), (taps, "taps")):
            self._check(t, n)
        assert x.dtype == y.dtype and taps.dtype == (torch.float64 if x.dtype == torch.float64 else torch.float32)
        assert taps.is_contiguous() and taps.ndim == 1 and len(stages) % 10 == 0
        if bias is not None:
            assert bias.is_contiguous() and bias.dtype == x.dtype and bias.shape == (x.shape[1],)
        c_fastest = x.shape[1] > 1 and x.stride(1) == 1 and y.stride(1) == 1
        mid = (mask.shape[2], mask.shape[3]) if mask is not None else (0, 0)
        dims = [x.shape[0], x.shape[1], x.shape[2], x.shape[3], y.shape[2], y.shape[3], *mid]
        strides = list(x.stride()) + list(y.stride()) + (list(mask.stride()) if mask is not None else [0] * 4)
        plan = _i64([0] * 7)
        err = self._err()
        rc = self.lib.emu_chain(
            _ptr(x), _ptr(bias), _ptr(y), _ptr(mask), _ptr(taps), ctypes.c_int(taps.numel()),
            ctypes.c_int(DTYPES[x.dtype]), _i64(dims), _i64(strides), _i64(stages), ctypes.c_int(len(stages) // 10),
            ctypes.c_double(gain), ctypes.c_double(slope), ctypes.c_double(clamp), ctypes.c_int(int(act)),
            ctypes.c_int(int(c_fastest)), (ctypes.c_int * 3)(*self.tiles), ctypes.c_int(int(self.reverse_threads)),
            plan, err, ctypes.c_int(len(err)))
        if rc != 0:
            raise RuntimeError(f"sgvis cuda_ops (emulated): {err.value.decode()}")
        self.plans.append(dict(tile_w=plan[0], tile_h=plan[1], tile_c=plan[2], smem=plan[3],
                               grid=(plan[4], plan[5], plan[6]), c_fastest=c_fastest))

    def bias_act(self, x, b, g1, g2, y, mode, act, alpha, gain, clamp, inner, channels):
        self.calls["bias_act"] += 1
        self._check(x, "x")
        from cuda_ops._kernels import is_dense
        assert is_dense(x) and y.stride() == x.stride() and y.dtype == x.dtype
        for g in (g1, g2):
            assert g is None or (g.stride() == x.stride() and g.dtype == x.dtype)
        err = self._err()
        rc = self.lib.emu_bias_act(
            _ptr(x), _ptr(b), _ptr(g1), _ptr(g2), _ptr(y), ctypes.c_int(DTYPES[x.dtype]),
            ctypes.c_longlong(x.numel()), ctypes.c_longlong(max(int(inner), 1)), ctypes.c_int(max(int(channels), 1)),
            ctypes.c_int(int(act)), ctypes.c_int(int(mode)), ctypes.c_double(alpha), ctypes.c_double(gain),
            ctypes.c_double(clamp), err, ctypes.c_int(len(err)))
        if rc != 0:
            raise RuntimeError(f"sgvis cuda_ops (emulated): {err.value.decode()}")

    def mask_mul(self, g, mask, y, gain, slope):
        self.calls["mask_mul"] += 1
        assert g.shape == mask.shape == y.shape and mask.dtype == torch.uint8
        err = self._err()
        rc = self.lib.emu_mask_mul(
            _ptr(g), _ptr(mask), _ptr(y), ctypes.c_int(DTYPES[g.dtype]), _i64(g.shape),
            _i64(list(g.stride()) + list(mask.stride()) + list(y.stride())), ctypes.c_double(gain),
            ctypes.c_double(slope), err, ctypes.c_int(len(err)))
        if rc != 0:
            raise RuntimeError(f"sgvis cuda_ops (emulated): {err.value.decode()}")
