"""`sgvis train-encoder`: train learned steering (sound inversion encoder + coarse/mid/fine GRUs) for a frozen
StyleGAN, as in "Sound-guided Semantic Video Generation" (Lee et al., ECCV 2022).

    sgvis train-encoder --model G.pkl --data clips/ --out runs/steer --objective clip --config my.yaml
    sgvis train-encoder --data music/ --out runs/steer --objective sync          # no external model needed
    sgvis render track.wav --steer learned --steering runs/steer/steering.safetensors

Objectives (sgvis.train.steering_objectives has the losses; every weight is a setting, `--set
train_encoder.weights.NAME=VALUE`):
  clip  the paper's losses: CLIP audio<->frame and label-text<->frame cosine distances, the latent
        regulariser lambda_b, and image and video discriminators.  Needs CLIP towers (train_encoder.clip.path)
        and an audio encoder into CLIP space (train_encoder.audio_clip, from `sgvis train-audio-clip`).
  sync  no external model: frame-to-frame change follows the audio's onset strength, contrastive encoder
        outputs, the latent regulariser and the image discriminator.

Each step draws B clips of T frames (mel window and onset strength per frame, exactly the features render
steers with; real frames when the data has video), a random base latent w per clip, runs w^ = model(x, w),
renders the T frames through the frozen generator, and takes one optimiser step for the steering model and
one for each discriminator.  The image discriminator's real images are the data's video frames, or when the
data is audio-only, ordinary samples of the generator (so steered frames stay on its image manifold).

The output folder holds steering.safetensors (the latest weights, in the learned-steering format),
training-state.pt (for --resume), log.csv (every loss, every step), options.json and previews/*.mp4
(a few clips rendered with their audio through `sgvis render`).
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import signal
import time

import torch

from sgvis.errors import UserError
from sgvis.train.settings import OBJECTIVE_WEIGHTS
from sgvis.train.state import check_outdir, raise_keyboard_interrupt, resumable_state

__all__ = ["TRAIN_DEFAULTS", "OBJECTIVE_WEIGHTS", "EncoderTrainer", "train_encoder"]

STATE_TAG = "sgvis-steering-training-state"
STATE_VERSION = 1
WEIGHT_NAMES = ("clip_av", "clip_at", "latent_reg", "offset_reg", "image_adv", "video_adv", "onset_sync",
                "onset_corr", "contrastive", "offset_limit", "latent_sync")
TRAIN_DEFAULTS = {
    "objective": "sync",
    "steps": 1000,
    "batch": 4,
    "clip_frames": 8,               # T: frames per training clip, all run through the recurrent model
    "render_frames": None,          # the last this many of them are rendered for the image losses (None: all T);
                                    #   the frames before only warm up the recurrent state and feed the latent losses
    "fps": 30.0,
    "loss_resolution": 64,          # generated frames are area-downsampled to this for the discriminators
    "motion_resolution": 64,        # ... and to this for the motion measure (after the look)
    "look": "off",                  # auto: measure motion on frames with the look render gives this model (the
                                    #   built-in model's contour lines), as optical flow sees them; off: raw frames
    "onset_input": False,           # the GRUs also take the picked onset of each frame (sgvis.steer.learned)
    "lr": 1e-4,
    "d_lr": 2e-4,
    "truncation_psi": "auto",       # base latents w, as steer.truncation_psi at render time
    "hidden": 256,                  # GRU size
    "encoder_channels": [32, 64, 128, 256],    # sound inversion encoder conv widths
    "seed": 0,
    # onset_sync target (mean |frame change|, images in [-1, 1]): base + gain * onset envelope with this release
    # onsets: "strength" (the onset strength of every frame) or "picked" (only picked onsets, at their strength)
    "motion": {"base": 0.008, "gain": 0.04, "release_s": 0.25, "onsets": "strength"},
    # latent_sync target (RMS over W+ rows of the per-frame latent step): base + gain * the same envelope
    "latent_motion": {"base": 0.2, "gain": 0.8},
    "offset_limit": 6.0,            # offset_limit: W+ rows may move this far from w before the hinge penalty
    # silence augmentation: with this probability a clip gets a span of digital silence (its mel rows at the
    # floor, no onsets), where the motion targets ask for stillness (a hit's release may still ease out)
    "silence": {"probability": 0.0, "min_s": 0.5, "max_s": 3.0},
    "contrastive_temperature": 0.1,
    "sample_bank": 256,             # generator samples kept as the image discriminator's reals (audio-only data)
    "r1_gamma": 0.05,
    "r1_every": 16,
    "weights": {k: None for k in WEIGHT_NAMES},   # None: the objective's default (OBJECTIVE_WEIGHTS)
    "clip": {"path": None, "name": None, "cache_dir": None, "config": None, "prompt": "{label}"},
    "audio_clip": None,             # AudioClipEncoder checkpoint (sgvis train-audio-clip)
    "labels": None,                 # CSV of labels/captions for the data (see sgvis.data.clip_data)
    "max_seconds": None,            # use at most this much of each data file
    "init": None,                   # steering checkpoint to start from (e.g. one trained for an earlier model)
    "checkpoint_every": 100,
    "preview_every": 500,
    "preview_clips": 2,
    "preview_seconds": 4.0,
    "workers": 0,
}


def resolve_weights(cfg: dict) -> dict:
    objective = cfg["objective"]
    if objective not in OBJECTIVE_WEIGHTS:
        raise UserError(f"train_encoder.objective {objective!r}: choose one of {', '.join(OBJECTIVE_WEIGHTS)}")
    weights = dict(OBJECTIVE_WEIGHTS[objective])
    for k, v in (cfg.get("weights") or {}).items():
        if v is not None:
            try:
                weights[k] = float(v)
            except (TypeError, ValueError):
                raise UserError(f"train_encoder.weights.{k}: expected a number, got {v!r}") from None
            if not math.isfinite(weights[k]) or weights[k] < 0:
                raise UserError(f"train_encoder.weights.{k}: must be a finite number >= 0, got {v!r}")
    return weights


def base_latents(G, n: int, psi, generator: torch.Generator | None = None) -> torch.Tensor:
    """W+ [n, num_ws, w_dim] of random z, truncated toward w_avg by psi (a number or "auto"; as render's base
    latent)."""
    from sgvis.steer.reactive import resolve_psi, truncate
    psi = resolve_psi(G, psi)
    z = torch.randn([n, G.z_dim], generator=generator).to(G.device)
    c = G.make_c(n, 0) if G.c_dim else G.make_c(n)
    with torch.no_grad():
        ws = truncate(G, G.mapping(z, c, truncation_psi=1.0), psi)
    return ws.float()


class EncoderTrainer:
    """The networks, optimisers and one training step; `step(batch)` returns the losses as floats."""

    def __init__(self, G, cfg: dict, device: torch.device, mel=None, clip=None, audio_clip=None,
                 label_texts: list[str] | None = None, dist=None, look=None):
        from sgvis.features.analysis import MelConfig
        from sgvis.steer.learned import LearnedSteeringModel
        from sgvis.train.steering_objectives import VideoPatchDiscriminator
        from stylegan.stylegan2 import Discriminator
        self.cfg = cfg
        self.device = device
        self.dist = dist
        self.weights = resolve_weights(cfg)
        self.G = G.to(device).eval().requires_grad_(False)
        self.model = LearnedSteeringModel(G.num_ws, G.w_dim, mel or MelConfig(), hidden=int(cfg["hidden"]),
                                          channels=tuple(int(c) for c in cfg["encoder_channels"]),
                                          onset_input=bool(cfg.get("onset_input"))).to(device)
        self.look = look if look is not None and look.active else None
        if cfg["motion"].get("onsets", "strength") not in ("strength", "picked"):
            raise UserError(f"train_encoder.motion.onsets must be strength or picked, got {cfg['motion']['onsets']!r}")
        res = int(cfg["loss_resolution"])
        if res < 8 or res & (res - 1):
            raise UserError(f"train_encoder.loss_resolution {res}: must be a power of two >= 8")
        self.res = min(res, G.img_resolution)
        self.D_img = Discriminator(c_dim=0, img_resolution=self.res, img_channels=3, architecture="resnet",
                                   channel_base=2048, channel_max=128,
                                   epilogue_kwargs=dict(mbstd_group_size=2)).to(device)
        self.D_vid = VideoPatchDiscriminator().to(device)
        betas = (0.0, 0.99)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=float(cfg["lr"]), betas=betas)
        self.opt_img = torch.optim.Adam(self.D_img.parameters(), lr=float(cfg["d_lr"]), betas=betas)
        self.opt_vid = torch.optim.Adam(self.D_vid.parameters(), lr=float(cfg["d_lr"]), betas=betas)
        self.clip, self.audio_clip = clip, audio_clip
        self.text_emb = None
        if clip is not None and label_texts:
            with torch.no_grad():
                self.text_emb = clip.encode_text(label_texts).to(device)
        self.step_count = 0
        self._bank = None
        self.rng = torch.Generator().manual_seed(int(cfg["seed"]))
        self.amp = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None

    # -- helpers ---------------------------------------------------------------------------------------
    def _ddp_average(self, module: torch.nn.Module) -> None:
        if self.dist is not None:
            self.dist.average_gradients(module)

    def calibrate_inputs(self, mels: torch.Tensor) -> None:
        """Set the encoder's input standardisation from data (before training)."""
        from sgvis.steer.learned import calibrate_input_standardisation
        calibrate_input_standardisation(self.model.encoder, mels)

    def _synthesize(self, ws: torch.Tensor) -> torch.Tensor:
        """ws [N, num_ws, w_dim] -> images [N, 3, R, R] through the frozen generator (differentiable in ws)."""
        with torch.autocast("cuda", dtype=self.amp, enabled=self.amp is not None):
            img = self.G.synthesis(ws, noise_mode="const")
        return img.float()

    def _real_images(self, batch: dict, n: int) -> torch.Tensor:
        """Real images for the image discriminator at the loss resolution: video frames where the data has
        them, else ordinary samples of the generator."""
        from sgvis.train.steering_objectives import downsample
        frames, has_video = batch["frames"], batch["has_video"].bool()
        if bool(has_video.any()) and frames.shape[-1] > 0:
            x = frames[has_video].to(self.device).flatten(0, 1).float() / 127.5 - 1
            x = downsample(x, self.res)
            idx = torch.randint(0, x.shape[0], [n], generator=self.rng).to(self.device)
            return x[idx]
        if self._bank is None:                     # a bank of generator samples, refreshed a little each step
            size = max(int(self.cfg["sample_bank"]), n)
            self._bank = torch.cat([self._samples(min(16, size - k)) for k in range(0, size, 16)])
        fresh = self._samples(2)
        slots = torch.randint(0, self._bank.shape[0], [2], generator=self.rng).to(self.device)
        self._bank[slots] = fresh
        idx = torch.randint(0, self._bank.shape[0], [n], generator=self.rng).to(self.device)
        return self._bank[idx]

    def _samples(self, n: int) -> torch.Tensor:
        from sgvis.train.steering_objectives import downsample
        with torch.no_grad():
            return downsample(self._synthesize(base_latents(self.G, n, self.cfg["truncation_psi"],
                                                            self.rng)), self.res)

    def _silence(self, batch: dict, mels: torch.Tensor, onset: torch.Tensor, picked: torch.Tensor | None):
        """Silence augmentation: each clip, with probability silence.probability, gets one span of digital
        silence (min_s to max_s long, anywhere from before the clip's first window to its last frame): its mel
        rows in every window become the analysis floor, and the frames whose window ends inside it lose their
        onsets.  Returns (mels, onset, picked, quiet [B, T]: 1 on those frames)."""
        from sgvis.features.analysis import SILENT_LOG_MEL
        sc = self.cfg["silence"]
        if "mel_rows" not in batch:
            raise UserError("silence augmentation needs the clips' mel row positions; build the clip cache again")
        rows = batch["mel_rows"].to(self.device).long()                      # [B, T]: window ends, relative
        B, T, _, W = mels.shape
        rate = self.model.mel_config.sample_rate / self.model.mel_config.hop     # mel rows per second
        lo, hi = float(sc["min_s"]) * rate, float(sc["max_s"]) * rate
        u = torch.rand(B, 3, generator=self.rng).to(self.device)
        on = u[:, 0] < float(sc["probability"])
        length = lo + (hi - lo) * u[:, 1]
        first, last = -W, rows[:, -1].float()                                # rows a window of the clip can hold
        r0 = first + (last - first) * u[:, 2]
        r1 = torch.where(on, r0 + length, r0)                                # an empty span where it is off
        col = rows[:, :, None] - W + torch.arange(W, device=self.device)     # [B, T, W]: each column's row
        silent_col = (col >= r0[:, None, None]) & (col < r1[:, None, None])
        mels = torch.where(silent_col[:, :, None, :], torch.full_like(mels, SILENT_LOG_MEL), mels)
        end = (rows - 1).float()
        quiet = ((end >= r0[:, None]) & (end < r1[:, None])).float()
        onset = onset * (1 - quiet)
        picked = picked * (1 - quiet) if picked is not None else None
        return mels, onset, picked, quiet

    # -- one step --------------------------------------------------------------------------------------
    def step(self, batch: dict) -> dict:
        from sgvis.train.losses import d_logistic, g_nonsaturating, r1_penalty
        from sgvis.train import steering_objectives as so
        wt = self.weights
        cfg = self.cfg
        mels = batch["mels"].to(self.device).float()
        onset = batch["onset"].to(self.device).float()
        B, T = mels.shape[:2]
        picked = onset.clamp(0, 1) * batch["onset_peak"].to(self.device).float() if "onset_peak" in batch else None
        if (cfg["motion"].get("onsets") == "picked" or self.model.onset_input) and picked is None:
            raise UserError("this data has no picked onsets (onset_peak); build its clip cache again")
        R = min(int(cfg.get("render_frames") or T), T)                # rendered frames: the last R of the T
        quiet = torch.zeros(B, T, device=self.device)                   # 1 where the clip was made silent
        if float((cfg.get("silence") or {}).get("probability", 0.0)) > 0:
            mels, onset, picked, quiet = self._silence(batch, mels, onset, picked)
        w = base_latents(self.G, B, cfg["truncation_psi"], self.rng)
        self.model.train()
        e = self.model.encode(mels)
        ws_hat = self.model(mels, w, offsets=e, onsets=picked if self.model.onset_input else None)  # [B, T, num_ws, w_dim]
        release = float(cfg["motion"]["release_s"])
        decay = math.exp(-1.0 / (release * float(cfg["fps"]))) if release > 0 else 0.0
        drive = picked if cfg["motion"].get("onsets") == "picked" else onset
        envelope = so.onset_envelope(drive, decay)                              # [B, T]: what each frame asks for
        losses: dict[str, torch.Tensor] = {}
        if wt["latent_reg"]:
            losses["latent_reg"] = so.latent_regulariser(ws_hat)
        if wt["offset_reg"]:
            losses["offset_reg"] = so.offset_regulariser(ws_hat, w)
        if wt["offset_limit"]:
            losses["offset_limit"] = so.offset_limit_penalty(ws_hat, w, float(cfg["offset_limit"]))
        if wt["latent_sync"] and T > 1:
            lm = cfg["latent_motion"]
            losses["latent_sync"] = so.onset_sync_loss(so.latent_motion(ws_hat), envelope[:, 1:],
                                                       float(lm["base"]) * (1 - quiet[:, 1:]), float(lm["gain"]))
        if wt["contrastive"] and B > 1:
            half = max(T // 2, 1)
            losses["contrastive"] = so.encoder_contrastive_loss(e[:, :half].mean(1), e[:, half:].mean(1) if T > 1
                                                                else e[:, :1].mean(1),
                                                                float(cfg["contrastive_temperature"]))
        needs_frames = any(wt[k] for k in ("onset_sync", "onset_corr", "image_adv", "video_adv", "clip_av",
                                           "clip_at"))
        small = None
        if needs_frames:
            mels, T = mels[:, T - R:], R                                       # from here on: the rendered frames
            img = self._synthesize(ws_hat[:, -R:].flatten(0, 1))                 # [B*R, 3, S, S]
            small = so.downsample(img, self.res)
            clips = small.view(B, T, *small.shape[1:])
            if (wt["onset_sync"] or wt["onset_corr"]) and T > 1:
                seen = self.look(img) if self.look is not None else img
                mres = min(int(cfg.get("motion_resolution") or self.res), img.shape[-1])
                motion = so.frame_motion(so.downsample(seen, mres).view(B, T, 3, mres, mres))
                target_onset = envelope[:, -R + 1:]
                if wt["onset_sync"]:
                    base = float(cfg["motion"]["base"]) * (1 - quiet[:, -R + 1:])
                    losses["onset_sync"] = so.onset_sync_loss(motion, target_onset, base,
                                                              float(cfg["motion"]["gain"]))
                if wt["onset_corr"]:
                    losses["onset_corr"] = so.onset_corr_loss(motion, target_onset)
                self._last_motion = float(motion.detach().mean())
            if (wt["clip_av"] or wt["clip_at"]) and self.clip is not None:
                img_emb = self.clip.encode_image(img)
                if wt["clip_av"] and self.audio_clip is not None:
                    with torch.no_grad():
                        a_emb = self.audio_clip(mels.flatten(0, 1))
                    losses["clip_av"] = so.cosine_distance(img_emb, a_emb)
                if wt["clip_at"] and self.text_emb is not None:
                    li = batch["label_index"].to(self.device).long()
                    keep = (li >= 0).repeat_interleave(T)
                    if bool(keep.any()):
                        t_emb = self.text_emb[li.clamp(min=0)].repeat_interleave(T, dim=0)
                        losses["clip_at"] = so.cosine_distance(img_emb[keep], t_emb[keep])
            if wt["image_adv"]:
                self.D_img.requires_grad_(False)
                losses["image_adv"] = g_nonsaturating(self.D_img(small, None))
            has_video = bool(batch["has_video"].any()) and batch["frames"].shape[-1] > 0
            if wt["video_adv"] and has_video and T >= 3:
                self.D_vid.requires_grad_(False)
                losses["video_adv"] = g_nonsaturating(self.D_vid(clips))
        total = sum(wt[k] * v for k, v in losses.items())
        out = {k: float(v.detach()) for k, v in losses.items()}
        out["total"] = float(total.detach()) if torch.is_tensor(total) else 0.0
        if torch.is_tensor(total) and total.requires_grad:
            if not torch.isfinite(total):
                raise FloatingPointError(f"the steering loss became {float(total)} at step {self.step_count}")
            self.opt.zero_grad(set_to_none=True)
            total.backward()
            self._ddp_average(self.model)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
            self.opt.step()

        # Discriminators.
        if small is not None and wt["image_adv"]:
            self.D_img.requires_grad_(True)
            fake = small.detach()
            real = self._real_images(batch, fake.shape[0])
            loss_d = d_logistic(self.D_img(real, None), self.D_img(fake, None))
            if self.step_count % int(cfg["r1_every"]) == 0 and float(cfg["r1_gamma"]) > 0:
                r = real.detach().requires_grad_(True)
                loss_d = loss_d + float(cfg["r1_gamma"]) / 2 * int(cfg["r1_every"]) * \
                    r1_penalty(r, self.D_img(r, None)).mean()
            self.opt_img.zero_grad(set_to_none=True)
            loss_d.backward()
            self._ddp_average(self.D_img)
            self.opt_img.step()
            out["d_image"] = float(loss_d.detach())
        if small is not None and "video_adv" in losses:
            self.D_vid.requires_grad_(True)
            hv = batch["has_video"].bool()
            real = batch["frames"][hv][:, -T:].to(self.device).float() / 127.5 - 1       # [b, T, 3, S, S]
            real = so.downsample(real.flatten(0, 1), self.res).view(real.shape[0], T, 3, self.res, self.res)
            fake = small.detach().view(B, T, 3, self.res, self.res)
            loss_v = d_logistic(self.D_vid(real), self.D_vid(fake))
            self.opt_vid.zero_grad(set_to_none=True)
            loss_v.backward()
            self._ddp_average(self.D_vid)
            self.opt_vid.step()
            out["d_video"] = float(loss_v.detach())
        if hasattr(self, "_last_motion"):
            out["motion"] = self._last_motion
        self.step_count += 1
        return out

    # -- state -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"format": STATE_TAG, "version": STATE_VERSION, "step": self.step_count,
                "model": self.model.state_dict(), "model_config": json.dumps(self.model.config()),
                "D_img": self.D_img.state_dict(), "D_vid": self.D_vid.state_dict(),
                "opt": self.opt.state_dict(), "opt_img": self.opt_img.state_dict(),
                "opt_vid": self.opt_vid.state_dict(), "rng": self.rng.get_state(),
                "torch_rng": torch.get_rng_state(), "config": json.dumps(self.cfg)}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.D_img.load_state_dict(state["D_img"])
        self.D_vid.load_state_dict(state["D_vid"])
        self.opt.load_state_dict(state["opt"])
        self.opt_img.load_state_dict(state["opt_img"])
        self.opt_vid.load_state_dict(state["opt_vid"])
        self.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.step_count = int(state["step"])


# -- the command -------------------------------------------------------------------------------------------
def _load_guidance(cfg: dict, weights: dict, device, dataset):
    """CLIP towers, audio encoder and label texts for the clip objective (None where not used)."""
    if not (weights["clip_av"] or weights["clip_at"]):
        return None, None, None
    clip_cfg = {k: v for k, v in (cfg.get("clip") or {}).items() if k != "prompt" and v is not None}
    if not clip_cfg:
        raise UserError("the clip objective needs CLIP weights: set train_encoder.clip.path to a local CLIP "
                        "folder (or use --objective sync, which needs no external model)")
    from sgvis.train.clip_models import load_audio_encoder, load_clip
    clip = load_clip(clip_cfg, device)
    audio_clip = None
    if weights["clip_av"]:
        if not cfg.get("audio_clip"):
            raise UserError("the clip objective's audio<->frame loss needs an audio encoder into CLIP space: "
                            "train one with `sgvis train-audio-clip` and set train_encoder.audio_clip (or "
                            "--set train_encoder.weights.clip_av=0)")
        audio_clip = load_audio_encoder(cfg["audio_clip"], device, embed_dim=clip.embed_dim)
        audio_clip.eval().requires_grad_(False)
    texts = None
    if weights["clip_at"]:
        if not dataset.labels:
            raise UserError("the clip objective's audio<->text loss needs labels: give --labels CSV or a "
                            "folder per class (or --set train_encoder.weights.clip_at=0)")
        prompt = (cfg.get("clip") or {}).get("prompt") or "{label}"
        texts = [prompt.format(label=lab) for lab in dataset.labels]
    return clip, audio_clip, texts


def _write_previews(cfg: dict, outdir: str, model_path: str | None, steering_path: str, files: list[str],
                    step: int) -> list[str]:
    from sgvis.render import RenderJob, render
    out = []
    for k in range(min(int(cfg["preview_clips"]), len(files))):
        path = os.path.join(outdir, "previews", f"step-{step:06d}-{k}.mp4")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        job = RenderJob(audio=files[k], output=path, model=model_path, fps=float(cfg["fps"]), seed=k,
                        end=float(cfg["preview_seconds"]), overwrite=True, steer="learned",
                        steering_path=steering_path)
        render(job)
        out.append(path)
    return out


def train_encoder(model_path: str | None, data: str, outdir: str, cfg: dict, device_name: str = "auto",
                  resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    """Train and write steering.safetensors into `outdir`; returns a summary."""
    from tqdm.auto import tqdm

    from sgvis.data.clip_data import ClipSet, ClipSetConfig, collate_clips
    from sgvis.steer.directions import model_hash
    from sgvis.steer.learned import save_steering
    from sgvis.backends.stylegan import load_model
    from sgvis.train.common import InfiniteSampler, run_steps, start_processes

    weights = resolve_weights(cfg)
    for key in ("steps", "batch", "clip_frames"):
        if int(cfg[key]) < 1:
            raise UserError(f"train_encoder.{key} must be at least 1, got {cfg[key]}")
    if not os.path.isdir(data):
        raise UserError(f"--data {data}: not a folder (give a folder of audio or video files)")
    state_path = os.path.join(outdir, "training-state.pt")
    steering_path = os.path.join(outdir, "steering.safetensors")
    state = resumable_state(outdir, resume, overwrite, STATE_TAG, STATE_VERSION, "train-encoder")
    dist, device = start_processes(device_name, cfg["batch"], "train_encoder.batch")
    created = not os.path.exists(outdir)
    check_outdir(outdir, flag="--out")
    try:
        G = load_model(model_path)
        from sgvis.features.analysis import MelConfig
        mel = MelConfig()
        dataset = ClipSet(data, ClipSetConfig(fps=float(cfg["fps"]), clip_frames=int(cfg["clip_frames"]),
                                              frame_size=int(cfg["loss_resolution"]),
                                              max_seconds=cfg.get("max_seconds")),
                          mel=mel, labels=cfg.get("labels"), progress=progress and dist.main)
        clip, audio_clip, texts = _load_guidance(cfg, weights, device, dataset)
        torch.manual_seed(int(cfg["seed"]) + dist.rank)
        trainer = EncoderTrainer(G, cfg, device, mel, clip, audio_clip, texts, dist,
                                 look=training_look(cfg.get("look"), builtin_model=model_path is None))
        batch_per_rank = int(cfg["batch"]) // dist.world
        if state is not None:
            trainer.load_state_dict(state)
        elif cfg.get("init"):
            _init_steering(trainer.model, str(cfg["init"]))
        sampler = InfiniteSampler(len(dataset), int(cfg["seed"]), dist.rank, dist.world, trainer.step_count)
        loader = iter(torch.utils.data.DataLoader(dataset, batch_size=batch_per_rank, sampler=sampler,
                                                  collate_fn=collate_clips, num_workers=int(cfg["workers"]),
                                                  drop_last=True))
        if state is None and not cfg.get("init"):
            # Input standardisation from a few batches of this data.
            sample = torch.cat([next(loader)["mels"] for _ in range(min(4, max(1, len(dataset) // batch_per_rank)))])
            trainer.calibrate_inputs(sample)
    except BaseException:                 # bad model or data: leave no empty output folder behind
        if created and os.path.isdir(outdir) and not os.listdir(outdir):
            os.rmdir(outdir)
        raise
    dist.broadcast_module(trainer.model)
    dist.broadcast_module(trainer.D_img)
    dist.broadcast_module(trainer.D_vid)
    if dist.main:
        with open(os.path.join(outdir, "options.json"), "w") as f:
            json.dump({"model": model_path, "data": data, "config": cfg, "weights": weights,
                       "clips": len(dataset), "files": len(dataset.files), "world": dist.world}, f, indent=2)
    log_path = os.path.join(outdir, "log.csv")
    log_file = open(log_path, "a", newline="") if dist.main else None
    columns = ["step", "seconds", "total", *WEIGHT_NAMES, "d_image", "d_video", "motion"]
    log = csv.DictWriter(log_file, columns, extrasaction="ignore") if log_file else None
    if log and (state is None or os.path.getsize(log_path) == 0):
        log.writeheader()
    mhash = model_hash(trainer.G)

    def checkpoint():
        if dist.main:
            save_steering(trainer.model, steering_path, model_hash=mhash,
                          extra={"trained_by": "sgvis train-encoder", "objective": cfg["objective"],
                                 "steps": str(trainer.step_count)}, dtype=torch.float16)
            from stylegan.atomic import write_atomically
            write_atomically(state_path, lambda tmp: torch.save(trainer.state_dict(), tmp))

    total_steps = int(cfg["steps"])
    previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    bar = tqdm(total=total_steps, initial=trainer.step_count, unit="step", desc="train-encoder",
               dynamic_ncols=True, disable=None if progress and dist.main else True)
    started = time.perf_counter()
    previews: list[str] = []

    def preview(step):
        previews[:] = _write_previews(cfg, outdir, model_path, steering_path, dataset.files, step)

    try:
        last = run_steps(trainer, loader, total_steps, bar=bar, checkpoint=checkpoint,
                         checkpoint_every=int(cfg["checkpoint_every"]), log=log, log_file=log_file,
                         preview=preview if dist.main else None, preview_every=int(cfg["preview_every"]),
                         postfix=lambda last: {k: f"{last[k]:.3f}" for k in ("total", "onset_sync", "clip_av",
                                                                             "motion") if k in last})
    finally:
        bar.close()
        signal.signal(signal.SIGTERM, previous)
        if log_file:
            log_file.close()
        dist.close()
    return {"steps": trainer.step_count, "steering": steering_path, "state": state_path, "log": log_path,
            "previews": previews, "last": last, "clips": len(dataset), "seconds": time.perf_counter() - started}


def training_look(setting, builtin_model: bool):
    """train_encoder.look: "auto" gives the Look render applies to this model by default, "off" None."""
    if setting in (None, "off", False):
        return None
    if setting != "auto":
        raise UserError(f"train_encoder.look must be auto or off, got {setting!r}")
    from sgvis.backends.look import Look
    look = Look(None, builtin_model=builtin_model)
    return look if look.active else None


def _init_steering(model, path: str) -> None:
    """Start from the weights of an existing steering checkpoint (same architecture), e.g. one trained for an
    earlier version of the model: the sound encoder's features carry over, and the steps needed drop."""
    import warnings

    from sgvis.steer.learned import load_steering
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")               # trained for another model: that is the point here
        init = load_steering(path)
    differ = sorted(k for k in model.config() if init.config().get(k) != model.config()[k])
    if differ and differ != ["onset_input"]:
        raise UserError(f"--init {path}: that checkpoint's architecture differs from this run's "
                        f"({', '.join(differ)}); train from scratch or match the settings")
    # A checkpoint without the onset input starts a run with one: its onset vectors start at zero.
    missing, unexpected = model.load_state_dict(init.state_dict(), strict=False)
    if unexpected or any(not k.startswith("onset_in.") for k in missing):
        raise UserError(f"--init {path}: its weights do not fit this run's model")


def cmd_train_encoder(args) -> int:
    from sgvis.config import load_config
    cfg = load_config(config_path=args.config, overrides=args.set or [],
                      defaults={"train_encoder": copy.deepcopy(TRAIN_DEFAULTS)})["train_encoder"]
    for key in ("objective", "steps", "batch", "clip_frames", "fps", "lr", "seed", "labels", "init"):
        value = getattr(args, key.replace("-", "_"), None)
        if value is not None:
            cfg[key] = value
    if args.clip_path:
        cfg["clip"]["path"] = args.clip_path
    if args.audio_clip:
        cfg["audio_clip"] = args.audio_clip
    try:
        summary = train_encoder(args.model, args.data, args.out, cfg, args.device, resume=args.resume,
                                overwrite=args.overwrite)
    except FloatingPointError as e:
        raise UserError(f"{e}; lower train_encoder.lr or resume from the last checkpoint") from None
    if os.environ.get("RANK", "0") == "0":
        print(f"wrote {summary['steering']} after {summary['steps']} steps "
              f"(render with: sgvis render TRACK --steer learned --steering {summary['steering']})")
    return 0
