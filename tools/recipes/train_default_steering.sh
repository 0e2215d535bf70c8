#!/usr/bin/env bash
# Train the built-in learned-steering checkpoint for the built-in model (sync objective: no CLIP, no download) and
# compare it with the reactive mode and the untrained initialisation on held-out music.
#
#   bash tools/recipes/train_default_steering.sh [OUTDIR]       # OUTDIR defaults to ./runs/steer
#
# Resumable: run it again with the same OUTDIR and training continues from OUTDIR/run/training-state.pt.
# Environment overrides (defaults = the shipped recipe): STEPS=820 BATCH=2 TRACKS=24 HELDOUT=6 SECONDS=30
#   INIT=PATH   start from that steering checkpoint (train-encoder --init), e.g. the previous built-in one when
#               the built-in model was retrained; fewer STEPS are then needed
set -euo pipefail

OUT="${1:-./runs/steer}"
STEPS="${STEPS:-820}"
BATCH="${BATCH:-2}"
TRACKS="${TRACKS:-24}"
HELDOUT="${HELDOUT:-6}"
SECONDS_PER_TRACK="${SECONDS:-30}"
INIT="${INIT:-}"
HERE="$(cd "$(dirname "$0")/../.." && pwd)"
mkdir -p "$OUT"

# 1. Synthesized music (sgvis.audio.synth; deterministic from the seed): training tracks and held-out tracks.
python - "$OUT" "$TRACKS" "$HELDOUT" "$SECONDS_PER_TRACK" <<'PY'
import os, sys
from sgvis.data.clip_data import write_synth_music
out, n, held, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
for name, count, seed in (("train", n, 1), ("heldout", held, 2)):
    folder = os.path.join(out, name)
    if not os.path.isdir(folder):
        write_synth_music(folder, count, seconds=seconds, seed=seed)
PY

# 2. Train (the built-in model; resumes when a state exists).
RESUME=()
if [[ -f "$OUT/run/training-state.pt" ]]; then RESUME=(--resume); elif [[ -n "$INIT" ]]; then RESUME=(--init "$INIT"); fi
sgvis train-encoder --data "$OUT/train" --out "$OUT/run" --config "$HERE/configs/train/encoder-sync.yaml" \
    --batch "$BATCH" --steps "$STEPS" --set train_encoder.preview_every=0 --set train_encoder.checkpoint_every=10 \
    "${RESUME[@]}"

# 3. Held-out comparison: AV-Align and smoothness per steering.
sgvis eval steering "$OUT/heldout" --steering reactive --steering untrained --steering "$OUT/run/steering.safetensors" \
    --seconds 20 --json "$OUT/eval.json"
echo "ship it with: cp $OUT/run/steering.safetensors $HERE/sgvis/assets/default-steering.safetensors"
