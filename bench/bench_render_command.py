"""`sgvis render` as a user runs it, whole command, one or more checkouts side by side (runs alternate, so a noisy
machine slows them alike): wall time, time to the first frame and render-loop frames/s.

    python bench/bench_render_command.py CLIP.wav --checkout /path/to/old --checkout . --runs 3
    python bench/bench_render_command.py CLIP.wav --checkout . --fresh-jit      # as on a fresh install

--fresh-jit gives every run an empty numba cache (NUMBA_CACHE_DIR), as the first run after an install has; a
checkout that compiles numba kernels before its first frame pays that compilation in every run then.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def run_once(checkout: str, clip: str, fresh_jit: bool, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="sgvis-bench-") as tmp:
        env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout))
        if fresh_jit:
            env["NUMBA_CACHE_DIR"] = os.path.join(tmp, "numba")
        stats = os.path.join(tmp, "stats.json")
        clip = os.path.abspath(clip)
        cmd = [sys.executable, "-m", "sgvis", "render", clip, "-o", os.path.join(tmp, "out.mp4"), "--stats", stats,
               *extra]
        started = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        with open(stats) as f:
            s = json.load(f)
    return {"wall": wall, "first_frame": s["time_to_first_frame_s"], "fps": s["frames_per_second"],
            "audio_s": s["seconds_of_audio"], "stages": s["stage_frames_per_second"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clip")
    p.add_argument("--checkout", action="append", required=True, help="a source tree (repeat to compare)")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--fresh-jit", action="store_true", help="an empty numba cache for every run")
    a, extra = p.parse_known_args()          # anything else goes to sgvis render (e.g. --end 10)
    results: dict[str, list[dict]] = {c: [] for c in a.checkout}
    for _ in range(a.runs):
        for c in a.checkout:
            results[c].append(run_once(c, a.clip, a.fresh_jit, extra))
    print("| checkout | whole command (s) | x real time | first frame (s) | loop frames/s |")
    print("|---|---|---:|---:|---|")
    for c, rs in results.items():
        walls = [r["wall"] for r in rs]
        rates = ", ".join(f"{r['fps']:.1f}" for r in rs)
        print(f"| {c} | {', '.join(f'{w:.1f}' for w in walls)} | {rs[0]['audio_s'] / statistics.median(walls):.2f} "
              f"| {statistics.median(r['first_frame'] for r in rs):.1f} "
              f"| {rates} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
