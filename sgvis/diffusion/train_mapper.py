"""`sgvis train-mapper`: train a TempoTokens mapper (audio features -> six pseudo-words per frame) for a
text-to-video model, with the model, BEATs and the VAE frozen, as in the TempoTokens paper.

    sgvis train-mapper --t2v zeroscope --beats BEATs.pt --data videos/ --out runs/mapper [--init learned_embeds.pth]

Data: a folder of videos with sound, cut into windows of `window_seconds` (2 s: `frames` = 24 frames at 12 fps),
each window's frames centre-cropped to a square and resized to `size`, its sound mixed to mono at 16 kHz.

A step, for a batch of windows: the frames through the VAE encoder (a sample of its latent distribution, scaled by
its scaling factor), the sound through BEATs (`layer_features`) and the mapper, the mapper's tokens into the text
encoder in place of the placeholder words (one prompt per frame), noise at a random training timestep added with
the folder's own training scheduler (DDPM), the UNet's prediction per frame; loss = MSE against the scheduler's
target (the noise, or the velocity for v-prediction) + `temporal_l1` (0.01) x mean |temporal tokens|. Only the
mapper learns (AdamW, gradient norm clipped). On CUDA the frozen models run in bf16 autocast.

The run folder: `mapper.pth` (a state_dict in TempoTokens' layout: `sgvis render --backend tempotokens --mapper`
loads it), `training-state.pt` (`--resume`), `log.csv`, `options.json`, and `previews/step-NNNNNN.mp4` (the first
data file's first seconds rendered with the mapper so far, every `preview_every` steps). Ctrl-C and SIGTERM write
a checkpoint first. Under `torchrun` every process takes batch / world windows and the mapper's gradients are
averaged.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import time

import numpy as np
import torch

from sgvis.errors import UserError

__all__ = ["TRAIN_DEFAULTS", "MapperClips", "MapperTrainer", "train_mapper", "register_cli", "cmd_train_mapper"]

STATE_TAG = "sgvis-train-mapper"
STATE_VERSION = 1
SAMPLE_RATE = 16000

TRAIN_DEFAULTS = {
    "steps": 1000,
    "batch": 1,
    "lr": 1.0e-5,               # TempoTokens' embedder learning rate
    "weight_decay": 1.0e-2,
    "max_grad_norm": 1.0,
    "temporal_l1": 0.01,        # weight of mean |temporal tokens| (the paper's regulariser)
    "size": 384,                # frames are centre-cropped squares of this side (a multiple of the VAE's factor)
    "frames": 24,               # frames per window (the mapper's frame tokens)
    "window_seconds": 2.0,
    "prompt": None,             # words after the six audio tokens, as `render --prompt` adds them
    "seed": 0,
    "checkpoint_every": 100,
    "preview_every": 0,         # 0: no previews
    "preview_seconds": 4.0,
    "preview_steps": 25,
}


# -- data -------------------------------------------------------------------------------------------------------
def _scan_videos(root: str) -> list[str]:
    from sgvis.audio.decode import VIDEO_EXTS
    if not os.path.isdir(root):
        raise UserError(f"--data {root}: not a folder (give a folder of videos with sound)")
    found = []
    for d, dirs, names in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        found += [os.path.join(d, n) for n in sorted(names)
                  if not n.startswith(".") and os.path.splitext(n)[1].lower() in VIDEO_EXTS]
    return found


class MapperClips(torch.utils.data.Dataset):
    """Windows of videos with sound: item -> {"frames": uint8 [F, 3, size, size], "audio": float32 [S] at 16 kHz}.
    A file without a picture or without sound, or too short for one window, is skipped (counted in `skipped`)."""

    def __init__(self, root: str, frames: int = 24, window_seconds: float = 2.0, size: int = 384):
        from sgvis.audio.decode import probe
        self.frames, self.window, self.size = int(frames), float(window_seconds), int(size)
        self.fps = self.frames / self.window
        self.items: list[tuple[str, float]] = []
        self.files: list[str] = []
        self.skipped = 0
        for path in _scan_videos(root):
            try:
                import av
                with av.open(path) as c:
                    has_both = bool(c.streams.video) and bool(c.streams.audio)
                duration = probe(path).duration if has_both else 0.0
            except (OSError, UserError, ValueError) as e:    # unreadable or damaged: skipped, counted
                del e
                duration = 0.0
            n = int(duration // self.window)
            if n < 1:
                self.skipped += 1
                continue
            self.files.append(path)
            self.items += [(path, k * self.window) for k in range(n)]
        if not self.items:
            raise UserError(f"--data {root}: no video with sound of at least {self.window:g}s")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        from sgvis.audio.decode import decode_blocks
        from sgvis.data.clip_data import video_frames
        path, start = self.items[index]
        samples = int(round(self.window * SAMPLE_RATE))
        blocks = [b[0] for b in decode_blocks(path, SAMPLE_RATE, "mono", start, start + self.window)]
        audio = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
        audio = np.pad(audio[:samples], (0, max(0, samples - len(audio)))).astype(np.float32)
        pictures = video_frames(path, self.frames, self.fps, self.size, start=start)
        if pictures is None:
            pictures = np.zeros((self.frames, 3, self.size, self.size), np.uint8)
        return {"frames": torch.from_numpy(pictures), "audio": torch.from_numpy(audio)}


# -- the trainer ------------------------------------------------------------------------------------------------
class MapperTrainer:
    """One optimisation step of the mapper against the frozen text-to-video model (see the module docstring)."""

    def __init__(self, t2v: dict, train_scheduler, beats, mapper, cfg: dict, device, dist=None):
        from sgvis.diffusion.t2v import TextConditioner
        self.unet, self.vae, self.scheduler = t2v["unet"], t2v["vae"], train_scheduler
        self.beats, self.mapper, self.cfg, self.device = beats, mapper, cfg, device
        self.dist = dist
        self.text = TextConditioner(t2v["tokenizer"], t2v["text_encoder"], cfg.get("prompt"))
        for module in (self.unet, self.vae, t2v["text_encoder"], self.beats):
            module.requires_grad_(False).eval()
        self.mapper.train().requires_grad_(True)
        self.optimizer = torch.optim.AdamW(self.mapper.parameters(), lr=float(cfg["lr"]),
                                           weight_decay=float(cfg["weight_decay"]))
        self.step_count = 0
        self.autocast = device.type == "cuda"

    def _latents(self, frames: torch.Tensor) -> torch.Tensor:
        b, f = frames.shape[:2]
        pixels = frames.to(self.device).flatten(0, 1).float() / 127.5 - 1.0
        with torch.no_grad():
            latents = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.sample()
        latents = latents.float() * self.vae.config.scaling_factor
        return latents.view(b, f, *latents.shape[1:]).transpose(1, 2)            # [B, C, F, h, w]

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        import torch.nn.functional as F
        from sgvis.diffusion.t2v import unet_per_frame
        latents = self._latents(batch["frames"])
        b, f = latents.shape[0], latents.shape[2]
        with torch.no_grad():
            features = self.beats.layer_features(batch["audio"].to(self.device, torch.float32))
        tokens = self.mapper(features)
        states = torch.cat([self.text.embed(tuple(None if t is None else t[i] for t in tokens))
                            for i in range(b)])                                   # [B * F, 77, D]
        noise = torch.randn_like(latents)
        t = torch.randint(0, int(self.scheduler.config.num_train_timesteps), (b,), device=latents.device)
        noisy = self.scheduler.add_noise(latents, noise, t)
        kind = self.scheduler.config.prediction_type
        if kind == "epsilon":
            target = noise
        elif kind == "v_prediction":
            target = self.scheduler.get_velocity(latents, noise, t)
        else:
            raise UserError(f"the text-to-video scheduler predicts {kind!r}; train-mapper knows epsilon and "
                            f"v_prediction")
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            pred = unet_per_frame(self.unet, noisy.to(self.unet.dtype), t, states.to(self.unet.dtype))
        mse = F.mse_loss(pred.float(), target.float())
        l1 = tokens[0].abs().mean()
        total = mse + float(self.cfg["temporal_l1"]) * l1
        return total, {"total": float(total.detach()), "mse": float(mse.detach()), "temporal_l1": float(l1.detach()),
                       "frames": f}

    def step(self, batch: dict) -> dict:
        self.optimizer.zero_grad(set_to_none=True)
        total, logs = self.loss(batch)
        total.backward()
        if self.dist is not None and self.dist.world > 1:
            self.dist.average_gradients(self.mapper)
        logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.mapper.parameters(),
                                                                 float(self.cfg["max_grad_norm"])))
        self.optimizer.step()
        self.step_count += 1
        return logs

    def state_dict(self) -> dict:
        return {"format": STATE_TAG, "version": STATE_VERSION, "step": self.step_count,
                "mapper": self.mapper.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.mapper.load_state_dict(state["mapper"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = int(state["step"])
        torch.set_rng_state(state["rng"])


def new_mapper(beats, text_width: int, frames: int, hidden: int | None = None):
    """A freshly initialised TempoTokens mapper from BEATs' feature width to the text encoder's width (hidden:
    TempoTokens' 2304 for its 9216-wide BEATs features, i.e. a quarter of the input, by default)."""
    from sgvis.diffusion.mapper import TempoMapper
    hidden = int(hidden or max(16, beats.output_dim // 4))
    return TempoMapper(beats.output_dim, hidden, text_width, frames=frames)


def _check_config(cfg: dict) -> dict:
    out = dict(TRAIN_DEFAULTS)
    unknown = sorted(set(cfg) - set(TRAIN_DEFAULTS))
    if unknown:
        raise UserError(f"train-mapper: unknown setting {unknown[0]!r} (settings: {', '.join(TRAIN_DEFAULTS)})")
    out.update({k: v for k, v in cfg.items() if v is not None})
    for key in ("steps", "batch", "size", "frames", "checkpoint_every"):
        if int(out[key]) < 1:
            raise UserError(f"train-mapper: {key} must be at least 1, got {out[key]}")
    for key in ("lr", "window_seconds"):
        if not float(out[key]) > 0:
            raise UserError(f"train-mapper: {key} must be positive, got {out[key]}")
    return out


def train_mapper(t2v_path: str, beats_path: str, data: str, outdir: str, cfg: dict | None = None,
                 init: str | None = None, device_name: str = "auto", resume: bool = False,
                 overwrite: bool = False, progress: bool = True) -> dict:
    """Train and write mapper.pth into `outdir`; returns a summary."""
    from tqdm.auto import tqdm

    from sgvis.diffusion import load_beats, load_mapper
    from sgvis.diffusion.t2v import load_t2v
    from sgvis.train.common import InfiniteSampler, run_steps, start_processes
    from sgvis.train.state import check_outdir, raise_keyboard_interrupt, resumable_state
    from stylegan.atomic import write_atomically

    cfg = _check_config(cfg or {})
    state_path = os.path.join(outdir, "training-state.pt")
    mapper_path = os.path.join(outdir, "mapper.pth")
    state = resumable_state(outdir, resume, overwrite, STATE_TAG, STATE_VERSION, "train-mapper")
    dist, device = start_processes(device_name, cfg["batch"], "--batch")
    created = not os.path.exists(outdir)
    check_outdir(outdir, flag="--out")
    try:
        dataset = MapperClips(data, frames=int(cfg["frames"]), window_seconds=float(cfg["window_seconds"]),
                              size=int(cfg["size"]))
        parts = load_t2v(t2v_path, device=device, dtype=torch.float32)
        scale = 2 ** (len(parts["vae"].config.block_out_channels) - 1)
        if int(cfg["size"]) % scale:
            raise UserError(f"--size {cfg['size']} must be a multiple of {scale} for this model")
        from diffusers import DDPMScheduler
        train_scheduler = DDPMScheduler.from_pretrained(t2v_path, subfolder="scheduler", local_files_only=True)
        beats = load_beats(beats_path, device=device)
        width = parts["text_encoder"].get_input_embeddings().weight.shape[1]
        if init:
            mapper = load_mapper(init, frames=int(cfg["frames"]), device=device)
            if mapper.in_dim != beats.output_dim or mapper.out_dim != width:
                raise UserError(f"--init {init}: a mapper from {mapper.in_dim} to {mapper.out_dim}; this BEATs gives "
                                f"{beats.output_dim} and this text encoder takes {width}")
        else:
            torch.manual_seed(int(cfg["seed"]))
            mapper = new_mapper(beats, width, int(cfg["frames"])).to(device)
        torch.manual_seed(int(cfg["seed"]) + dist.rank)
        trainer = MapperTrainer(parts, train_scheduler, beats, mapper, cfg, device, dist)
        if state is not None:
            trainer.load_state_dict(state)
    except BaseException:                 # bad files or data: leave no empty output folder behind
        if created and os.path.isdir(outdir) and not os.listdir(outdir):
            os.rmdir(outdir)
        raise
    dist.broadcast_module(trainer.mapper)
    per_rank = int(cfg["batch"]) // dist.world
    sampler = InfiniteSampler(len(dataset), int(cfg["seed"]), dist.rank, dist.world, trainer.step_count * per_rank)
    loader = iter(torch.utils.data.DataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=True))
    if dist.main:
        with open(os.path.join(outdir, "options.json"), "w") as f:
            json.dump({"t2v": t2v_path, "beats": beats_path, "data": data, "init": init, "config": cfg,
                       "windows": len(dataset), "files": len(dataset.files), "skipped_files": dataset.skipped,
                       "world": dist.world}, f, indent=2)
    log_path = os.path.join(outdir, "log.csv")
    log_file = open(log_path, "a", newline="") if dist.main else None
    log = csv.DictWriter(log_file, ["step", "seconds", "total", "mse", "temporal_l1", "grad_norm"],
                         extrasaction="ignore") if log_file else None
    if log and (state is None or os.path.getsize(log_path) == 0):
        log.writeheader()

    def checkpoint():
        if dist.main:
            mapper_state = {k: v.detach().cpu() for k, v in trainer.mapper.state_dict().items()}
            write_atomically(mapper_path, lambda tmp: torch.save(mapper_state, tmp))
            write_atomically(state_path, lambda tmp: torch.save(trainer.state_dict(), tmp))

    total_steps = int(cfg["steps"])
    previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    bar = tqdm(total=total_steps, initial=trainer.step_count, unit="step", desc="train-mapper", dynamic_ncols=True,
               disable=None if progress and dist.main else True)
    started = time.perf_counter()
    previews: list[str] = []

    def preview(step):
        previews.append(_preview(cfg, outdir, t2v_path, beats_path, mapper_path, dataset.files[0], step, device))

    try:
        last = run_steps(trainer, loader, total_steps, bar=bar, checkpoint=checkpoint,
                         checkpoint_every=int(cfg["checkpoint_every"]), log=log, log_file=log_file,
                         preview=preview if dist.main else None, preview_every=int(cfg["preview_every"]),
                         postfix=lambda last: {"mse": f"{last['mse']:.4f}", "l1": f"{last['temporal_l1']:.3f}"})
    finally:
        bar.close()
        signal.signal(signal.SIGTERM, previous)
        if log_file:
            log_file.close()
        dist.close()
    return {"steps": trainer.step_count, "mapper": mapper_path, "state": state_path, "log": log_path,
            "previews": previews, "last": last, "windows": len(dataset), "skipped_files": dataset.skipped,
            "seconds": time.perf_counter() - started}


def _preview(cfg: dict, outdir: str, t2v: str, beats: str, mapper: str, source: str, step: int, device) -> str:
    """The first data file's first seconds rendered with the mapper as it is now, through `sgvis render`."""
    from sgvis.render import RenderJob, render
    folder = os.path.join(outdir, "previews")
    os.makedirs(folder, exist_ok=True)
    out = os.path.join(folder, f"step-{step:06d}.mp4")
    size = int(cfg["size"])
    job = RenderJob(audio=source, output=out, fps=None, size=(size, size), seed=0, start=0.0,
                    end=float(cfg["preview_seconds"]), overwrite=True, device=str(device), backend="tempotokens",
                    backend_options={"t2v": t2v, "beats": beats, "mapper": mapper, "prompt": cfg.get("prompt"),
                                     "steps": int(cfg["preview_steps"])})
    render(job)
    return out


# -- command line ---------------------------------------------------------------------------------------------
def cmd_train_mapper(args) -> int:
    cfg = {"steps": args.steps, "batch": args.batch, "lr": args.lr, "size": args.size, "prompt": args.prompt,
           "seed": args.seed, "checkpoint_every": args.checkpoint_every, "preview_every": args.preview_every}
    summary = train_mapper(args.t2v, args.beats, args.data, args.out, cfg, init=args.init, device_name=args.device,
                           resume=args.resume, overwrite=args.overwrite)
    skipped = f" ({summary['skipped_files']} files without picture, sound or 2 s skipped)" \
        if summary["skipped_files"] else ""
    print(f"wrote {summary['mapper']} after {summary['steps']} steps on {summary['windows']} windows{skipped}; "
          f"last mse {summary['last'].get('mse', float('nan')):.4f}")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "train-mapper", help="train a TempoTokens mapper (audio -> pseudo-words) for a text-to-video model",
        description="Train the audio -> token mapper of the tempotokens backend on videos with sound; the "
                    "text-to-video model, BEATs and the VAE stay frozen (docs/diffusion.md).")
    p.add_argument("--t2v", required=True, metavar="DIR", help="diffusers text-to-video folder (e.g. zeroscope)")
    p.add_argument("--beats", required=True, metavar="BEATS.pt", help="BEATs iter3+ AudioSet checkpoint")
    p.add_argument("--data", required=True, metavar="VIDEOS", help="folder of videos with sound")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder (mapper.pth, training-state.pt, log.csv)")
    p.add_argument("--init", metavar="MAPPER.pth", help="start from these mapper weights (fine-tune)")
    p.add_argument("--steps", type=int, help=f"optimisation steps (default {TRAIN_DEFAULTS['steps']})")
    p.add_argument("--batch", type=int, help=f"windows per step (default {TRAIN_DEFAULTS['batch']})")
    p.add_argument("--lr", type=float, help=f"AdamW learning rate (default {TRAIN_DEFAULTS['lr']:g})")
    p.add_argument("--size", type=int, help=f"frame side in pixels (default {TRAIN_DEFAULTS['size']})")
    p.add_argument("--prompt", metavar="TEXT", help="words after the six audio tokens (as render --prompt)")
    p.add_argument("--seed", type=int, help="seed (default 0)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 100)")
    p.add_argument("--preview-every", type=int, help="steps between preview renders (default 0: none)")
    p.add_argument("--compute", "--device", dest="device", default="auto", metavar="DEVICE",
                   help="auto (default), cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="start again in a non-empty --out")
    p.set_defaults(func=cmd_train_mapper)
