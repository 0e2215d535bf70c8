"""Training settings that the command line shows as defaults (kept apart from the trainers, so that `sgvis
train-* --help` and argument errors answer without importing torch)."""
from __future__ import annotations

# Architecture options: None means "the dataset's / the resumed run's / the default".
ARCH_DEFAULTS = dict(resolution=None, channel_base=16384, channel_max=512, z_dim=512, w_dim=512, map_layers=8,
                     fp16_res=None, conv_clamp=None, noise=True)


OBJECTIVE_WEIGHTS = {
    "clip": dict(clip_av=1.0, clip_at=1.0, latent_reg=0.1, offset_reg=0.0, image_adv=0.05, video_adv=0.05,
                 onset_sync=0.0, onset_corr=0.0, contrastive=0.0, offset_limit=0.0, latent_sync=0.0),
    "sync": dict(clip_av=0.0, clip_at=0.0, latent_reg=0.02, offset_reg=0.002, image_adv=0.05, video_adv=0.0,
                 onset_sync=1.0, onset_corr=0.5, contrastive=0.1, offset_limit=0.0, latent_sync=0.0),
}


AUDIO_CLIP_DEFAULTS = {      # sgvis train-audio-clip
    "steps": 5000,
    "batch": 64,               # total over all processes
    "lr": 3e-4,
    "weight_decay": 0.01,
    "fps": 8.0,                # frames sampled per second of data (one mel window ends at each); lower: smaller
                               #   frame cache, fewer distinct training pairs
    "clip_frames": 1,          # frames per drawn clip; one random frame of each is used per step
    "frame_weight": 1.0,       # audio <-> frame loss weight (0: audio-only, no video decoding)
    "text_weight": 1.0,        # audio <-> label text loss weight (used when the data has labels)
    "prompt": "{label}",       # text template for labels, e.g. "the sound of {label}"
    "save_every": 500,         # checkpoint (encoder + state) every this many steps
    "seed": 0,
    "workers": None,           # data loader processes (None: 2 on CUDA, 0 on CPU)
    "amp": "auto",             # CUDA only: auto (bf16 where supported, else fp16) | bf16 | fp16 | off
    "max_seconds": None,       # use at most this much of each file (None: all)
    "channels": [32, 64, 128, 256],
    "head_hidden": 512,
}
