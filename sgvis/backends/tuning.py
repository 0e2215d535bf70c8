"""The generator's settings on a CPU, chosen by measurement instead of by CPU flags.

On a CPU, the first frames a StyleGAN backend makes are preceded by a short trial (a few seconds, once per
machine and model): the settings are tried one axis at a time, starting from the defaults, and on each axis the
fastest candidate within `TOLERANCE` and `SHIMMER_TOLERANCE` of the reference images is kept:

* precision: fp32 or bf16 (its images are compared with fp32's, as they are and how they change over a small
  step of the latents; bf16 only where it is at least `MARGIN` faster: where the two are close, the exact one
  wins); a precision the user forces (`render.precision`) is the only candidate;
* layout: channels_last or contiguous activations;
* modulation: `fused_modconv` auto (modulate the weights at batch 1 where they are smaller) or never;
* threads (when the caller lets them be chosen, as `render.threads: auto` does): 1, half and all cores;
* batch (when the caller lets it be chosen, as `render.batch: auto` does): frames per generator call, timed per
  frame.

The exact axes (all but precision) take a candidate that is at least `EXACT_MARGIN` faster.  The choice is
cached on disk per (CPU model, torch version, thread and batch choices, model, resolution) in
$SGVIS_CACHE/generator-tuning-v4.json; `--stats` (generator_tuning), the live HUD and `sgvis doctor` show it.
A render whose generation turns out much faster than the cached trial (`measured_under_load`: the trial ran while
the machine was busy) drops the record, so that the next run measures again.

    choice = choose(candidates, ws)     # candidates: {name: callable ws -> images}; pure, testable
    record = tune_generator(synthesis, G, batch=8, threads=[1, 2], batches=[4, 8, 16])

torch.compile is not a candidate: on the reference 2-core CPU it compiles for about 23 s, longer than it saves on
a song-length render (1.35-1.45x of the generator), and it does not cover the network-bending path.
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable

import torch

TOLERANCE = 0.02        # mean |image - reference image|, images in [-1, 1] (about 2.5 grey levels)
# A small step of the latents (STEP of the way toward other images, about one frame of slow steering) must change
# a candidate's images as it changes the reference's, within this share of the reference's change: rounding that
# does not follow the latents makes the picture shimmer from frame to frame (bf16 on the built-in model: 0.41-0.44
# at this step, which cost AV-Align on the real held-out clips: learned 0.492 -> 0.456, reactive 0.590 -> 0.561).
SHIMMER_TOLERANCE = 0.1
STEP = 0.005
MARGIN = 1.15           # a candidate of another precision must be this much faster than the reference
EXACT_MARGIN = 1.05     # a candidate of the same precision (layout, modulation, threads, batch): this much
MIN_MEASURABLE_S = 0.005  # a reference call faster than this is mostly timer and scheduler noise: keep the
                          #   defaults (and the CPU-flag precision: bf16 where the CPU has AMX) then
TIMED_CALLS = 3         # timed rounds per candidate (after one warm-up call), the fastest counts
WARMUP_S = 0.3          # the trial starts with at least two calls and this long of untimed calls
WARMUP_CALLS_MAX = 20
EXACT_TIMED_CALLS = 2   # the same on the exact axes, where a wrong pick among near-equals costs little
ROUND_S = 0.03          # a round repeats the call until it lasts about this long (short calls are noisy)
UNDER_LOAD_RATIO = 0.6  # a render generating faster than this share of its cached trial's time re-measures next run
GIVE_UP = 3.0           # a candidate whose first call takes this many times the reference's first call is not
                        #   timed further (its first call's time stands for it)
CACHE_NAME = "generator-tuning-v4.json"   # v3: layout, modulation, threads and batch besides the precision;
                                          # v4: the choice's time per frame (to tell a trial run on a busy machine)
AXES = ("precision", "channels_last", "fused_modconv", "threads", "batch")


def choose(candidates: dict[str, Callable[[torch.Tensor], torch.Tensor]], ws: torch.Tensor,
           ws_next: torch.Tensor | None = None, reference: str | None = None,
           timer: Callable[[], float] = time.perf_counter, margins: dict[str, float] | None = None,
           frames: dict[str, int] | None = None, known: dict[str, float] | None = None,
           rounds: int = 0) -> dict:
    """Time every candidate on `ws` and compare its images with the reference's (the first candidate unless
    named); returns {"choice", "seconds" (per call, or per frame for the candidates `frames` names with their
    frames per call; the fastest of TIMED_CALLS rounds of about ROUND_S each), "error" (mean absolute difference
    from the reference, over the frames both made), "shimmer" (with `ws_next`, a small step from `ws`: how far
    the candidate's change over that step departs from the reference's, as a share of it), "rejected" (names
    outside TOLERANCE or SHIMMER_TOLERANCE)}.  A candidate must be `margins[name]` (default MARGIN) times as
    fast as the choice so far to replace it.  A candidate already twice as slow as the best so far after one
    round is not timed further (`rounds`: timed rounds, default TIMED_CALLS); a candidate in `known` (seconds, as returned) is run once for its images only."""
    reference = reference or next(iter(candidates))
    margins = margins or {}
    frames = frames or {}
    ref_images = ref_change = None
    seconds: dict[str, float] = {}
    error: dict[str, float] = {}
    shimmer: dict[str, float] = {}
    order = [reference] + [n for n in candidates if n != reference]
    first_call: dict[str, float] = {}
    for name in order:
        fn = candidates[name]
        per = max(1, int(frames.get(name, 1)))
        t0 = timer()
        images = fn(ws).float()                           # warm-up: weight caches, allocator
        first_call[name] = (timer() - t0) / per
        reps = max(1, min(50, int(ROUND_S / max(timer() - t0, 1e-6))))
        if ref_images is None:
            ref_images = images
        k = min(len(images), len(ref_images))
        error[name] = float((images[:k] - ref_images[:k]).abs().mean())
        if name != reference and first_call[name] > GIVE_UP * first_call[reference]:
            # Far slower on its first call than the reference on its own first call (both pay their one-time
            # set-up there): it cannot win, so it costs no more calls (bf16 without native support: 11x).
            seconds[name] = first_call[name]
            continue
        if ws_next is not None:
            change = fn(ws_next).float() - images
            if ref_change is None:
                ref_change = change
            k = min(len(change), len(ref_change))
            scale = float(ref_change[:k].abs().mean())
            departure = float((change[:k] - ref_change[:k]).abs().mean())
            shimmer[name] = departure / scale if scale > 0 else (0.0 if departure == 0 else float("inf"))
        best = float("inf")
        if known and name in known:
            seconds[name] = float(known[name])
            continue
        for _ in range(rounds or TIMED_CALLS):
            t0 = timer()
            for _ in range(reps):
                fn(ws)
            best = min(best, (timer() - t0) / reps / per)
            if seconds and best > 2 * min(seconds.values()):
                break
        seconds[name] = best
    rejected = [n for n in order if error[n] > TOLERANCE or shimmer.get(n, 0.0) > SHIMMER_TOLERANCE]
    choice = reference
    for name in order[1:]:
        if name not in rejected and seconds[name] * margins.get(name, MARGIN) <= seconds[choice]:
            choice = name
    return {"choice": choice, "seconds": seconds, "error": error, "shimmer": shimmer, "rejected": rejected}


def cache_path() -> str:
    from sgvis.steer.directions import default_cache_dir
    return os.path.join(default_cache_dir(), CACHE_NAME)


def tuning_key(model_hash: str, batch, resolution: int, threads=None, precision: str = "auto") -> str:
    """The cache key of a trial: `batch` and `threads` are a number (fixed) or a list (the candidates)."""
    from stylegan.fast import cpu_model

    def spell(v):
        return f"auto {','.join(str(int(x)) for x in v)}" if isinstance(v, (list, tuple)) else str(int(v))
    threads = torch.get_num_threads() if threads is None else threads
    # OpenMP's waiting (passive for render, a short spin live) changes what threads are worth
    wait = os.environ.get("GOMP_SPINCOUNT") or os.environ.get("OMP_WAIT_POLICY") or "default"
    return (f"{cpu_model()}|torch {torch.__version__}|threads {spell(threads)}|omp wait {wait}"
            f"|model {model_hash[:16]}|batch {spell(batch)}|{resolution}px|precision {precision}")


def load_choices(path: str | None = None) -> dict:
    try:
        with open(path or cache_path()) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def usable_cores() -> int:
    """The logical cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def thread_candidates(cores: int | None = None) -> list[int]:
    """Thread counts worth trying on a CPU of `cores` logical cores (default: usable_cores()): one, half, all."""
    n = max(1, int(cores or usable_cores()))
    return sorted({1, max(1, n // 2), n})


def _settings_of(synthesis, threads: int, batch: int) -> dict:
    return {"precision": synthesis.precision, "channels_last": bool(synthesis.channels_last),
            "fused_modconv": synthesis.fused_modconv, "threads": int(threads), "batch": int(batch)}


def _label(axis: str, value) -> str:
    if axis == "precision":
        return str(value)
    if axis == "channels_last":
        return "channels_last" if value else "contiguous"
    if axis == "fused_modconv":
        return f"fused {value}"
    return f"{value} thread{'s' if value != 1 else ''}" if axis == "threads" else f"batch {value}"


def measure_settings(synthesis, ws_all: torch.Tensor, ws_next_all: torch.Tensor, batch: int,
                     precisions=("fp32", "bf16"), threads=None, batches=None, timer=time.perf_counter,
                     progress=None) -> dict:
    """The trial itself, one axis at a time from the current settings (see the module notes).  `ws_all` /
    `ws_next_all` hold at least max(batches or [batch]) latents; `threads` / `batches`: candidate lists, or None
    to keep the current thread count / `batch`.  Sets `synthesis` and torch's thread count to the choice;
    returns {"settings", "seconds" (per frame, by candidate label), "error", "shimmer", "rejected", "trials"
    (per axis: its candidates' labels and the label chosen)}."""
    threads_now = torch.get_num_threads()
    # With batch candidates, the other axes are timed at the smallest (half the trial's time at 4 against 8);
    # a bigger batch then has to earn its latency and memory by EXACT_MARGIN per frame.
    current = _settings_of(synthesis, threads_now, min(batches) if batches else batch)
    axes = {"precision": list(precisions), "channels_last": [True, False], "fused_modconv": ["auto", False],
            "threads": list(threads) if threads else [threads_now],
            "batch": list(batches) if batches else [batch]}
    record = {"seconds": {}, "error": {}, "shimmer": {}, "rejected": [], "trials": []}
    current_seconds = None              # per frame, of `current` (each axis starts from the last axis's choice)

    def run_with(settings):
        def run(w):
            synthesis.configure(precision=settings["precision"], channels_last=settings["channels_last"],
                                fused_modconv=settings["fused_modconv"])
            torch.set_num_threads(settings["threads"])
            return synthesis(w[:settings["batch"]])
        return run

    try:
        # Warm up first (thread pool, allocator, caches): each axis reuses the timing of the last axis's choice,
        # so a cold first measurement would flatter every candidate after it.
        run_start, t0 = run_with(current), timer()
        for i in range(WARMUP_CALLS_MAX):
            run_start(ws_all)
            if i >= 1 and timer() - t0 >= WARMUP_S:
                break
        for axis in AXES:
            values = [current[axis]] + [v for v in axes[axis] if v != current[axis]]
            if axis == "precision" and current[axis] not in axes[axis]:
                values = values[1:]
            if len(values) < 2:                  # nothing to choose on this axis (a forced precision)
                current = dict(current, **{axis: values[0]})
                if progress is not None:
                    progress.update(1)
                continue
            labels = {}
            for v in values:
                labels[_label(axis, v)] = dict(current, **{axis: v})
            names = list(labels)
            margin = MARGIN if axis == "precision" else EXACT_MARGIN
            r = choose({n: run_with(labels[n]) for n in names}, ws_all, ws_next_all if axis == "precision" else None,
                       timer=timer, margins={n: margin for n in names[1:]},
                       frames={n: labels[n]["batch"] for n in names},
                       known=None if current_seconds is None else {names[0]: current_seconds},
                       rounds=TIMED_CALLS if axis == "precision" else EXACT_TIMED_CALLS)
            for n in names[0 if current_seconds is None else 1:]:      # each timing once
                k = n if n not in record["seconds"] else f"{axis}: {n}"
                record["seconds"][k] = r["seconds"][n]
                record["error"][k] = r["error"][n]
                if n in r["shimmer"]:
                    record["shimmer"][k] = r["shimmer"][n]
            record["rejected"] += [n for n in r["rejected"] if n not in record["rejected"]]
            record["trials"].append({"axis": axis, "candidates": names, "chosen": r["choice"]})
            current = labels[r["choice"]]
            current_seconds = r["seconds"][r["choice"]]
            if progress is not None:
                progress.update(1)
    finally:
        synthesis.configure(precision=current["precision"], channels_last=current["channels_last"],
                            fused_modconv=current["fused_modconv"])
        torch.set_num_threads(current["threads"] if threads else threads_now)
    record["settings"] = current
    record["chosen_seconds"] = current_seconds
    return record


def tune_generator(synthesis, G, batch: int, threads: list[int] | None = None, batches: list[int] | None = None,
                   precision: str = "auto", path: str | None = None) -> dict:
    """The cached or freshly measured settings for FastSynthesis `synthesis` of `G`, made `batch` frames at a
    time (or the fastest per frame of `batches`), with torch's thread count (or the fastest of `threads`);
    `precision` auto tries fp32 and bf16, anything else keeps it.  Sets `synthesis` (and torch's thread count,
    where `threads` are tried) to the choice and returns the record, whose "settings" hold it (also "choice":
    the precision).  A cache that cannot be written only costs a new trial next time."""
    from sgvis.steer.directions import model_hash
    path = path or cache_path()
    key = tuning_key(model_hash(G), batches or batch, int(G.img_resolution), threads, precision)
    record = load_choices(path).get(key)
    if not _usable(record):
        size = max(batches or [batch])
        g = torch.Generator().manual_seed(0)
        z = torch.randn(size, G.z_dim, generator=g).to(synthesis.device) if G.z_dim else None
        c = torch.zeros(size, G.c_dim, device=synthesis.device) if G.c_dim else None
        z_other = torch.randn(size, G.z_dim, generator=g).to(synthesis.device) if G.z_dim else None
        with torch.inference_mode():
            ws = G.mapping(z, c, truncation_psi=0.7)
            ws_next = ws + STEP * (G.mapping(z_other, c, truncation_psi=0.7) - ws)
        precisions = ("fp32", "bf16") if precision == "auto" else (precision,)
        start = _settings_of(synthesis, torch.get_num_threads(), batch)
        from tqdm import tqdm
        with tqdm(total=len(AXES), desc="measuring the generator's settings (once per model)", unit="axis",
                  disable=None, leave=False) as bar:
            record = measure_settings(synthesis, ws, ws_next, batch, precisions, threads, batches, progress=bar)
        record["basis"] = "measured"
        reference = record["seconds"][next(iter(record["seconds"]))]
        if reference * start["batch"] < MIN_MEASURABLE_S:
            from stylegan.fast import cpu_bf16_support
            flag_precision = ("bf16" if cpu_bf16_support()["amx"] else "fp32") if precision == "auto" else precision
            record["settings"] = dict(start, precision=flag_precision,
                                      threads=start["threads"] if threads else torch.get_num_threads())
            record["basis"] = "too fast to measure: the defaults"
        record["measured"] = time.strftime("%Y-%m-%d %H:%M:%S")
        record["key"] = key
        _store(path, key, record)
    settings = record["settings"]
    record["choice"] = settings["precision"]
    synthesis.configure(precision=settings["precision"], channels_last=settings["channels_last"],
                        fused_modconv=settings["fused_modconv"])
    if threads:
        torch.set_num_threads(int(settings["threads"]))
    synthesis.refresh()                      # drop the weight copies of the settings not taken
    return record


def measured_under_load(record: dict | None, observed_seconds: float, ratio: float = UNDER_LOAD_RATIO) -> bool:
    """Whether a cached trial was slower than the work it chose for (`observed_seconds` per frame, generation as a
    render runs it, which adds the look and the warp to the trial's synthesis): below `ratio` of the trial's time,
    the machine was busy when the trial ran, and its choice (threads above all) may be wrong for a quiet one."""
    if not isinstance(record, dict) or record.get("basis", "measured") != "measured":
        return False
    chosen = record.get("chosen_seconds")
    if not isinstance(chosen, (int, float)) or chosen <= 0 or not observed_seconds > 0:
        return False
    return observed_seconds < ratio * chosen


def forget(record: dict, path: str | None = None) -> bool:
    """Drop `record` (by its key) from the cache, so that the next run measures again; False where it was not
    there or the cache cannot be written."""
    path = path or cache_path()
    key = record.get("key") if isinstance(record, dict) else None
    data = load_choices(path)
    if key not in data:
        return False
    del data[key]
    try:
        from stylegan.atomic import write_json_atomically
        write_json_atomically(path, data)
    except OSError:
        return False
    return True


def _usable(record) -> bool:
    if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        return False
    s = record["settings"]
    return (s.get("precision") in ("fp32", "bf16") and isinstance(s.get("channels_last"), bool)
            and s.get("fused_modconv") in ("auto", True, False)
            and all(isinstance(s.get(k), int) and s[k] >= 1 for k in ("threads", "batch")))


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
    """One line: what was chosen and the measured times per frame."""
    s = record.get("settings") or {"precision": record.get("choice")}
    chosen = [s.get("precision")]
    if "channels_last" in s:
        chosen += [_label("channels_last", s["channels_last"]), _label("fused_modconv", s["fused_modconv"]),
                   _label("threads", s["threads"]), _label("batch", s["batch"])]
    times = ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in record["seconds"].items())
    rejected = f"; outside tolerance: {', '.join(record['rejected'])}" if record.get("rejected") else ""
    how = "by measurement" if record.get("basis", "measured") == "measured" else f"({record['basis']})"
    return f"{', '.join(str(c) for c in chosen)} {how} ({times} per frame{rejected})"
