"""Quality evidence for a generator (the built-in one by default): a sample grid, an interpolation strip, and a
diversity figure against its training imagery (the procedural source), so that mode collapse shows.

    python tools/figures/model_figures.py [--model PATH] [--out docs/figures] [--n 64]

Diversity: each image is described by a feature vector (16x16 RGB thumbnail, mean-centred, plus a 4x4x4 colour
histogram); the figure is the mean pairwise L2 distance of those features over N generator samples divided by the
same over N training images. 1.0: as varied as the data; near 0: one repeated image. Also the mean distance from each
sample to its nearest training image, against training images to their nearest other one (small: copies).
For a model with a latent bank (sgvis train-glo), samples-without-latent-bank.png shows the same z without it.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch
from PIL import Image

import stylegan
from sgvis.data.procedural import render as procedural
from sgvis.backends.stylegan import default_model_path
from sgvis.steer.reactive import resolve_psi


def to_uint8(img: torch.Tensor) -> np.ndarray:
    return ((img.permute(0, 2, 3, 1).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def features(images: np.ndarray) -> np.ndarray:
    """images [N, H, W, 3] uint8 -> [N, F]."""
    out = []
    for im in images:
        thumb = np.asarray(Image.fromarray(im).resize((16, 16), Image.BILINEAR), np.float32) / 255.0
        hist, _ = np.histogramdd(im.reshape(-1, 3), bins=(4, 4, 4), range=((0, 256),) * 3)
        out.append(np.concatenate([(thumb - thumb.mean()).ravel(), 8.0 * hist.ravel() / hist.sum()]))
    return np.stack(out)


def pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum((a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None] - 2 * a @ b.T, 0))


def generate(G, ws: torch.Tensor, chunk: int = 8) -> np.ndarray:
    """uint8 images [N, H, W, 3] for ws, with constant noise, `chunk` at a time."""
    with torch.no_grad():
        return np.concatenate([to_uint8(G.synthesis(ws[i:i + chunk], noise_mode="const"))
                               for i in range(0, len(ws), chunk)])


def training_images(data_seed: int, n: int, resolution: int, styles=None) -> np.ndarray:
    """The first n images [n, H, W, 3] of the procedural dataset with that seed and styles (None: the random
    mixture), as `sgvis dataset --procedural N --seed S --styles ...` makes them (it cycles through the styles)."""
    return np.stack([procedural((data_seed, i), resolution=resolution,
                                style=styles[i % len(styles)] if styles else None) for i in range(n)])


def diversity(fs: np.ndarray, fr: np.ndarray) -> dict:
    """Generated features fs against training features fr (the same count): mean pairwise distances, their ratio,
    and the mean distance from each sample to its nearest training image."""
    iu = np.triu_indices(len(fs), 1)
    d_gen, d_real = pairwise(fs, fs)[iu].mean(), pairwise(fr, fr)[iu].mean()
    return {"mean_pairwise_generated": float(d_gen), "mean_pairwise_training": float(d_real),
            "diversity_ratio": float(d_gen / d_real),
            "nearest_training_from_generated": float(pairwise(fs, fr).min(1).mean())}


def save(img: Image.Image, path: str, longest: int = 1024) -> None:
    """PNG at most `longest` pixels wide or high (the figures live in git)."""
    img.thumbnail((longest, longest), Image.LANCZOS)
    img.save(path, optimize=True)


def grid(images: np.ndarray, cols: int) -> Image.Image:
    n, h, w, _ = images.shape
    rows = (n + cols - 1) // cols
    canvas = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, im in enumerate(images):
        canvas[(i // cols) * h:(i // cols + 1) * h, (i % cols) * w:(i % cols + 1) * w] = im
    return Image.fromarray(canvas)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=default_model_path())
    ap.add_argument("--out", default="docs/figures")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--psi", default="auto", help="truncation psi, or auto (as steer.truncation_psi: 0.7, or 1 "
                                                   "for a model with a latent bank)")
    ap.add_argument("--data-seed", type=int, default=1, help="the procedural dataset's seed (recipe: 1)")
    ap.add_argument("--styles", default="glow,aurora,sweep,lava",
                    help="the procedural dataset's --styles (recipe: glow,aurora,sweep,lava; '' for the random mix)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    G = stylegan.load(args.model, "cpu")
    args.psi = resolve_psi(G, args.psi if args.psi == "auto" else float(args.psi))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z = torch.randn([args.n, G.z_dim], generator=g)
        ws = G.mapping(z, None, truncation_psi=args.psi)
        samples = generate(G, ws)
        # Interpolation strip: 4 rows, each 8 steps from one sample's w to another's.
        strip = []
        for r in range(4):
            a, b = ws[2 * r], ws[2 * r + 1]
            t = torch.linspace(0, 1, 8)[:, None, None]
            strip.append(to_uint8(G.synthesis(a[None] + t * (b - a)[None],
                                              noise_mode="const")))
        # A model with a latent bank (train-glo): the same z without it, which draws blends of training images.
        bank = G.mapping.latent_bank
        if bank:
            G.mapping.latent_bank = 0
            unbanked = generate(G, G.mapping(z[:32], None, truncation_psi=args.psi))
            G.mapping.latent_bank = bank
    # The training imagery: the procedural dataset's images (seed (data seed, index), as `sgvis dataset` makes them).
    styles = [s for s in args.styles.split(",") if s]
    real = training_images(args.data_seed, args.n, G.img_resolution, styles)
    save(grid(samples[:32], 8), os.path.join(args.out, "samples.png"))
    save(grid(np.concatenate(strip), 8), os.path.join(args.out, "interpolation.png"))
    save(grid(real[:16], 8), os.path.join(args.out, "training-imagery.png"))
    if bank:
        save(grid(unbanked, 8), os.path.join(args.out, "samples-without-latent-bank.png"))
    fs, fr = features(samples), features(real)
    iu = np.triu_indices(args.n, 1)
    div = diversity(fs, fr)
    d_gen, d_real = div["mean_pairwise_generated"], div["mean_pairwise_training"]
    rr = pairwise(fr, fr)
    np.fill_diagonal(rr, np.inf)
    report = {"model": args.model, "n": args.n, "truncation_psi": args.psi, "data_seed": args.data_seed,
              "styles": styles or "random mix", **div,
              "nearest_training_from_training": float(rr.min(1).mean())}
    # Diversity figure: histograms of pairwise distances, generated vs training.
    from PIL import ImageDraw
    hg, edges = np.histogram(pairwise(fs, fs)[iu], bins=40, range=(0, float(max(d_gen, d_real) * 2.2)))
    hr, _ = np.histogram(pairwise(fr, fr)[iu], bins=edges)
    W, H = 640, 240
    fig = Image.new("RGB", (W, H + 40), "white")
    draw = ImageDraw.Draw(fig)
    top = max(hg.max(), hr.max())
    bw = W / len(hg)
    for i, (a, b) in enumerate(zip(hg, hr)):
        draw.rectangle([i * bw, H - H * b / top, (i + 0.5) * bw, H], fill=(120, 120, 120))
        draw.rectangle([(i + 0.5) * bw, H - H * a / top, (i + 1) * bw, H], fill=(220, 60, 40))
    draw.text((8, H + 6), f"pairwise feature distance over {args.n} images: grey = training imagery (mean "
                          f"{d_real:.2f}), red = generated (mean {d_gen:.2f}); ratio {d_gen / d_real:.2f}",
              fill="black")
    fig.save(os.path.join(args.out, "diversity.png"))
    with open(os.path.join(args.out, "diversity.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
