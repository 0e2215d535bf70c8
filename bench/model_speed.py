"""Size and frames/s of a generator file at batch 1 on this machine: the exact synthesis and the fast path.

    python bench/model_speed.py MODEL.safetensors
"""
import os, sys, time
import sgvis  # noqa: F401  (sets OMP_WAIT_POLICY=PASSIVE before torch loads)
import torch
import stylegan
from stylegan.fast import FastSynthesis

torch.set_flush_denormal(True)
path = sys.argv[1]
G = stylegan.load(path)
z = torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(0))
fast = FastSynthesis(G)
print(f"{path}: {os.path.getsize(path) / 1e6:.1f} MB, {G.img_resolution}x{G.img_resolution}, "
      f"{sum(p.numel() for p in G.parameters()) / 1e6:.2f} M parameters; fast path: {fast.describe()}")
for name, fn in (("exact", lambda ws: G.synthesis(ws, noise_mode="const")), ("fast", fast)):
    with torch.inference_mode():
        ws = G.mapping(z, None)
        for _ in range(3):
            fn(ws)
        times = []
        for _ in range(30):
            t = time.perf_counter()
            fn(G.mapping(z, None))
            times.append(time.perf_counter() - t)
    times.sort()
    print(f"  {name:5s}: {times[len(times) // 2] * 1000:6.1f} ms/frame median ({1 / times[len(times) // 2]:.1f} fps), "
          f"best {times[0] * 1000:.1f} ms ({1 / times[0]:.1f} fps)")
