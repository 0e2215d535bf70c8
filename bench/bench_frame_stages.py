"""Where a frame's time goes on the generator side of sgvis: each synthesis block, the look, the camera warp, the
framing and the conversion to uint8, as `StyleGANBackend.frames` runs them (the shipped default model unless
--model), per batch size and thread count.  Also the whole frame with the synthesis stopped early at a lower
internal resolution (`render.draft_resolution`: what live drops to under load).

    python bench/bench_frame_stages.py --batch 1 8 --threads 1 2 [--model PATH] [--rounds 20] [--json out.json]

Times are medians over rounds, in ms per call (a call makes `batch` frames); run it on a quiet machine, or read
the shares, not the absolute figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch

    from sgvis.backends.look import Look
    from sgvis.backends.stylegan import StyleGANBackend, images_to_uint8
    from sgvis.backends.warp import warp
    from sgvis.outputs.framing import fit_images
    from stylegan.fast import cpu_model

    backend = StyleGANBackend.from_settings(model=args.model, device="cpu", precision="fp32")
    backend.look = Look({}, builtin_model=args.model is None)
    G = backend.latent_model
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batch:
            z = torch.randn([batch, G.z_dim], generator=torch.Generator().manual_seed(1))
            ws = G.mapping(z, None)
            camera = torch.zeros([batch, 4])
            camera[:, 0] = 0.01
            times: dict[str, list[float]] = {}

            def hook(resolution, x, img):
                now = time.perf_counter()
                times.setdefault(f"block {resolution}", []).append(now - hook.last)
                hook.last = now
                return x, img

            for r in range(args.rounds + 2):
                keep = r >= 2                                      # two warm-up rounds
                t0 = hook.last = time.perf_counter()
                img = backend.synthesize(ws, block_hook=hook)
                t1 = time.perf_counter()
                looked = backend.look(img)
                t2 = time.perf_counter()
                moved = warp(looked, camera)
                t3 = time.perf_counter()
                framed = fit_images(moved, backend.output_size, backend.fit)
                t4 = time.perf_counter()
                images_to_uint8(framed)
                t5 = time.perf_counter()
                t6 = time.perf_counter()
                backend.frames(ws, motion=torch.cat([torch.zeros([batch, 4]), camera], 1))
                t7 = time.perf_counter()
                draft = {}
                for res in (128, 64):
                    backend.draft_resolution = res
                    d0 = time.perf_counter()
                    backend.frames(ws, motion=torch.cat([torch.zeros([batch, 4]), camera], 1))
                    draft[res] = time.perf_counter() - d0
                backend.draft_resolution = None
                if not keep:
                    for v in times.values():
                        v.clear()
                    continue
                for name, dt in (("synthesis", t1 - t0), ("look", t2 - t1), ("warp", t3 - t2), ("fit", t4 - t3),
                                 ("uint8", t5 - t4), ("frames() whole", t7 - t6),
                                 ("frames() draft 128", draft[128]), ("frames() draft 64", draft[64])):
                    times.setdefault(name, []).append(dt)
            row = {"threads": threads, "batch": batch,
                   "ms": {k: 1000 * statistics.median(v) for k, v in times.items()}}
            results.append(row)
            print(f"threads {threads}, batch {batch} (ms per call, median of {args.rounds}):")
            for k, v in row["ms"].items():
                print(f"  {k:22s} {v:8.2f}")
    info = {"cpu": cpu_model(), "torch": torch.__version__, "python": platform.python_version(),
            "model": args.model or "built-in default", "results": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
