"""The generator's precision on a CPU, chosen by measurement instead of by CPU flags.

With `render.precision: auto` on a CPU, the first frames a StyleGAN backend makes at a batch size are preceded by a
short trial: each candidate precision (fp32, bf16) renders the same latents a few times, its images are compared
with fp32's (as they are, and how they change over a small step of the latents), and the fastest within
`TOLERANCE` and `SHIMMER_TOLERANCE` is kept (bf16 only where it is at least `MARGIN` faster: where the
two are close, the exact one wins).  The choice is cached on disk per (CPU model, torch version and threads,
model, batch size, resolution) in $SGVIS_CACHE/generator-tuning-v2.json, so the trial runs once per machine and model;
`--stats` (generator_tuning) and `sgvis doctor` show it.  An explicit `--set render.precision=fp32|bf16` skips it.

    choice = choose(candidates, ws)     # candidates: {name: callable ws -> images}; pure, testable
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable

import torch

TOLERANCE = 0.02        # mean |image - fp32 image|, images in [-1, 1] (about 2.5 grey levels)
# A small step of the latents (STEP of the way toward other images, about one frame of slow steering) must change
# a candidate's images as it changes the reference's, within this share of the reference's change: rounding that
# does not follow the latents makes the picture shimmer from frame to frame (bf16 on the built-in model: 0.41-0.44
# at this step, which cost AV-Align on the real held-out clips: learned 0.492 -> 0.456, reactive 0.590 -> 0.561).
SHIMMER_TOLERANCE = 0.1
STEP = 0.005
MARGIN = 1.15           # a candidate other than the reference must be this much faster to be chosen
MIN_MEASURABLE_S = 0.005  # a reference call faster than this is mostly timer and scheduler noise: keep the
                          #   CPU-flag default (bf16 where the CPU has AMX) then
TIMED_CALLS = 3         # timed rounds per candidate (after one warm-up call), the fastest counts
ROUND_S = 0.03          # a round repeats the call until it lasts about this long (short calls are noisy)
CACHE_NAME = "generator-tuning-v2.json"   # v2: with the shimmer test


def choose(candidates: dict[str, Callable[[torch.Tensor], torch.Tensor]], ws: torch.Tensor,
           ws_next: torch.Tensor | None = None, reference: str = "fp32",
           timer: Callable[[], float] = time.perf_counter) -> dict:
    """Time every candidate on `ws` and compare its images with the reference's; returns {"choice", "seconds"
    (per call, the fastest of TIMED_CALLS rounds of about ROUND_S each), "error" (mean absolute difference from
    the reference), "shimmer" (with `ws_next`, a small step from `ws`: how far the candidate's change over that
    step departs from the reference's, as a share of it), "rejected" (names outside TOLERANCE or
    SHIMMER_TOLERANCE)}.  A candidate already twice as slow as the best so far
    after one round is not timed further."""
    ref_images = ref_change = None
    seconds: dict[str, float] = {}
    error: dict[str, float] = {}
    shimmer: dict[str, float] = {}
    order = [reference] + [n for n in candidates if n != reference]
    for name in order:
        fn = candidates[name]
        t0 = timer()
        images = fn(ws).float()                           # warm-up: weight caches, allocator
        reps = max(1, min(50, int(ROUND_S / max(timer() - t0, 1e-6))))
        if ref_images is None:
            ref_images = images
        error[name] = float((images - ref_images).abs().mean())
        if ws_next is not None:
            change = fn(ws_next).float() - images
            if ref_change is None:
                ref_change = change
            scale = float(ref_change.abs().mean())
            departure = float((change - ref_change).abs().mean())
            shimmer[name] = departure / scale if scale > 0 else (0.0 if departure == 0 else float("inf"))
        best = float("inf")
        for _ in range(TIMED_CALLS):
            t0 = timer()
            for _ in range(reps):
                fn(ws)
            best = min(best, (timer() - t0) / reps)
            if seconds and best > 2 * min(seconds.values()):
                break
        seconds[name] = best
    rejected = [n for n in order if error[n] > TOLERANCE or shimmer.get(n, 0.0) > SHIMMER_TOLERANCE]
    choice = reference
    for name in order[1:]:
        if name not in rejected and seconds[name] * MARGIN <= seconds[choice]:
            choice = name
    return {"choice": choice, "seconds": seconds, "error": error, "shimmer": shimmer, "rejected": rejected}


def cache_path() -> str:
    from sgvis.steer.directions import default_cache_dir
    return os.path.join(default_cache_dir(), CACHE_NAME)


def tuning_key(model_hash: str, batch: int, resolution: int) -> str:
    from stylegan.fast import cpu_model
    return (f"{cpu_model()}|torch {torch.__version__}|threads {torch.get_num_threads()}|model {model_hash[:16]}"
            f"|batch {batch}|{resolution}px")


def load_choices(path: str | None = None) -> dict:
    try:
        with open(path or cache_path()) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def tune_precision(synthesis, G, batch: int, path: str | None = None) -> dict:
    """The cached or freshly measured choice for FastSynthesis `synthesis` of `G` at `batch`; sets
    synthesis.precision to it.  A cache that cannot be written only costs a new trial next time."""
    from sgvis.steer.directions import model_hash
    path = path or cache_path()
    key = tuning_key(model_hash(G), batch, int(G.img_resolution))
    record = load_choices(path).get(key)
    if not (isinstance(record, dict) and record.get("choice") in ("fp32", "bf16")):
        g = torch.Generator().manual_seed(0)
        z = torch.randn(batch, G.z_dim, generator=g).to(synthesis.device) if G.z_dim else None
        c = torch.zeros(batch, G.c_dim, device=synthesis.device) if G.c_dim else None
        z_other = torch.randn(batch, G.z_dim, generator=g).to(synthesis.device) if G.z_dim else None
        with torch.inference_mode():
            ws = G.mapping(z, c, truncation_psi=0.7)
            ws_next = ws + STEP * (G.mapping(z_other, c, truncation_psi=0.7) - ws)

        def run_as(precision):
            def run(w):
                synthesis.precision = precision
                return synthesis(w)
            return run

        record = choose({"fp32": run_as("fp32"), "bf16": run_as("bf16")}, ws, ws_next)
        record["basis"] = "measured"
        if record["seconds"]["fp32"] < MIN_MEASURABLE_S:
            from stylegan.fast import cpu_bf16_support
            record["choice"] = "bf16" if cpu_bf16_support()["amx"] else "fp32"
            record["basis"] = "too fast to measure: CPU flags"
        record["measured"] = time.strftime("%Y-%m-%d %H:%M:%S")
        record["key"] = key
        _store(path, key, record)
    synthesis.precision = record["choice"]
    synthesis.refresh()                      # drop the weight copies of the precision not taken
    return record


def _store(path: str, key: str, record: dict) -> None:
    try:
        from stylegan.atomic import write_json_atomically
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = load_choices(path)
        data[key] = record
        write_json_atomically(path, data)
    except OSError:
        pass


def describe(record: dict) -> str:
    """One line: what was chosen and the measured times per call."""
    times = ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in record["seconds"].items())
    rejected = f"; outside tolerance: {', '.join(record['rejected'])}" if record.get("rejected") else ""
    how = "by measurement" if record.get("basis", "measured") == "measured" else f"({record['basis']})"
    return f"precision {record['choice']} {how} ({times} per batch{rejected})"
