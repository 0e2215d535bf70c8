"""Frames of the demo track rendered with reactive steering in W space and in z space, side by side, for a model
with a latent bank (the built-in one by default): docs/figures/reactive-w-vs-z.png.

    python tools/figures/reactive_space_figure.py [--model PATH] [--out docs/figures/reactive-w-vs-z.png] [--frames 8]

Row 1: steer.space=w (the drift is a spline through mapped keyframes in W); row 2: steer.space=z (the default
for bank models: the spline runs through z and is mapped each frame). Same track, seed and times.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import av
import numpy as np
from PIL import Image

from sgvis.demo import write_demo_track


def frames_at(video: str, picks: set[int]) -> list[np.ndarray]:
    out = []
    with av.open(video) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in picks:
                out.append(f.to_ndarray(format="rgb24"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="generator (default: the built-in model)")
    ap.add_argument("--out", default="docs/figures/reactive-w-vs-z.png")
    ap.add_argument("--frames", type=int, default=8, help="frames per row, evenly over the 30 s track")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        track = os.path.join(tmp, "demo.wav")
        seconds = write_demo_track(track)
        n = int(round(seconds * 30))
        picks = {int((k + 0.5) * n / args.frames) for k in range(args.frames)}
        rows = []
        for space in ("w", "z"):
            video = os.path.join(tmp, f"{space}.mp4")
            cmd = [sys.executable, "-m", "sgvis", "render", track, "-o", video, "--seed", str(args.seed),
                   "--set", f"steer.space={space}"]
            if args.model:
                cmd += ["--model", args.model]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            rows.append(np.concatenate(frames_at(video, picks), axis=1))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out)
    print(f"wrote {args.out}: top steer.space=w, bottom steer.space=z, {args.frames} frames each")


if __name__ == "__main__":
    main()
