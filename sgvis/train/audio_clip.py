"""`sgvis train-audio-clip`: train an audio encoder into CLIP's embedding space (sgvis.train.clip_models.AudioClipEncoder)
against frozen CLIP towers, for the CLIP objective of learned steering (L_CLIP(a<->v) in "Sound-guided Semantic
Video Generation") and for CLIP-guided rendering.

    sgvis train-audio-clip --data clips/ --out audio-clip.safetensors --clip-path models/clip-vit-b32
    sgvis train-audio-clip --data clips/ --labels labels.csv --out audio-clip.safetensors --config my.yaml
    torchrun --nproc_per_node 4 -m sgvis train-audio-clip --data clips/ --out audio-clip.safetensors ...

Each step draws B clips from the data (sgvis.data.clip_data.ClipSet: videos with sound, audio files), takes one
random frame t of each clip, and encodes the mel window ending at frame t.  Losses (symmetric InfoNCE, CLIP
style, with the encoder's learnable temperature):
  frame  audio <-> CLIP image embedding of video frame t of the same clip (clips that have video)
  text   audio <-> CLIP text embedding of the clip's label through the prompt template (when --labels or class
         folders give labels); clips sharing a label all count as positives
CLIP embeddings of the label texts are computed once.  Under torchrun each process contrasts its own share of
the batch (negatives are local) and gradients are averaged.

CLIP comes from --clip-path DIR (a local HF-format directory), --clip-name NAME [--clip-cache DIR] (the local HF
cache) or a `clip:` section of a --config YAML file (see sgvis.train.clip_models; a `train_encoder: {clip: ...}`
section is read too, so one file serves both trainers).  A `train_audio_clip:` section may set any of
TRAIN_DEFAULTS; command-line flags win.

Outputs, for --out PATH.safetensors: PATH.safetensors (the encoder, written periodically and at the end; load
with sgvis.train.clip_models.load_audio_encoder), PATH.state.pt (encoder, optimiser, step and random state for
--resume) and PATH.log.csv (one row per step).  Every file is replaced atomically, so an interrupted run
(Ctrl-C, SIGTERM) leaves the last complete checkpoint, saved again at the interruption.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import torch

from sgvis.errors import UserError, first_line
from sgvis.train.settings import AUDIO_CLIP_DEFAULTS as TRAIN_DEFAULTS
from sgvis.train.state import load_training_state as _load_state, raise_keyboard_interrupt

__all__ = ["TRAIN_DEFAULTS", "AudioClipTrainer", "train_audio_clip", "output_paths"]

STATE_TAG = "sgvis-audio-clip-training-state"
STATE_VERSION = 1
LOG_COLUMNS = ["step", "seconds", "loss", "loss_frame", "loss_text", "acc_frame", "acc_text", "logit_scale", "lr"]


def output_paths(out: str) -> dict:
    """The files of a run for --out PATH(.safetensors): encoder, state and log."""
    base = out[: -len(".safetensors")] if out.endswith(".safetensors") else out
    return {"encoder": out, "state": base + ".state.pt", "log": base + ".log.csv"}


# -- training ---------------------------------------------------------------------------------------------
class AudioClipTrainer:
    """The encoder, its optimiser and one contrastive step against frozen CLIP towers."""

    def __init__(self, encoder, clip, cfg: dict, device: torch.device, text_emb: torch.Tensor | None = None,
                 dist=None):
        self.enc = encoder.to(device).train()
        self.clip = clip
        self.cfg = cfg
        self.device = device
        self.dist = dist
        self.text_emb = None if text_emb is None else text_emb.to(device, torch.float32)
        self.opt = torch.optim.AdamW(self.enc.parameters(), lr=float(cfg["lr"]),
                                     weight_decay=float(cfg["weight_decay"]))
        self.step_count = 0
        self.seconds = 0.0
        self.gen = torch.Generator().manual_seed(int(cfg["seed"]) * 7919 + (dist.rank if dist else 0))
        self.amp_dtype = None
        amp = str(cfg.get("amp") or "off").lower()
        if device.type == "cuda" and amp != "off":
            if amp == "auto":
                amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            self.amp_dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        self.scaler = None
        if self.amp_dtype == torch.float16:
            scaler_cls = getattr(torch.amp, "GradScaler", None)
            self.scaler = scaler_cls("cuda") if scaler_cls is not None else torch.cuda.amp.GradScaler()

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast("cuda", dtype=self.amp_dtype)

    @torch.no_grad()
    def calibrate_inputs(self, mels: torch.Tensor) -> None:
        """Input standardisation (in_mean / in_std) from mel windows of this data."""
        from sgvis.steer.learned import calibrate_input_standardisation
        calibrate_input_standardisation(self.enc, mels)

    @torch.no_grad()
    def pick(self, batch: dict, t: torch.Tensor | None = None) -> dict:
        """One frame per clip: mel window [B, n_mels, W], frame [B, 3, S, S] uint8 (or None), masks, labels."""
        mels = batch["mels"]
        B, T = mels.shape[:2]
        if t is None:
            t = torch.randint(T, (B,), generator=self.gen)
        rows = torch.arange(B)
        out = {"mel": mels[rows, t].to(self.device, torch.float32), "frame": None, "frame_mask": None,
               "labels": None}
        frames = batch.get("frames")
        has_video = batch.get("has_video")
        if frames is not None and frames.ndim == 5 and frames.shape[-1] > 0 and has_video is not None:
            mask = torch.as_tensor(has_video, dtype=torch.bool).view(-1)
            if bool(mask.any()):
                out["frame"] = frames[rows, t].to(self.device)
                out["frame_mask"] = mask.to(self.device)
        idx = batch.get("label_index")
        if idx is not None and self.text_emb is not None:
            idx = torch.as_tensor(idx, dtype=torch.long).view(-1)
            out["labels"] = idx.to(self.device)
        return out

    def losses(self, picked: dict) -> dict:
        """Loss terms for picked samples: {'loss': tensor (differentiable) or None, float metrics...}."""
        from sgvis.train.clip_models import info_nce
        cfg = self.cfg
        with self._autocast():
            audio = self.enc(picked["mel"])
        audio = audio.float()
        scale_log = self.enc.logit_scale
        parts, metrics = [], {}
        fw, tw = float(cfg["frame_weight"]), float(cfg["text_weight"])
        if fw > 0 and picked["frame"] is not None:
            m = picked["frame_mask"]
            if int(m.sum()) >= 2:
                with torch.no_grad(), self._autocast():
                    img = self.clip.encode_image(picked["frame"][m].float() / 127.5 - 1).float()
                a = audio[m]
                lf = info_nce(a, img, scale_log)
                parts.append(fw * lf)
                metrics["loss_frame"] = float(lf.detach())
                with torch.no_grad():
                    sim = a.detach() @ img.t()
                    metrics["acc_frame"] = float((sim.argmax(1) == torch.arange(len(a), device=a.device))
                                                 .float().mean())
        if tw > 0 and picked["labels"] is not None:
            idx = picked["labels"]
            m = idx >= 0
            if int(m.sum()) >= 2:
                a, lab = audio[m], idx[m]
                lt = info_nce(a, self.text_emb[lab], scale_log, labels=lab)
                parts.append(tw * lt)
                metrics["loss_text"] = float(lt.detach())
                with torch.no_grad():
                    metrics["acc_text"] = float(((a.detach() @ self.text_emb.t()).argmax(1) == lab).float().mean())
        loss = sum(parts) if parts else None
        metrics["loss"] = float(loss.detach()) if loss is not None else math.nan
        metrics["logit_scale"] = float(self.enc.scale().detach())
        return {"loss_tensor": loss, **metrics}

    def step(self, batch: dict) -> dict:
        """One optimiser step; returns float metrics (NaN where a term had no data in this batch)."""
        self.enc.train()
        self.opt.zero_grad(set_to_none=True)
        out = self.losses(self.pick(batch))
        loss = out.pop("loss_tensor")
        synced = self.dist is not None and self.dist.enabled
        bad = loss is not None and not bool(torch.isfinite(loss))
        if synced:                                    # every process stops together, none waits forever
            bad = self.dist.sum_floats([float(bad)], self.device)[0] > 0
        if bad:
            raise FloatingPointError(f"the loss became {out['loss']} at step {self.step_count + 1}")
        if loss is not None:
            (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.dist is not None:
            self.dist.average_gradients(self.enc)
        if loss is not None or synced:                # every process steps, so the replicas stay identical
            if self.scaler:
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                self.opt.step()
        self.step_count += 1
        out["lr"] = self.opt.param_groups[0]["lr"]
        return out

    @torch.no_grad()
    def evaluate(self, batch: dict, t: torch.Tensor | None = None) -> dict:
        """The loss terms on `batch` without training (frame t per clip; default 0)."""
        was = self.enc.training
        self.enc.eval()
        try:
            B = batch["mels"].shape[0]
            out = self.losses(self.pick(batch, torch.zeros(B, dtype=torch.long) if t is None else t))
        finally:
            self.enc.train(was)
        out.pop("loss_tensor")
        return out

    def state_dict(self) -> dict:
        return {"format": STATE_TAG, "version": STATE_VERSION, "encoder": self.enc.state_dict(),
                "encoder_config": json.dumps(self.enc.config()), "opt": self.opt.state_dict(),
                "step": self.step_count, "seconds": self.seconds, "rng": torch.get_rng_state(),
                "gen": self.gen.get_state(), "options": json.dumps(self.cfg, default=str),
                "clip": getattr(self.clip, "source", "")}

    def load_state_dict(self, state: dict) -> None:
        self.enc.load_state_dict(state["encoder"])
        lr = self.opt.param_groups[0]["lr"]
        wd = self.opt.param_groups[0]["weight_decay"]
        self.opt.load_state_dict(state["opt"])
        for g in self.opt.param_groups:              # this invocation's options rule
            g["lr"], g["weight_decay"] = lr, wd
        self.step_count = int(state["step"])
        self.seconds = float(state.get("seconds", 0.0))
        if "gen" in state:
            self.gen.set_state(state["gen"])
        if "rng" in state and (self.dist is None or self.dist.world == 1):
            torch.set_rng_state(state["rng"])


def load_training_state(path: str) -> dict:
    return _load_state(path, STATE_TAG, STATE_VERSION, "train-audio-clip")


def _validate(cfg: dict) -> None:
    def need(key, ok, what):
        if not ok:
            raise UserError(f"--{key.replace('_', '-')} must be {what}, got {cfg[key]!r}")
    for key in ("steps", "batch", "clip_frames", "save_every"):
        need(key, isinstance(cfg[key], int) and cfg[key] >= 1, "an integer >= 1")
    for key in ("lr", "fps"):
        need(key, isinstance(cfg[key], (int, float)) and cfg[key] > 0, "> 0")
    for key in ("weight_decay", "frame_weight", "text_weight"):
        need(key, isinstance(cfg[key], (int, float)) and cfg[key] >= 0, ">= 0")
    if cfg["frame_weight"] == 0 and cfg["text_weight"] == 0:
        raise UserError("--frame-weight and --text-weight are both 0: nothing to train")
    need("seed", isinstance(cfg["seed"], int), "an integer")
    ms = cfg.get("max_seconds")
    if ms is not None and not (isinstance(ms, (int, float)) and ms > 0):
        raise UserError(f"train_audio_clip.max_seconds must be a number of seconds > 0, got {ms!r}")
    if cfg["workers"] is not None:
        need("workers", isinstance(cfg["workers"], int) and cfg["workers"] >= 0, "an integer >= 0")
    if str(cfg["amp"]).lower() not in ("auto", "bf16", "fp16", "off"):
        raise UserError(f"--amp must be auto, bf16, fp16 or off, got {cfg['amp']!r}")
    if not isinstance(cfg["prompt"], str) or "{label}" not in cfg["prompt"]:
        raise UserError(f"--prompt must be a text containing {{label}}, got {cfg['prompt']!r}")
    try:
        cfg["prompt"].format(label="x")
    except (KeyError, IndexError, ValueError):
        raise UserError(f"--prompt {cfg['prompt']!r}: only {{label}} may appear in braces") from None
    ch = cfg["channels"]
    if not (isinstance(ch, (list, tuple)) and ch and all(isinstance(c, int) and c >= 1 for c in ch)):
        raise UserError(f"train_audio_clip.channels must be a list of positive integers, got {ch!r}")
    need("head_hidden", isinstance(cfg["head_hidden"], int) and cfg["head_hidden"] >= 1, "an integer >= 1")


def train_audio_clip(data: str, out: str, clip_cfg: dict, cfg: dict, labels: str | None = None,
                     device_name: str = "auto", resume: str | None = None, overwrite: bool = False,
                     progress: bool = True) -> dict:
    """Train and write the encoder to `out`; returns a summary.  `resume`: a state path ('' = the one beside
    `out`).  Raises UserError for bad input, before anything is written."""
    from sgvis.outputs.files import check_output_path
    from sgvis.train.common import Dist, resolve_device

    cfg = dict(cfg)
    _validate(cfg)
    paths = output_paths(out)
    resuming = resume is not None
    check_output_path(out, overwrite or resuming)
    state_path = resume or paths["state"]
    if not resuming and os.path.exists(paths["state"]) and not overwrite:
        raise UserError(f"{paths['state']} holds an earlier run; pass --resume to continue it or --overwrite to "
                        f"start again")
    if not os.path.isdir(data):
        raise UserError(f"--data {data}: not a folder (give a folder of video files with sound and/or audio "
                        f"files)")
    if labels is not None and not os.path.isfile(labels):
        raise UserError(f"--labels {labels}: no such file")
    state = load_training_state(state_path) if resuming else None

    dist = Dist()
    if cfg["batch"] % dist.world:
        raise UserError(f"--batch {cfg['batch']} must be a multiple of the number of processes ({dist.world})")
    device = resolve_device(device_name, dist)
    dist.init(device.type)
    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        return _train(data, out, paths, state_path, clip_cfg, cfg, labels, device, dist, state, progress)
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        dist.close()


def _open_data(data: str, cfg: dict, frame_size: int | None, mel, labels: str | None, progress: bool):
    from sgvis.data.clip_data import ClipSet, ClipSetConfig
    try:
        return ClipSet(data, ClipSetConfig(fps=float(cfg["fps"]), clip_frames=int(cfg["clip_frames"]),
                                           frame_size=frame_size, max_seconds=cfg.get("max_seconds")),
                       mel=mel, labels=labels, progress=progress)
    except UserError:
        raise
    except (OSError, ValueError, RuntimeError) as e:
        raise UserError(f"--data {data}: {first_line(e, 200)}") from None


def _train(data, out, paths, state_path, clip_cfg, cfg, labels, device, dist, state, progress) -> dict:
    from tqdm.auto import tqdm

    from sgvis.data.clip_data import collate_clips
    from sgvis.train.clip_models import AudioClipEncoder, load_clip, save_audio_encoder
    from sgvis.features.analysis import MelConfig
    from sgvis.train.common import InfiniteSampler
    from stylegan.atomic import write_atomically

    clip = load_clip(clip_cfg, device)
    mel = MelConfig()
    if state is not None:
        try:
            enc_cfg = json.loads(state["encoder_config"])
            embed_dim, mel = int(enc_cfg["embed_dim"]), MelConfig(**enc_cfg["mel_config"])
            channels, head_hidden = [int(c) for c in enc_cfg["channels"]], int(enc_cfg["head_hidden"])
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"--resume {state_path}: damaged training state ({first_line(e, 200)})") from None
        if embed_dim != clip.embed_dim:
            raise UserError(f"--resume {state_path}: that run trained for CLIP embeddings of size {embed_dim}; the "
                            f"CLIP model given has {clip.embed_dim}")
        if state.get("clip") and state["clip"] != clip.source:
            warnings.warn(f"--resume: that run trained against CLIP {state['clip']}; continuing with {clip.source}",
                          stacklevel=2)
    else:
        channels, head_hidden = cfg["channels"], cfg["head_hidden"]
    frame_size = clip.image_size if cfg["frame_weight"] > 0 else None
    dataset = _open_data(data, cfg, frame_size, mel, labels, progress and dist.main)
    label_names = list(getattr(dataset, "labels", None) or [])
    text_emb = None
    if cfg["text_weight"] > 0 and label_names:
        texts = [cfg["prompt"].format(label=name) for name in label_names]
        with torch.no_grad():
            text_emb = torch.cat([clip.encode_text(texts[i: i + 256]) for i in range(0, len(texts), 256)])
    if text_emb is None and not (cfg["frame_weight"] > 0 and dataset.has_video):
        why = "has no labels and --frame-weight is 0" if dataset.has_video or cfg["frame_weight"] == 0 else \
            "has neither video frames nor labels"
        raise UserError(f"--data {data} {why}: nothing to learn from (give --labels or class folders, or video "
                        f"files with sound)")

    torch.manual_seed(int(cfg["seed"]) * 1000 + dist.rank)
    encoder = AudioClipEncoder(clip.embed_dim, mel, channels, head_hidden)
    trainer = AudioClipTrainer(encoder, clip, cfg, device, text_emb, dist)
    if state is not None:
        try:
            trainer.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError) as e:
            raise UserError(f"--resume {state_path}: does not fit this run ({first_line(e, 200)})") from None

    batch_per_rank = cfg["batch"] // dist.world
    workers = cfg["workers"] if cfg["workers"] is not None else (2 if device.type == "cuda" else 0)
    sampler = InfiniteSampler(len(dataset), int(cfg["seed"]), dist.rank, dist.world, trainer.step_count)
    loader = iter(torch.utils.data.DataLoader(
        dataset, batch_size=batch_per_rank, sampler=sampler, collate_fn=collate_clips, num_workers=workers,
        pin_memory=device.type == "cuda", drop_last=True, persistent_workers=workers > 0))

    def next_batch() -> dict:
        try:
            return next(loader)
        except UserError:
            raise
        except (OSError, ValueError, RuntimeError) as e:
            raise UserError(f"--data {data}: cannot read a clip ({first_line(e, 200)})") from None

    if state is None:
        n_cal = max(1, min(4, len(dataset) // max(batch_per_rank, 1)))
        first = [next_batch() for _ in range(n_cal)]
        trainer.calibrate_inputs(torch.cat([b["mels"] for b in first]))
        dist.broadcast_module(trainer.enc)
        pending = first
    else:
        pending = []

    extra = {"trained_by": "sgvis train-audio-clip", "clip": clip.source, "prompt": cfg["prompt"],
             "labels": json.dumps(label_names[:1000])}
    log_file = log = None
    fresh_log = state is None or not os.path.exists(paths["log"])
    written = []                          # checkpoints written by this invocation

    def log_row(row: dict) -> None:       # the log is opened at the first row: no output before a step succeeded
        nonlocal log_file, log
        if not dist.main:
            return
        if log_file is None:
            log_file = open(paths["log"], "w" if fresh_log else "a", newline="")
            log = csv.DictWriter(log_file, LOG_COLUMNS, extrasaction="ignore")
            if fresh_log:
                log.writeheader()
        log.writerow(row)
        log_file.flush()

    def checkpoint() -> None:
        written.append(trainer.step_count)
        if dist.main:
            save_audio_encoder(trainer.enc, out, extra=dict(extra, steps=str(trainer.step_count)))
            write_atomically(paths["state"], lambda tmp: torch.save(trainer.state_dict(), tmp), suffix=".pt.tmp")

    total = int(cfg["steps"])
    start_step = trainer.step_count
    bar = tqdm(total=total, initial=min(start_step, total), unit="step", desc="train-audio-clip",
               dynamic_ncols=True, disable=None if progress and dist.main else True)
    started = time.perf_counter()
    seconds_before = trainer.seconds
    last: dict = {}
    try:
        while trainer.step_count < total:
            batch = pending.pop(0) if pending else next_batch()
            last = trainer.step(batch)
            trainer.seconds = seconds_before + time.perf_counter() - started
            if dist.enabled:
                keys = [k for k in ("loss", "loss_frame", "loss_text", "acc_frame", "acc_text")]
                vals = dist.sum_floats([last.get(k, math.nan) for k in keys], device)
                last.update({k: v / dist.world for k, v in zip(keys, vals)})
            step = trainer.step_count
            log_row({"step": step, "seconds": round(trainer.seconds, 3),
                     **{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in last.items()}})
            bar.update(1)
            bar.set_postfix_str(", ".join(f"{k} {last[k]:.3f}" for k in ("loss", "acc_frame", "acc_text")
                                          if k in last and not math.isnan(last[k])), refresh=False)
            if step % int(cfg["save_every"]) == 0 or step == total:
                checkpoint()
                dist.barrier()
    except KeyboardInterrupt:
        if trainer.step_count > start_step:
            checkpoint()
            if dist.main:
                print(f"\ninterrupted: saved {out} and {paths['state']} at step {trainer.step_count}; continue with "
                      f"--resume", file=sys.stderr)
        raise
    except BaseException as e:
        if log_file is not None and fresh_log and not written:   # a failed fresh run leaves no output
            log_file.close()
            log_file = None
            if os.path.exists(paths["log"]):
                os.unlink(paths["log"])
        if isinstance(e, FloatingPointError):
            raise UserError(f"{e}; lower --lr, or --resume from the last checkpoint with a lower --lr") from None
        raise
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
    if trainer.step_count == start_step and dist.main and not os.path.exists(out):
        checkpoint()
    return {"steps": trainer.step_count, "encoder": out, "state": paths["state"],
            "log": paths["log"], "last": last, "clips": len(dataset), "labels": label_names,
            "seconds": time.perf_counter() - started, "trainer": trainer}


# -- CLI ---------------------------------------------------------------------------------------------------
def _config_sections(path: str | None) -> tuple[dict, dict]:
    """(clip section, train_audio_clip section) of a --config YAML file."""
    if not path:
        return {}, {}
    from sgvis.config import read_yaml
    if not os.path.isfile(path):
        raise UserError(f"--config {path}: no such file")
    data = read_yaml(Path(path))
    clip = data.get("clip")
    if clip is None and isinstance(data.get("train_encoder"), dict):
        clip = data["train_encoder"].get("clip")
    clip = clip or {}
    if not isinstance(clip, dict):
        raise UserError(f"--config {path}: the clip section must be a mapping (path: DIR | name: ID | config: ...)")
    train = data.get("train_audio_clip") or {}
    if not isinstance(train, dict):
        raise UserError(f"--config {path}: the train_audio_clip section must be a mapping")
    unknown = sorted(set(train) - set(TRAIN_DEFAULTS) - {"labels"})
    if unknown:
        raise UserError(f"--config {path}: unknown setting train_audio_clip.{unknown[0]} (known: "
                        f"{', '.join(sorted(TRAIN_DEFAULTS))}, labels)")
    return dict(clip), dict(train)


def cmd_train_audio_clip(args) -> int:
    clip_cfg, train = _config_sections(args.config)
    cfg = copy.deepcopy(TRAIN_DEFAULTS)
    labels = train.pop("labels", None)
    cfg.update(train)
    for key in TRAIN_DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    if clip_cfg.get("prompt") and args.prompt is None and "prompt" not in train:
        cfg["prompt"] = clip_cfg["prompt"]
    if args.clip_path or args.clip_name:
        if args.clip_path and args.clip_name:
            raise UserError("give --clip-path or --clip-name, not both")
        clip_cfg = {k: v for k, v in clip_cfg.items() if k not in ("path", "name", "config", "cache_dir")}
        if args.clip_path:
            clip_cfg["path"] = args.clip_path
        else:
            clip_cfg["name"] = args.clip_name
            if args.clip_cache:
                clip_cfg["cache_dir"] = args.clip_cache
    elif args.clip_cache:
        clip_cfg["cache_dir"] = args.clip_cache
    if not any(clip_cfg.get(k) for k in ("path", "name", "config")):
        raise UserError("train-audio-clip needs CLIP: give --clip-path DIR (a local HF-format CLIP folder), "
                        "--clip-name NAME (in the local HF cache) or a --config file with a clip: section")
    summary = train_audio_clip(args.data, args.out, clip_cfg, cfg, labels=args.labels or labels,
                               device_name=args.device, resume=args.resume, overwrite=args.overwrite,
                               progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        loss = summary["last"].get("loss", math.nan)
        print(f"wrote {summary['encoder']} after {summary['steps']} steps (loss {loss:.4f}); state "
              f"{summary['state']}, log {summary['log']}")
    return 0
