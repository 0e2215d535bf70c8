"""Diversity of every snapshot of a train-gan run, to pick the one to ship and to see mode collapse coming.

    python tools/figures/snapshot_diversity.py RUN_DIR [--n 64] [--psi 1.0 --psi 0.7] [--data-seed 1]

For each network-snapshot-*.safetensors in RUN_DIR: the diversity ratio (mean pairwise feature distance over N
samples divided by the same over N procedural training images; the features of tools/figures/model_figures.py) and the mean
distance from each sample to its nearest training image. A falling ratio is collapse; a falling nearest distance
means the samples move towards the training imagery.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_figures import diversity, features, generate, training_images  # noqa: E402

import stylegan  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--psi", type=float, action="append", help="truncation (repeatable; default 1.0 and 0.7)")
    ap.add_argument("--data-seed", type=int, default=1, help="the procedural dataset's seed (recipe: 1)")
    args = ap.parse_args()
    psis = args.psi or [1.0, 0.7]
    paths = sorted(glob.glob(os.path.join(args.run, "network-snapshot-*.safetensors")))
    if not paths:
        sys.exit(f"snapshot_diversity: no network-snapshot-*.safetensors in {args.run}")
    real_by_res: dict[int, np.ndarray] = {}
    print("kimg  " + "  ".join(f"ratio@{p:g} nearest@{p:g}" for p in psis))
    for path in paths:
        G = stylegan.load(path, "cpu")
        res = G.img_resolution
        if res not in real_by_res:
            real_by_res[res] = features(training_images(args.data_seed, args.n, res))
        z = torch.randn([args.n, G.z_dim], generator=torch.Generator().manual_seed(0))
        cols = []
        for psi in psis:
            with torch.no_grad():
                ws = G.mapping(z, None, truncation_psi=psi)
            d = diversity(features(generate(G, ws)), real_by_res[res])
            cols.append(f"{d['diversity_ratio']:9.3f} {d['nearest_training_from_generated']:10.2f}")
        kimg = int(re.search(r"(\d+)\.safetensors$", path).group(1))
        print(f"{kimg:4d}  " + "  ".join(cols), flush=True)


if __name__ == "__main__":
    main()
