"""Speed of the tempotokens (diffusion) backend on a set of tiny random models, the ones the tests build (a diffusers
UNet3D / VAE / CLIP text encoder folder, a BEATs checkpoint and a mapper in their published layouts): the cost of
the pipeline around the models (windows, per-frame text encoding, the denoising loop, decoding, encoding), not of
a real model.  Runs `sgvis render --backend tempotokens` as a user would, on a synthesized track.

    python bench/bench_tempotokens.py [--seconds 6] [--steps 2 25] [--size 16 64] [--json out.json]

Prints, per (steps, size), the whole command's seconds and the render's seconds per frame (from --stats).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--steps", type=int, nargs="+", default=[2, 25])
    ap.add_argument("--size", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import numpy as np

    from audio_fixtures import write_audio
    from test_diffusion_models import tiny_beats_checkpoint, tiny_mapper_state
    from test_diffusion_render import WIDTH, write_tiny_t2v
    rows = []
    with tempfile.TemporaryDirectory(prefix="sgvis-bench-tt-") as d:
        write_tiny_t2v(os.path.join(d, "t2v"))
        tiny_beats_checkpoint(os.path.join(d, "beats.pt"))
        tiny_mapper_state(os.path.join(d, "mapper.pth"), in_dim=48, out=WIDTH)
        sr = 22050
        t = np.arange(int(sr * args.seconds)) / sr
        write_audio(os.path.join(d, "track.wav"),
                    (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 2 * t))).astype(np.float32), sr)
        for steps in args.steps:
            for size in args.size:
                out, stats = os.path.join(d, "out.mp4"), os.path.join(d, "stats.json")
                cmd = ["sgvis", "render", os.path.join(d, "track.wav"), "-o", out, "--overwrite", "--backend",
                       "tempotokens", "--t2v", os.path.join(d, "t2v"), "--beats", os.path.join(d, "beats.pt"),
                       "--mapper", os.path.join(d, "mapper.pth"), "--size", f"{size}x{size}", "--steps",
                       str(steps), "--guidance", "3", "--compute", "cpu", "--stats", stats]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                whole = time.perf_counter() - t0
                s = json.load(open(stats))
                row = {"steps": steps, "size": size, "frames": s["frames"], "whole_command_s": round(whole, 2),
                       "render_s": round(s["wall_seconds"], 2),
                       "s_per_frame": round(s["wall_seconds"] / s["frames"], 4)}
                rows.append(row)
                print(f"steps {steps:3d}, {size}x{size}: {s['frames']} frames, whole command {whole:.1f} s, "
                      f"render {s['wall_seconds']:.2f} s = {row['s_per_frame'] * 1000:.1f} ms/frame")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seconds": args.seconds, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
