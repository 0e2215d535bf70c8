#!/usr/bin/env bash
# Train the built-in learned-steering checkpoint for the built-in model (sync objective: no CLIP, no download) in
# two stages, and compare it with the reactive mode on held-out real music.
#   1. synthesized music (sgvis.audio.synth), configs/train/encoder-sync.yaml: the mel -> motion mapping
#   2. real music (tools/real_music.py: clips of Debian game-music packages), configs/train/encoder-onsets.yaml,
#      from stage 1's checkpoint: the picked onsets as input, motion measured on the looked frames
#
#   bash tools/recipes/train_default_steering.sh [OUTDIR]       # OUTDIR defaults to ./runs/steer
#
# Resumable: run it again with the same OUTDIR and each stage continues from its training-state.pt.
# Environment overrides (defaults = the shipped recipe): STEPS=820 BATCH=2 TRACKS=24 HELDOUT=6 SECONDS=30
#   ONSET_STEPS=400 (stage 2), MUSIC=DIR (the real-music clips; default /work/sgvis-runs/real-music, built by
#   tools/real_music.py when missing: it fetches the Debian packages with apt)
#   INIT=PATH   start stage 1 from that steering checkpoint (train-encoder --init), e.g. the previous built-in one
#               when the built-in model was retrained; fewer STEPS are then needed
set -euo pipefail

OUT="${1:-./runs/steer}"
STEPS="${STEPS:-820}"
BATCH="${BATCH:-2}"
TRACKS="${TRACKS:-24}"
HELDOUT="${HELDOUT:-6}"
SECONDS_PER_TRACK="${SECONDS:-30}"
INIT="${INIT:-}"
ONSET_STEPS="${ONSET_STEPS:-400}"
MUSIC="${MUSIC:-/work/sgvis-runs/real-music}"
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

# 3. Stage 2 on real music (resumes when a state exists).
if [[ ! -d "$MUSIC/train" ]]; then python "$HERE/tools/real_music.py" --out "$MUSIC"; fi
RESUME=(--init "$OUT/run/steering.safetensors")
if [[ -f "$OUT/onsets/training-state.pt" ]]; then RESUME=(--resume); fi
sgvis train-encoder --data "$MUSIC/train" --out "$OUT/onsets" --config "$HERE/configs/train/encoder-onsets.yaml" \
    --steps "$ONSET_STEPS" "${RESUME[@]}"

# 4. Held-out comparison on real music nobody tuned on: AV-Align, motion and flags per steering.
sgvis eval steering "$MUSIC/heldout" --steering reactive --steering "$OUT/onsets/steering.safetensors" \
    --json "$OUT/eval.json"
echo "ship it with: cp $OUT/onsets/steering.safetensors $HERE/sgvis/assets/default-steering.safetensors"
