"""Peak memory of a full `sgvis render` against the track's length: a short track and a long one, each rendered in
a fresh process whose peak resident set size (resource.getrusage, ru_maxrss) is reported, and their ratio.

    python bench/bench_memory.py                          # 5 s vs 20 min, 10 fps, a tiny random 32 px model
    python bench/bench_memory.py --long-minutes 60 --beats offline --fps 10

Rendering streams audio in and video out, so memory should not grow with the track: the ratio should stay near
1.  The track is synthesized (a 120 BPM pulse: a kick-like click on every beat over a slowly changing tone),
written as a 16-bit wav block by block; the model is a small StyleGAN2 with random weights, so the run measures
the pipeline (decoding, analysis, whole-track beat tracking, steering, encoding), not a big generator's weights.
Set PYTHONPATH to measure another copy of sgvis (e.g. one before a change).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SR = 22050

CHILD = r"""
import json, resource, sys, time
from sgvis.cli import main
t = time.perf_counter()
code = main(sys.argv[1:])
print("BENCH " + json.dumps({"exit": code, "seconds": time.perf_counter() - t,
                             "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_track(path: str, seconds: float, block_s: float = 10.0) -> None:
    """A 120 BPM pulse over a slowly gliding tone, written block by block (constant memory here too)."""
    import av
    period = int(SR * 0.5)
    click = np.exp(-np.arange(int(0.05 * SR)) / (0.01 * SR)) * np.sin(2 * np.pi * 60 * np.arange(int(0.05 * SR)) / SR)
    rng = np.random.default_rng(0)
    with av.open(path, "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=SR, layout="mono")
        total = int(seconds * SR)
        for start in range(0, total, int(block_s * SR)):
            n = min(int(block_s * SR), total - start)
            t = (start + np.arange(n)) / SR
            x = 0.05 * np.sin(2 * np.pi * (110 + 20 * np.sin(2 * np.pi * t / 60)) * t)
            for b in range(-(start % period), n, period):
                if b >= 0:
                    seg = x[b:b + len(click)]
                    seg += 0.5 * click[:len(seg)] + 0.05 * rng.standard_normal(len(seg))
            frame = av.AudioFrame.from_ndarray(np.clip(x, -1, 1).astype(np.float32)[None], format="flt",
                                               layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = SR, start, Fraction(1, SR)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_model(path: str) -> None:
    import torch

    import stylegan
    from stylegan.generator import Generator
    torch.manual_seed(0)
    G = Generator("stylegan2", z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=512, channel_max=32))
    stylegan.save(G.eval(), path)


def measure(audio: str, model: str, out: str, args) -> dict:
    argv = ["render", audio, "-o", out, "--model", model, "--fps", str(args.fps), "--overwrite",
            "--set", f"render.beats={args.beats}"]
    env = dict(os.environ, TQDM_DISABLE="1")
    env.setdefault("PYTHONPATH", ROOT)
    # cwd: the temporary folder, so that `python -c` (which puts the working folder first on sys.path) imports the
    # sgvis PYTHONPATH names, not one that happens to be in the folder the benchmark was started from.
    result = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, env=env,
                            cwd=os.path.dirname(out))
    lines = [line for line in result.stdout.splitlines() if line.startswith("BENCH ")]
    if result.returncode or not lines:
        raise SystemExit(f"render failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][6:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--short-seconds", type=float, default=5.0)
    p.add_argument("--long-minutes", type=float, default=20.0)
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of both renders (default 10)")
    p.add_argument("--beats", choices=["offline", "causal"], default="offline",
                   help="render.beats (default offline: the whole-track tracker, the part that grew)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="sgvis-bench-memory-") as d:
        model = os.path.join(d, "tiny.safetensors")
        write_model(model)
        rows = {}
        for name, seconds in (("short", args.short_seconds), ("long", args.long_minutes * 60)):
            audio = os.path.join(d, f"{name}.wav")
            write_track(audio, seconds)
            t = time.perf_counter()
            r = measure(audio, model, os.path.join(d, f"{name}.mp4"), args)
            r.update(track_seconds=seconds, bench_seconds=time.perf_counter() - t)
            rows[name] = r
            os.unlink(audio)
            print(f"{name:>5}: {seconds / 60:7.2f} min of audio, peak RSS {r['max_rss_mb']:7.1f} MB "
                  f"(render {r['seconds']:.0f} s)", flush=True)
    ratio = rows["long"]["max_rss_mb"] / rows["short"]["max_rss_mb"]
    where = subprocess.run([sys.executable, "-c", "import sgvis; print(sgvis.__file__)"], capture_output=True,
                           text=True, cwd=tempfile.gettempdir(), env=dict(os.environ)).stdout.strip()
    print(f"ratio long/short: {ratio:.3f} (beats {args.beats}, {args.fps:g} fps; sgvis from {where})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(rows=rows, ratio=ratio, args=vars(args)), f, indent=2)


if __name__ == "__main__":
    main()
