"""The training commands' arguments (train-gan, export-gan, train-glo, train-encoder, train-audio-clip).  The
trainers (and torch) are imported only when a command runs."""
from __future__ import annotations

import importlib

from sgvis.train.settings import ARCH_DEFAULTS, AUDIO_CLIP_DEFAULTS, OBJECTIVE_WEIGHTS


def _run(module: str, function: str):
    """The command function `module.function`, imported when the command runs."""
    def run(args):
        return getattr(importlib.import_module(module), function)(args)
    run.__name__ = function
    return run


def register_cli(subparsers) -> None:
    register_gan(subparsers)
    register_glo(subparsers)
    register_encoder(subparsers)
    register_audio_clip(subparsers)


def register_gan(subparsers) -> None:
    e = subparsers.add_parser("export-gan", help="write the G_ema of a train-gan training state as a model file")
    e.add_argument("state", help="training-state.pt from a train-gan run (may still be running)")
    e.add_argument("output", help="output .safetensors")
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=_run("sgvis.train.gan", "cmd_export_gan"))

    p = subparsers.add_parser(
        "train-gan", help="train a StyleGAN2 generator on a dataset from 'sgvis dataset' (CPU, GPU or torchrun)",
        description="Train StyleGAN2 from scratch. Writes sgvis-format snapshots of G_ema, sample grids and a "
                    "training state for --resume to --outdir. Under torchrun (WORLD_SIZE > 1) each process "
                    "trains on --batch / WORLD_SIZE images per step; only rank 0 writes.")
    a = p.add_argument
    a("--data", required=True, help="dataset folder or .zip written by 'sgvis dataset'")
    a("--outdir", required=True, help="run folder (created); holds snapshots, samples and the training state")
    g = p.add_argument_group("architecture (fixed by the run when resuming)")
    g.add_argument("--resolution", type=int, help="image size (default: the dataset's)")
    g.add_argument("--channel-base", type=int, help=f"channels = min(base / res, max) (default "
                   f"{ARCH_DEFAULTS['channel_base']})")
    g.add_argument("--channel-max", type=int, help=f"(default {ARCH_DEFAULTS['channel_max']})")
    g.add_argument("--z-dim", type=int, help=f"latent size (default {ARCH_DEFAULTS['z_dim']})")
    g.add_argument("--w-dim", type=int, help=f"style size (default {ARCH_DEFAULTS['w_dim']})")
    g.add_argument("--map-layers", type=int, help=f"mapping network depth (default {ARCH_DEFAULTS['map_layers']})")
    g.add_argument("--fp16-res", type=int, help="number of highest-resolution blocks run in fp16 on CUDA "
                   "(mixed precision; default 4 on CUDA, 0 on CPU)")
    g.add_argument("--conv-clamp", type=float, help="clamp conv outputs (default 256 when fp16 is used)")
    g.add_argument("--noise", choices=("on", "off"), help="G's per-pixel noise inputs (default on). 'off' makes "
                   "the latent the only source of variation, so every change of the image comes from w: what sgvis "
                   "steers (render and live hold the noise constant)")
    g.add_argument("--mbstd-group", type=int, default=4, help="minibatch-stddev group size (default 4)")
    g.add_argument("--grow-from", metavar="RUN", help="start from a trained lower-resolution run (its folder or "
                   "training-state.pt): its layers are kept, the new resolutions are added (progressive growing; "
                   "much faster on CPU than training at full resolution from scratch)")
    g.add_argument("--init-from", metavar="MODEL", help="start G (and its EMA) from a generator file written by "
                   "sgvis (train-gan, train-glo, export-gan; the built-in model too): fine-tuning, e.g. on your own "
                   "images. The architecture and latent bank come from the file; D starts new")
    g.add_argument("--fade-kimg", type=float, default=4.0, help="grown runs: kimg over which the discriminator "
                   "fades from the old resolution's input to the new one (default 4)")
    g = p.add_argument_group("schedule")
    g.add_argument("--batch", type=int, default=16, help="total batch size over all processes (default 16)")
    g.add_argument("--kimg", type=float, default=1000, help="train until this many thousand real images were shown "
                   "(default 1000)")
    g.add_argument("--tick", type=float, default=4, help="log every this many kimg (default 4)")
    g.add_argument("--snap", type=float, default=50, help="snapshot + sample grid + state every this many kimg "
                   "(default 50; 0: only at the end)")
    g.add_argument("--state-minutes", type=float, default=10, help="also save the training state this often "
                   "(minutes; default 10)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--max-steps", type=int, help="stop after this many iterations (the state is saved)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, default=0.0025, help="Adam learning rate (default 0.0025)")
    g.add_argument("--d-lr", type=float, help="discriminator learning rate (default: --lr)")
    g.add_argument("--beta1", type=float, default=0.0)
    g.add_argument("--beta2", type=float, default=0.99)
    g.add_argument("--gamma", type=float, help="R1 weight (default 0.0002 * resolution^2 / batch)")
    g.add_argument("--r1-interval", type=int, default=16, help="lazy R1 every N D steps (default 16)")
    g.add_argument("--pl-weight", type=float, default=2.0, help="path length regularisation weight (0: off; "
                   "default 2)")
    g.add_argument("--pl-interval", type=int, default=4)
    g.add_argument("--style-mixing", type=float, default=0.9, help="style mixing probability (default 0.9)")
    g.add_argument("--ema-kimg", type=float, help="G_ema half-life in kimg (default batch * 10 / 32)")
    g.add_argument("--coverage", type=float, default=0.0, help="mode coverage weight (0: off, the default). Each "
                   "real image pulls the nearest of --coverage-candidates generated images towards it at "
                   "--coverage-res^2, so no part of the data is left without latents; against mode collapse on "
                   "small datasets and short runs")
    g.add_argument("--coverage-interval", type=int, default=4, help="coverage step every N steps (default 4)")
    g.add_argument("--coverage-candidates", type=int, default=64, help="generated images searched per coverage "
                   "step (default 64)")
    g.add_argument("--coverage-res", type=int, default=16, help="resolution the images are compared at "
                   "(default 16)")
    g = p.add_argument_group("augmentation")
    g.add_argument("--augment", choices=["ada", "fixed", "none"], default="ada",
                   help="ada: adaptive probability (default); fixed: --augment-p throughout; none")
    g.add_argument("--augment-p", type=float, default=0.0, help="initial (ada) or fixed probability (default 0)")
    g.add_argument("--ada-target", type=float, default=0.6, help="target E[sign(D(real))] (default 0.6)")
    g.add_argument("--ada-kimg", type=float, default=100, help="kimg for p to move 0 -> 1 (default 100)")
    g.add_argument("--augment-ops", help="comma-separated subset of xflip,translate,brightness,contrast,"
                   "saturation,cutout (default all)")
    g = p.add_argument_group("running")
    g.add_argument("--resume", nargs="?", const="latest", metavar="auto|PATH",
                   help="continue from --outdir's training state (no value), from it if present ('auto'), or "
                        "from a given training-state.pt")
    g.add_argument("--compute", "--device", dest="device", default="auto", metavar="DEVICE",
                   help="auto (cuda if available), cpu, cuda, cuda:N")
    g.add_argument("--workers", type=int, help="data loader processes (default 2 on CUDA, 0 on CPU)")
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice, one per core); on a "
                   "busy machine 1 can be faster than an oversubscribed 2")
    g.add_argument("--grid", default="4x4", help="sample grid size, WxH (default 4x4)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run("sgvis.train.gan", "cmd_train_gan"))


def register_encoder(subparsers) -> None:
    p = subparsers.add_parser("train-encoder", help="train learned steering (sound inversion encoder + "
                                                    "recurrent blocks) for a StyleGAN")
    p.add_argument("--model", help="the StyleGAN to steer (any supported checkpoint; default: the built-in model)")
    p.add_argument("--data", required=True, help="folder of video files with sound and/or audio files")
    p.add_argument("--out", required=True, help="output folder (steering.safetensors, log.csv, previews/)")
    p.add_argument("--objective", choices=sorted(OBJECTIVE_WEIGHTS),
                   help="clip: the paper's CLIP-guided losses; sync: onset-following motion, no external model "
                        "(default: the config's, sync)")
    p.add_argument("--config", help="YAML file with a train_encoder: section (see configs/train/encoder-sync.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a setting, e.g. --set train_encoder.weights.image_adv=0.1 (repeatable)")
    p.add_argument("--labels", help="CSV of labels or captions for the data files (the clip objective's text loss)")
    p.add_argument("--clip-path", help="local CLIP folder (HF format) for the clip objective")
    p.add_argument("--audio-clip", help="audio encoder into CLIP space (from sgvis train-audio-clip)")
    p.add_argument("--init", metavar="STEERING", help="start from this steering checkpoint's weights (e.g. one "
                   "trained for an earlier version of the model; same num_ws and w_dim)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--clip-frames", type=int, dest="clip_frames", help="frames per training clip (T)")
    p.add_argument("--fps", type=float, help="video frame rate the steering is trained for (default 30)")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--compute", "--device", dest="device", default="auto", metavar="DEVICE",
                   help="auto, cpu or cuda[:N] (torchrun: one GPU per process)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its training-state.pt")
    p.add_argument("--overwrite", action="store_true", help="start a new run in a non-empty --out folder")
    p.set_defaults(func=_run("sgvis.train.encoder", "cmd_train_encoder"))


def register_audio_clip(subparsers) -> None:
    p = subparsers.add_parser(
        "train-audio-clip", help="train an audio encoder into CLIP's embedding space (for CLIP-guided steering)",
        description="Contrastive training of an audio encoder (log-mel window -> CLIP embedding) against frozen "
                    "CLIP image / text towers: audio <-> video frame of the same clip, and audio <-> label text "
                    "when labels exist. Under torchrun each process trains on --batch / WORLD_SIZE clips.")
    a = p.add_argument
    a("--data", required=True, help="folder of video files with sound and/or audio files (class subfolders "
                                    "give labels)")
    a("--out", required=True, help="output encoder, PATH.safetensors (PATH.state.pt and PATH.log.csv go beside it)")
    a("--labels", help="CSV of labels for the data files (the audio <-> text loss)")
    a("--config", help="YAML file with a clip: section (path / name / config, prompt) and optionally a "
                       "train_audio_clip: section")
    a("--clip-path", help="local CLIP directory in the HuggingFace format (CLIPModel.save_pretrained)")
    a("--clip-name", help="CLIP repository id, looked up only in the local HuggingFace cache")
    a("--clip-cache", help="HuggingFace cache directory for --clip-name (default: HF_HOME's)")
    a("--steps", type=int, help=f"total optimiser steps (default {AUDIO_CLIP_DEFAULTS['steps']})")
    a("--batch", type=int, help=f"clips per step over all processes (default {AUDIO_CLIP_DEFAULTS['batch']})")
    a("--lr", type=float, help=f"AdamW learning rate (default {AUDIO_CLIP_DEFAULTS['lr']})")
    a("--weight-decay", type=float, dest="weight_decay", help=f"(default {AUDIO_CLIP_DEFAULTS['weight_decay']})")
    a("--fps", type=float, help=f"frames sampled per second of data, each with the mel window ending there (default "
                                f"{AUDIO_CLIP_DEFAULTS['fps']:g}; lower: a smaller frame cache)")
    a("--clip-frames", type=int, dest="clip_frames",
      help=f"frames per drawn clip, one used per step (default {AUDIO_CLIP_DEFAULTS['clip_frames']})")
    a("--frame-weight", type=float, dest="frame_weight", help="audio <-> frame loss weight (default 1; 0: "
                                                              "audio-only, text loss alone)")
    a("--text-weight", type=float, dest="text_weight", help="audio <-> label text loss weight (default 1)")
    a("--prompt", help="label text template (default '{label}', e.g. 'the sound of {label}')")
    a("--save-every", type=int, dest="save_every", help=f"checkpoint every N steps (default "
                                                        f"{AUDIO_CLIP_DEFAULTS['save_every']})")
    a("--seed", type=int, help="random seed (default 0)")
    a("--workers", type=int, help="data loader processes (default 2 on CUDA, 0 on CPU)")
    a("--amp", choices=["auto", "bf16", "fp16", "off"], help="mixed precision on CUDA (default auto: bf16 where "
                                                             "supported, else fp16); CPU always uses fp32")
    a("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N (torchrun: one GPU per process)")
    a("--resume", nargs="?", const="", metavar="STATE",
      help="continue a run: from PATH.state.pt beside --out (no value) or a given state file; replaces --out")
    a("--overwrite", action="store_true", help="replace an existing --out (and its state and log)")
    a("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run("sgvis.train.audio_clip", "cmd_train_audio_clip"))


def register_glo(subparsers) -> None:
    p = subparsers.add_parser(
        "train-glo", help="train a StyleGAN2 generator without a discriminator (GLO: a latent per image); "
                          "fast and collapse-free on CPU",
        description="Fit a StyleGAN2 generator and one latent per training image together, so that each latent "
                    "draws its image (L1 over an image pyramid). No discriminator: nothing can mode-collapse, "
                    "and a small model learns a dataset's look in CPU-hours. Latents start from a whitened PCA "
                    "of the images and stay on the sphere that the mapping network normalises z to, so random "
                    "z sample the learned space. Writes recon-*.png (reconstructions of the grid of reals.png) "
                    "every epoch, a resumable training state, and network-final.safetensors (a normal sgvis "
                    "model for render/live --model). Images come out softer than a converged GAN's.")
    a = p.add_argument
    a("--data", required=True, help="dataset from 'sgvis dataset' (folder or zip)")
    a("--outdir", required=True, help="run folder (created)")
    a("--epochs", type=float, default=20, help="passes over the images (default 20)")
    a("--batch", type=int, default=32, help="batch size (default 32)")
    a("--lr", type=float, default=0.01, help="generator learning rate (Adam, default 0.01)")
    a("--code-lr", type=float, default=0.1, help="latent learning rate (sparse Adam, default 0.1)")
    a("--lr-rampdown", type=float, default=0.0, metavar="F",
      help="let both learning rates fall to 0 (half cosine) over the last F of the run (0-1, default 0: constant); "
           "sharper reconstructions at the end. Set from this command line, also on --resume")
    a("--max-images", type=int, help="use only the first N images (default: all)")
    a("--grow-from", metavar="RUN", help="start from a lower-resolution train-glo run (folder or its state); "
                                         "its latents are kept, so build both datasets from the same images")
    a("--seed", type=int, default=0)
    a("--resume", nargs="?", const="auto", help="continue the run in --outdir (a finished run: writes the final "
                                                "model again, e.g. with another --bank-focus)")
    a("--no-latent-bank", action="store_true",
      help="do not store the learned latents in the model. With them (the default), random z are drawn towards "
           "the latents the generator learned to draw, so samples look like training images rather than blends "
           "of them")
    a("--bank-focus", type=float, default=0.85,
      help="with the latent bank: the weight a random z gives its nearest learned latent, on average (0-1; "
           "higher: samples closer to single training images, quicker changes as z moves; default 0.85)")
    g = p.add_argument_group("architecture (StyleGAN2, skip generator, no noise inputs)")
    g.add_argument("--channel-base", type=int, default=4096, help="channels = min(base / res, max) (default 4096)")
    g.add_argument("--channel-max", type=int, default=128, help="(default 128)")
    g.add_argument("--z-dim", type=int, default=32, help="latent size (default 32: the leading principal components; "
                                                         "whitened minor components are noise that random z "
                                                         "would then mostly consist of)")
    g.add_argument("--w-dim", type=int, default=256, help="(default 256)")
    g.add_argument("--map-layers", type=int, default=4, help="(default 4)")
    g = p.add_argument_group("running")
    g.add_argument("--state-minutes", type=float, default=10, help="save the state this often (and every epoch)")
    g.add_argument("--grid", default="8x4", help="reconstruction / sample grid, WxH (default 8x4)")
    g.add_argument("--compute", "--device", dest="device", default="cpu", metavar="DEVICE",
                   help="auto, cpu, cuda, cuda:N (default cpu)")
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: one per core)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run("sgvis.train.glo", "cmd_train_glo"))
