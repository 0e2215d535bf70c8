"""`sgvis doctor`: what this machine offers sgvis: torch and GPU, CUDA toolkit, the custom CUDA ops
(compiled? active? why not?), and the sections other subsystems register (audio, OpenGL, ...).

Other modules add a section with ``register_check(name, fn)``; ``fn()`` returns rows ``[(key, value),
...]`` (or a dict) and may raise: the error is shown in its section instead of stopping the report.
"""
from __future__ import annotations

import shutil
import subprocess
from typing import Callable, Iterable

_CHECKS: dict[str, Callable[[], object]] = {}


def register_check(name: str, fn: Callable[[], object]) -> None:
    """Add (or replace) a report section; called in registration order after the built-in ones."""
    _CHECKS[name] = fn


def registered_checks() -> dict[str, Callable[[], object]]:
    return dict(_CHECKS)


def _run(cmd: list[str], timeout: float = 20) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def driver_info() -> str:
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if out is None:
        return "nvidia-smi not found (no NVIDIA driver?)" if shutil.which("nvidia-smi") is None else \
            "nvidia-smi failed (driver not loaded?)"
    return "; ".join(line.strip() for line in out.splitlines() if line.strip())


def _torch_rows() -> list[tuple[str, str]]:
    import torch
    cuda = torch.version.cuda
    rows = [("torch", f"{torch.__version__} ({'CUDA ' + cuda if cuda else 'CPU-only build'})")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            rows.append((f"GPU {i}", f"{p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2 ** 30:.1f} GiB"))
    else:
        rows.append(("GPU", "none visible to torch (torch.cuda.is_available() is False)"))
    rows.append(("driver", driver_info()))
    return rows


def _toolkit_rows() -> list[tuple[str, str]]:
    from cuda_ops import _build
    home = _build.cuda_home()
    version = _build.nvcc_version()
    return [("CUDA toolkit", f"nvcc {version} at {home}" if version else "not found (nvcc): needed only to build "
                                                                          "the CUDA ops"),
            ("ninja", "available" if _build.ninja_available() else "not found (pip install ninja)")]


def _ops_rows(build: bool) -> list[tuple[str, str]]:
    from cuda_ops import ops_status
    st = ops_status(build=build)
    rows = [("SGVIS_OPS", f"{st['mode']}" + ("" if st["mode_env"] else " (default; set SGVIS_OPS=ref|cuda|auto)"))]
    ext = st["extension"]
    rows.append(("extension", f"{ext['state']}: {ext['detail']}"))
    rows.append(("build cache", st["cache_dir"]))
    for op, info in st["ops"].items():
        rows.append((op, f"compiled: {'yes' if info['compiled'] else 'no'}, active: {info['active']}"))
    if not st["cuda_available"]:
        rows.append(("summary", "no CUDA GPU: reference ops active" +
                     (" (SGVIS_OPS=cuda: op calls will raise CudaOpsUnavailable)" if st["mode"] == "cuda" else "")))
    elif all(i["active"] == "ref" for i in st["ops"].values()):
        rows.append(("summary", f"reference ops active: {next(iter(st['ops'].values()))['reason']}"))
    else:
        rows.append(("summary", "CUDA ops active for CUDA tensors"))
    return rows


def _interop_rows() -> list[tuple[str, str]]:
    from cuda_ops.gl_interop import interop_status
    st = interop_status()
    return [("CUDA-GL interop", ("available: " if st["available"] else "unavailable: ") + st["reason"])]


def _rows(result) -> list[tuple[str, str]]:
    if result is None:
        return []
    if isinstance(result, dict):
        return [(str(k), str(v)) for k, v in result.items()]
    return [(str(k), str(v)) for k, v in result]


def collect(build: bool = False) -> list[tuple[str, list[tuple[str, str]]]]:
    """All sections: [(title, [(key, value), ...]), ...]."""
    sections: list[tuple[str, Callable[[], Iterable]]] = [
        ("torch / GPU", _torch_rows),
        ("CUDA toolkit", _toolkit_rows),
        ("CUDA ops", lambda: _ops_rows(build)),
        ("CUDA -> OpenGL", _interop_rows),
    ]
    sections += list(_CHECKS.items())
    out = []
    for title, fn in sections:
        try:
            rows = _rows(fn())
        except Exception as e:  # one broken probe must not hide the rest of the report
            rows = [("error", f"{type(e).__name__}: {e}")]
        out.append((title, rows))
    return out


def report(build: bool = False) -> str:
    lines = []
    for title, rows in collect(build):
        lines.append(f"[{title}]")
        width = max((len(k) for k, _ in rows), default=0)
        for k, v in rows:
            lines.append(f"  {k:<{width}}  {v}")
    return "\n".join(lines)


def cmd_doctor(args) -> int:
    print(report(build=getattr(args, "build", False)))
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("doctor", help="report GPU, driver, CUDA toolkit, which CUDA ops are compiled and "
                                             "active, and the state of audio / OpenGL")
    p.add_argument("--build", action="store_true",
                   help="build (or load) the CUDA ops now instead of reporting only what is cached")
    p.set_defaults(func=cmd_doctor)


# Placeholders until the audio and live-window subsystems register their own checks.
def _audio_check():
    try:
        from sgvis.audio.live_input import input_devices
        devices = input_devices()
    except Exception as e:  # noqa: BLE001 - a report, not a failure
        return [("status", str(e).splitlines()[0])]
    if not devices:
        return [("inputs", "none found (no sound server or card; 'sgvis live --device file:x.wav' still needs an "
                           "output)")]
    return [("inputs", f"{len(devices)}")] + [(f"[{d['index']}]", f"{d['name']} ({d['hostapi']}), {d['channels']} ch, "
                                                                  f"{d['rate']:.0f} Hz") for d in devices]


def _gl_check():
    rows = []
    try:
        import moderngl
        ctx = moderngl.create_context(standalone=True, backend="egl")
        rows.append(("headless (EGL)", f"ok: {ctx.info['GL_RENDERER']}, GL {ctx.version_code}"))
        ctx.release()
    except Exception as e:  # noqa: BLE001
        rows.append(("headless (EGL)", f"unavailable: {str(e).splitlines()[0][:80]}"))
    import os
    rows.append(("window", f"DISPLAY={os.environ['DISPLAY']}" if os.environ.get("DISPLAY") or
                 os.environ.get("WAYLAND_DISPLAY") else "no display (DISPLAY unset): use --headless"))
    return rows


def _tuning_check():
    """The generator settings chosen by measurement on this machine (sgvis.backends.tuning's cache)."""
    from sgvis.backends.tuning import cache_path, describe, load_choices
    choices = load_choices()
    if not choices:
        return [("cache", f"{cache_path()}: nothing measured yet (the first render or live show measures)")]
    return [("cache", cache_path())] + [(key, describe(record)) for key, record in choices.items()
                                         if isinstance(record, dict) and "seconds" in record]


register_check("audio", _audio_check)
register_check("OpenGL", _gl_check)
register_check("generator settings", _tuning_check)

if __name__ == "__main__":  # pragma: no cover
    import argparse
    import sys
    parser = argparse.ArgumentParser(prog="sgvis")
    register_cli(parser.add_subparsers(dest="command"))
    a = parser.parse_args(["doctor"] + sys.argv[1:])
    sys.exit(a.func(a))
