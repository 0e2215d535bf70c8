"""Check sgvis against reference outputs produced by the upstream code itself.

Each reference is a checkpoint file plus an .npz written next to it by running the original project's
code (NVIDIA stylegan2-ada-pytorch / stylegan3, rosinality stylegan2-pytorch) on that checkpoint:
    z [N, z_dim], c [N, c_dim] (optional), and per case k: psi_k, cutoff_k (-1 = None, optional),
    ws_k [N, num_ws, w_dim], img_k [N, C, H, W]; optionally d_img / d_out for the discriminator.
Those files are made outside this repository (the upstream code is not part of sgvis).

    python bench/parity.py REF_DIR [REF_DIR ...]

Prints, per checkpoint and case, max|ws diff| and max|img diff| / max|ref| against the bar
max|diff| <= 1e-4 * max|ref| + 1e-6 (ws: 1e-5); exits non-zero if any case misses it.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np
import torch

import stylegan


def check(ckpt: str, ref: str) -> bool:
    data = np.load(ref)
    G = stylegan.load(ckpt)
    if "latent_avg" in data:  # the reference truncated toward this latent (train snapshots do not store it)
        G.mapping.w_avg.copy_(torch.from_numpy(data["latent_avg"]).reshape(-1))
    z = torch.from_numpy(data["z"])
    c = torch.from_numpy(data["c"]) if "c" in data and data["c"].size else None
    ok = True
    k = 0
    while f"img_{k}" in data:
        psi = float(data[f"psi_{k}"])
        cutoff = int(data[f"cutoff_{k}"]) if f"cutoff_{k}" in data else -1
        cutoff = None if cutoff < 0 else cutoff
        with torch.no_grad():
            ws = G.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff)
            img = G.synthesis(ws, noise_mode="const", force_fp32=True)
        ws_ref, img_ref = torch.from_numpy(data[f"ws_{k}"]), torch.from_numpy(data[f"img_{k}"])
        ws_diff = (ws - ws_ref).abs().max().item()
        img_diff = (img - img_ref).abs().max().item()
        bound = 1e-4 * img_ref.abs().max().item() + 1e-6
        passed = ws_diff <= 1e-5 and img_diff <= bound
        ok &= passed
        print(f"{os.path.basename(ckpt):22s} psi={psi:<4.2f} cutoff={str(cutoff):4s} ws {ws_diff:.2e}  img {img_diff:.2e} "
              f"(rel {img_diff / img_ref.abs().max().item():.2e})  {'ok' if passed else 'FAIL'}")
        k += 1
    if "d_out" in data:
        D = stylegan.load_discriminator(ckpt)
        with torch.no_grad():
            out = D(torch.from_numpy(data["d_img"]), c, force_fp32=True)
        d_diff = (out - torch.from_numpy(data["d_out"])).abs().max().item()
        passed = d_diff <= 1e-4 * np.abs(data["d_out"]).max() + 1e-6
        ok &= passed
        print(f"{os.path.basename(ckpt):28s} discriminator  {d_diff:.2e}  {'ok' if passed else 'FAIL'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+")
    args = parser.parse_args()
    ok = True
    for d in args.dirs:
        refs = sorted(glob.glob(os.path.join(d, "*.npz")), key=len, reverse=True)
        for ckpt in sorted(p for p in glob.glob(os.path.join(d, "*")) if not p.endswith(".npz")):
            # A checkpoint belongs to the reference with the longest matching stem (a_b.pkl -> a_b.npz, not a.npz).
            stem = os.path.splitext(ckpt)[0]
            ref = next((r for r in refs if stem == r[:-4] or stem.startswith(r[:-4] + "_")), None)
            if ref is not None:
                ok &= check(ckpt, ref)
    print("all within the bar" if ok else "SOME CASES MISS THE BAR")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
