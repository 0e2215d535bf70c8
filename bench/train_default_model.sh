#!/usr/bin/env bash
# Build the procedural dataset and train sgvis's default model (StyleGAN2 256x256, ~1.9 M parameters) on CPU.
#
#   bash bench/train_default_model.sh [OUTDIR]        # OUTDIR defaults to ./runs/default
#
# Resumable: run it again with the same OUTDIR and it continues from the last training state (the dataset
# is only built once; training saves its state every --snap kimg and every 10 minutes, and on Ctrl-C).
# The recipe is documented in docs/training.md; environment overrides (defaults = the shipped recipe):
#   KIMG=1000 BATCH=8 IMAGES=20000 DATA_SEED=1 SEED=0 THREADS= (torch default) SGVIS="python -m sgvis"
set -euo pipefail

OUT="${1:-./runs/default}"
KIMG="${KIMG:-1000}"
BATCH="${BATCH:-8}"
IMAGES="${IMAGES:-20000}"
DATA_SEED="${DATA_SEED:-1}"
SEED="${SEED:-0}"
SGVIS="${SGVIS:-python -m sgvis}"
THREAD_ARGS=()
if [[ -n "${THREADS:-}" ]]; then THREAD_ARGS=(--threads "$THREADS"); fi

mkdir -p "$OUT"
DATA="$OUT/procedural-256.zip"

# 1. Dataset: 20000 procedural 256x256 images (CC0, no download). Written atomically, so an existing zip is
#    complete; delete it to rebuild.
if [[ ! -f "$DATA" ]]; then
    $SGVIS dataset "$DATA" --procedural "$IMAGES" --seed "$DATA_SEED" --resolution 256
fi

# 2. Train (resumes from $OUT/train/training-state.pt when present).
$SGVIS train-gan --data "$DATA" --outdir "$OUT/train" --resume auto \
    --resolution 256 --channel-base 4096 --channel-max 128 --z-dim 256 --w-dim 256 --map-layers 4 \
    --batch "$BATCH" --kimg "$KIMG" --tick 1 --snap 10 --seed "$SEED" \
    --pl-weight 2 --style-mixing 0.9 --augment ada --grid 4x4 --device cpu "${THREAD_ARGS[@]}"

# 3. The model to ship, and its speed on this machine.
cp "$OUT/train/network-final.safetensors" "$OUT/sgvis-default-256.safetensors"
python - "$OUT/sgvis-default-256.safetensors" <<'EOF'
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
EOF
