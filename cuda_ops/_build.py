"""Builds and loads the CUDA extension (torch.utils.cpp_extension.load + ninja) on first use.

* Once per process; the result (module or failure) is remembered.
* Cached on disk per torch version, CUDA version, GPU architecture(s) and source hash:
  ``$SGVIS_CACHE_DIR`` or ``~/.cache/sgvis`` (``$XDG_CACHE_HOME/sgvis``), under
  ``torch_extensions/<torch>-cu<cuda>-sm<archs>/sgvis_cuda_ops_<hash>/``.  A later process only re-links
  nothing: ninja sees the build is up to date and the module is imported (well under a second).
* Safe when several processes start at once: the build runs under an exclusive ``fcntl.flock`` on
  ``<cache>/<name>.lock``, which the OS releases if a process dies (cpp_extension's own lock file is
  removed first when stale, as it would otherwise block every later build).
* A failed build leaves ``FAILED`` (the reason) in the build directory so that later processes do not
  spend the compile time again; delete it, or set SGVIS_OPS_REBUILD=1, to retry.  The failure is reported
  with one warning per process (SGVIS_OPS=auto) that says why and how to fix it; the reference ops are used.

Environment: SGVIS_OPS (see _dispatch.py), SGVIS_CACHE_DIR, SGVIS_OPS_VERBOSE=1 (show compiler output),
SGVIS_OPS_REBUILD=1, TORCH_CUDA_ARCH_LIST (default: the visible GPUs' architectures), CUDA_HOME.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import threading
import time
import warnings
from pathlib import Path

import torch

from cuda_ops._dispatch import CudaOpsUnavailable

logger = logging.getLogger("sgvis.cuda_ops")

ABI_VERSION = 1  # must equal kAbiVersion in csrc/bindings.cpp
CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = ("bindings.cpp", "upfirdn2d.cu", "bias_act.cu", "filtered_lrelu.cu")
HEADERS = ("ops.h", "common.cuh", "chain.cuh", "chain_launch.cuh", "bias_act.cuh")
EXTRA_CFLAGS = ["-O3"]
EXTRA_CUDA_CFLAGS = ["-O3"]
OPS = ("upfirdn2d", "bias_act", "filtered_lrelu")


class _State:
    ext = None
    attempted = False
    failure: str | None = None
    fix: str | None = None
    warned = False
    build_dir: Path | None = None
    seconds: float | None = None


_lock = threading.Lock()


# ---------------------------------------------------------------------------------------------------------
# Environment probing

def cuda_home() -> str | None:
    """The CUDA toolkit root torch would build with (or the one we can find)."""
    try:
        from torch.utils import cpp_extension
        if cpp_extension.CUDA_HOME:
            return cpp_extension.CUDA_HOME
    except Exception:  # pragma: no cover - cpp_extension always imports in practice
        pass
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    candidates.append("/usr/local/cuda")
    for home in candidates:  # a toolkit root has bin/nvcc and the runtime headers (a PATH wrapper may not)
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")) and \
                os.path.exists(os.path.join(home, "include", "cuda_runtime_api.h")):
            return home
    return None


def nvcc_path() -> str | None:
    home = cuda_home()
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def nvcc_version() -> str | None:
    """e.g. '13.0.88' (from `nvcc --version`), None if there is no nvcc."""
    nvcc = nvcc_path()
    if not nvcc:
        return None
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"V(\d+\.\d+\.\d+)", out) or re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else out.strip().splitlines()[-1] if out.strip() else None


def ninja_available() -> bool:
    try:
        from torch.utils.cpp_extension import is_ninja_available
        return bool(is_ninja_available())
    except Exception:  # pragma: no cover
        return shutil.which("ninja") is not None


def device_archs() -> list[str]:
    """Architectures to compile for: TORCH_CUDA_ARCH_LIST if set, else every visible GPU's."""
    env = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if env:
        return [a for a in re.split(r"[;\s]+", env.strip()) if a]
    archs = set()
    for i in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(i)
        archs.add(f"{major}.{minor}")
    return sorted(archs)


def unavailable_reason() -> str | None:
    """Why the kernels cannot be built or run here (cheap checks, no compiling); None if they can be."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build (no CUDA): no CUDA GPU, reference ops active"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False): reference ops active"
    if cuda_home() is None:
        return "the CUDA toolkit (nvcc) was not found"
    if not ninja_available():
        return "ninja was not found"
    return None


def _fix_for(reason: str) -> str:
    if "CPU-only" in reason:
        return "install a CUDA build of torch (pip install torch --index-url https://download.pytorch.org/whl/cuXXX)"
    if "no CUDA GPU" in reason:
        return "run on a machine with an NVIDIA GPU and driver"
    if "toolkit" in reason:
        return (f"install the CUDA toolkit matching torch's CUDA {torch.version.cuda} (nvcc) and set CUDA_HOME to "
                f"its directory")
    if "ninja" in reason:
        return "pip install ninja"
    return ("run with SGVIS_OPS_VERBOSE=1 to see the compiler output; after fixing the cause delete the FAILED "
            "file in the build directory or set SGVIS_OPS_REBUILD=1")


# ---------------------------------------------------------------------------------------------------------
# Cache location

def cache_root() -> Path:
    base = os.environ.get("SGVIS_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "sgvis")
    return Path(base) / "torch_extensions"


def source_hash() -> str:
    h = hashlib.sha256()
    for name in SOURCES + HEADERS:
        h.update(name.encode())
        h.update((CSRC / name).read_bytes())
    h.update(repr((EXTRA_CFLAGS, EXTRA_CUDA_CFLAGS, ABI_VERSION)).encode())
    return h.hexdigest()[:12]


def build_tag(archs: list[str] | None = None) -> str:
    archs = device_archs() if archs is None else archs
    arch = "_".join(a.replace(".", "").replace("+PTX", "ptx") for a in archs) or "none"
    tag = f"{torch.__version__}-cu{torch.version.cuda or 'none'}-sm{arch}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", tag)


def extension_name() -> str:
    return f"sgvis_cuda_ops_{source_hash()}"


def build_dir(archs: list[str] | None = None) -> Path:
    return cache_root() / build_tag(archs) / extension_name()


def _built_library(directory: Path) -> Path | None:
    libs = sorted(directory.glob(f"{extension_name()}*.so")) + sorted(directory.glob(f"{extension_name()}*.pyd"))
    return libs[0] if libs else None


# ---------------------------------------------------------------------------------------------------------
# Loading

class _FileLock:
    """Exclusive inter-process lock (fcntl.flock; released by the OS if the holder dies)."""

    def __init__(self, path: Path):
        self.path = path
        self.fh = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a+")
        try:
            import fcntl
        except ImportError:  # Windows: cpp_extension's own lock file still serialises builds
            return self
        fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        try:
            import fcntl
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
        except ImportError:
            pass
        self.fh.close()
        return False


def _compile_and_import(directory: Path):
    """cpp_extension.load into `directory` (build if needed, then import).  Raises on failure."""
    from torch.utils import cpp_extension
    home = cuda_home()
    if not cpp_extension.CUDA_HOME and home:
        cpp_extension.CUDA_HOME = home
    archs = device_archs()
    old_arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
    os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(archs)
    try:
        stale = directory / "lock"  # cpp_extension's FileBaton; we hold the real lock, so it is stale
        if stale.exists():
            stale.unlink()
        return cpp_extension.load(
            name=extension_name(),
            sources=[str(CSRC / s) for s in SOURCES],
            extra_cflags=EXTRA_CFLAGS,
            extra_cuda_cflags=EXTRA_CUDA_CFLAGS,
            extra_include_paths=[str(CSRC)],
            build_directory=str(directory),
            verbose=os.environ.get("SGVIS_OPS_VERBOSE", "") not in ("", "0"),
        )
    finally:
        if old_arch is None:
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = old_arch


def _summarise(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    pick = (errors or lines)[:3]
    return f"{type(exc).__name__}: " + " | ".join(ln.strip()[:300] for ln in pick) if pick else type(exc).__name__


def _attempt():
    """Build/load once; fills _State."""
    reason = unavailable_reason()
    if reason:
        _State.failure, _State.fix = reason, _fix_for(reason)
        return
    directory = build_dir()
    _State.build_dir = directory
    directory.mkdir(parents=True, exist_ok=True)
    failed = directory / "FAILED"
    rebuild = os.environ.get("SGVIS_OPS_REBUILD", "") not in ("", "0")
    start = time.perf_counter()
    with _FileLock(directory.parent / f"{extension_name()}.lock"):
        if failed.exists() and not rebuild:
            _State.failure = f"an earlier build failed ({failed}): " + failed.read_text().strip()[:500]
            _State.fix = _fix_for("build")
            return
        try:
            ext = _compile_and_import(directory)
        except Exception as exc:  # the compiler's message is in the exception (and printed when verbose)
            _State.failure = f"building the CUDA ops failed: {_summarise(exc)}"
            _State.fix = _fix_for("build")
            try:
                failed.write_text(_summarise(exc) + "\n\n" + str(exc))
            except OSError:
                pass
            return
        if failed.exists():
            failed.unlink()
    if getattr(ext, "abi_version", None) != ABI_VERSION:
        _State.failure = (f"the compiled extension has ABI {getattr(ext, 'abi_version', None)}, expected "
                          f"{ABI_VERSION}")
        _State.fix = f"delete {directory} and retry"
        return
    _State.ext = ext
    _State.seconds = time.perf_counter() - start
    logger.info("sgvis CUDA ops loaded from %s in %.1f s", directory, _State.seconds)


def load_extension(warn: bool = True):
    """The compiled module, or None (the reason is failure()).  Warns once per process on failure."""
    if not _State.attempted:
        with _lock:
            if not _State.attempted:
                try:
                    _attempt()
                finally:
                    _State.attempted = True
    if _State.ext is None and warn and not _State.warned:
        _State.warned = True
        msg = (f"sgvis: CUDA ops unavailable, using the slower reference ops. Why: {_State.failure}. "
               f"Fix: {_State.fix}. (SGVIS_OPS=ref silences this; `sgvis doctor` shows the details.)")
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)
    return _State.ext


def require_extension():
    ext = load_extension(warn=False)
    if ext is None:
        raise CudaOpsUnavailable(f"the CUDA ops cannot be loaded: {_State.failure}. Fix: {_State.fix}")
    return ext


def failure() -> str | None:
    return _State.failure


def reset():
    """Forget this process's load attempt (tests; or after fixing the environment)."""
    with _lock:
        _State.ext = None
        _State.attempted = False
        _State.failure = _State.fix = None
        _State.warned = False
        _State.build_dir = None
        _State.seconds = None


# ---------------------------------------------------------------------------------------------------------
# Status for `sgvis doctor`

def ops_status(build: bool = False) -> dict:
    """What `sgvis doctor` prints: environment, extension state and, per op, compiled / active / reason.

    build=True loads (and if needed compiles) the extension now; otherwise only what is already known or
    cached on disk is reported.
    """
    from cuda_ops._dispatch import mode
    m = mode()
    status = {
        "mode": m,
        "mode_env": os.environ.get("SGVIS_OPS"),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "devices": [],
        "cuda_home": cuda_home(),
        "nvcc": nvcc_version(),
        "ninja": ninja_available(),
        "cache_dir": str(cache_root()),
        "sources": [str(CSRC / s) for s in SOURCES],
    }
    if status["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            status["devices"].append(dict(index=i, name=p.name, capability=f"{p.major}.{p.minor}",
                                          memory_gib=round(p.total_memory / 2 ** 30, 1)))
    reason = unavailable_reason()
    if build and reason is None and m != "ref":
        load_extension(warn=False)
    if _State.ext is not None:
        ext_state, compiled, why = "loaded", True, f"loaded from {_State.build_dir}"
    elif _State.attempted:
        ext_state, compiled, why = "failed", False, f"{_State.failure}. Fix: {_State.fix}"
    elif reason is not None:
        ext_state, compiled, why = "unavailable", False, reason
    else:
        directory = build_dir()
        lib = _built_library(directory)
        if (directory / "FAILED").exists():
            ext_state, compiled = "failed", False
            why = f"an earlier build failed, see {directory / 'FAILED'}"
        elif lib is not None:
            ext_state, compiled, why = "cached", True, f"compiled at {lib}, loads on first use"
        else:
            ext_state, compiled, why = "not built", False, (f"builds on first use of a CUDA tensor (about a "
                                                            f"minute, cached in {directory})")
    status["extension"] = dict(state=ext_state, build_dir=str(_State.build_dir or "") or None, detail=why)
    if m == "ref":
        active, active_why = "ref", "SGVIS_OPS=ref"
    elif ext_state in ("loaded", "cached", "not built"):
        active, active_why = "cuda", "CUDA tensors use the kernels"
    else:
        active, active_why = "ref", why
    status["ops"] = {op: dict(compiled=compiled, active=active, reason=active_why) for op in OPS}
    return status
