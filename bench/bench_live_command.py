"""`sgvis live --headless` as a user runs it, with variants of its settings or environment side by side (runs
alternate, so a noisy machine slows them alike): frames/s, audio-to-display latency and generation time.

    python bench/bench_live_command.py CLIP.wav --runs 3 \
        --variant "default:" --variant "2 threads:--set live.threads=2" \
        --variant "no spin:env GOMP_SPINCOUNT=0"

A variant is "LABEL:ARGS", ARGS being extra `sgvis live` arguments, optionally after "env NAME=VALUE ..." for
the environment.  Needs an audio server the file is played to (on a machine without a sound card, a JACK dummy
server: `jackd --no-realtime -d dummy -r 44100 -p 256 &`).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile


def parse_variant(text: str) -> tuple[str, dict, list[str]]:
    label, _, rest = text.partition(":")
    words = shlex.split(rest)
    env = {}
    if words[:1] == ["env"]:
        words = words[1:]
        while words and "=" in words[0] and not words[0].startswith("-"):
            k, _, v = words.pop(0).partition("=")
            env[k] = v
    return label.strip(), env, words


def run_once(clip: str, seconds: float, env_extra: dict, args: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="sgvis-bench-") as tmp:
        stats = os.path.join(tmp, "live.json")
        cmd = [sys.executable, "-m", "sgvis", "live", "--device", f"file:{os.path.abspath(clip)}", "--headless",
               "--duration", str(seconds), "--fps", "0", "--stats", stats, *args]
        subprocess.run(cmd, env=dict(os.environ, **env_extra), check=True, cwd=tmp, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        with open(stats) as f:
            s = json.load(f)
    return {"fps": s["frames_per_second"], "p50": s["latency_ms"]["p50"], "p95": s["latency_ms"]["p95"],
            "gen": s["stage_ms"]["generation"]["p50"], "steer": s["stage_ms"]["steering"]["p50"],
            "threads": ", ".join(f"{n}: {k}" for n, k in (s.get("threads") or {}).get("frames_at", {}).items())
            or str((s.get("threads") or {}).get("fixed"))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clip")
    p.add_argument("--variant", action="append", required=True, help='"LABEL:[env NAME=VALUE ...] ARGS"')
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--json", help="write every run here")
    a = p.parse_args()
    variants = [parse_variant(v) for v in a.variant]
    results: dict[str, list[dict]] = {label: [] for label, _, _ in variants}
    for _ in range(a.runs):
        for label, env, args in variants:
            results[label].append(run_once(a.clip, a.seconds, env, args))
            r = results[label][-1]
            print(f"{label}: {r['fps']:.1f} frames/s, latency p50 {r['p50']:.0f} / p95 {r['p95']:.0f} ms, "
                  f"generation p50 {r['gen']:.1f} ms, steering p50 {r['steer']:.1f} ms, "
                  f"frames by thread count {r['threads']}", file=sys.stderr,
                  flush=True)
    print("| variant | frames/s (median; runs) | latency p50 / p95 (median) | generation p50 | steering p50 |")
    print("|---|---|---|---:|---:|")
    for label, rs in results.items():
        med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
        runs = ", ".join(f"{r['fps']:.1f}" for r in rs)
        print(f"| {label} | {med('fps'):.1f}; {runs} "
              f"| {med('p50'):.0f} / {med('p95'):.0f} ms | {med('gen'):.1f} ms | {med('steer'):.1f} ms |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
