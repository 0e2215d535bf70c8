"""`sgvis train-glo`: non-adversarial training of a StyleGAN2 generator (Generative Latent Optimisation).

Every training image gets its own learnable latent z, and the generator (mapping and synthesis) and the latents
are fitted together to reconstruct the images: L1 over an image pyramid, so that composition counts as much as
detail.  There is no discriminator, so nothing can collapse: every training image keeps a latent that draws it.
The latents start from a whitened PCA of the images and are kept on the sphere of radius sqrt(z_dim), which is
where the mapping network puts any z it is given (it normalises z's second moment); so a random z lands among the
learned latents, and the result is an ordinary sgvis generator file (render/live --model, steering, info).
Images come out softer than a converged GAN's, but a small generator learns a dataset's look in CPU-hours rather
than GPU-days; this is how the default model is trained (docs/training.md).  The final model keeps the learned
latents (a latent bank, MappingNetwork), so that random z draw learned images rather than blends of them.

`--grow-from` starts from a lower-resolution train-glo run: its generator and latents are kept, and the new
blocks' toRGB start at zero, so training starts from the old images upsampled.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sgvis.errors import UserError
from sgvis.train.state import atomic_torch_save, check_outdir, load_training_state, training_process

STATE_FILE = "training-state.pt"
STATE_TAG = "sgvis-train-glo"
STATE_VERSION = 1


@dataclass
class GloOptions:
    data: str
    outdir: str
    epochs: float = 20.0
    batch: int = 32
    lr: float = 0.01
    code_lr: float = 0.1
    lr_rampdown: float = 0.0           # the run's final fraction over which both learning rates fall to 0
    seed: int = 0
    resume: str | None = None          # None, "auto" (if present) or "latest" (required)
    grow_from: str | None = None
    max_images: int | None = None
    channel_base: int = 4096
    channel_max: int = 128
    w_dim: int = 256
    z_dim: int = 32
    map_layers: int = 4
    state_minutes: float = 10.0
    grid: tuple = (8, 4)
    latent_bank: bool = True
    bank_focus: float = 0.85
    device: str = "cpu"
    threads: int | None = None
    progress: bool = True


# -- pieces that the tests call directly -------------------------------------------------------------------------

def pyramid_l1(fake: torch.Tensor, real: torch.Tensor, min_size: int = 4) -> torch.Tensor:
    """Mean absolute difference at every level of an average-pooled pyramid, full size down to `min_size`,
    averaged over levels (each level counts the same, so a wrong layout costs as much as wrong detail)."""
    total, levels = fake.new_zeros([]), 0
    while True:
        total = total + (fake - real).abs().mean()
        levels += 1
        if fake.shape[-1] // 2 < min_size:
            return total / levels
        fake, real = F.avg_pool2d(fake, 2), F.avg_pool2d(real, 2)


def pca_codes(images: torch.Tensor, dim: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Initial latents [N, dim]: the images' leading principal components at `size`^2, whitened, then random
    directions for what the PCA cannot fill, projected to the sphere of radius sqrt(dim)."""
    x = F.interpolate(images.float(), size=(size, size), mode="area").flatten(1)
    x = x - x.mean(0)
    k = min(dim, x.shape[0] - 1, x.shape[1])
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randn([x.shape[0], dim], generator=gen) * 0.1
    if k > 0:
        u, s, _ = torch.linalg.svd(x, full_matrices=False)
        codes[:, :k] = u[:, :k] * math.sqrt(x.shape[0] - 1)      # unit variance per component
    return project_to_sphere(codes)


def project_to_sphere(codes: torch.Tensor) -> torch.Tensor:
    return codes * (math.sqrt(codes.shape[1]) / codes.norm(dim=1, keepdim=True).clamp_min(1e-8))


def synthesize(G: torch.nn.Module, z: torch.Tensor, update_emas: bool = False) -> torch.Tensor:
    """Images for latents z through G's mapping and synthesis (no style mixing, constant noise)."""
    return G.synthesis(G.mapping(z, None, update_emas=update_emas), noise_mode="const")


def rampdown_factor(step: int, total_steps: int, fraction: float) -> float:
    """Learning-rate factor: 1 until the last `fraction` of the steps, then a half cosine down to 0."""
    start = total_steps * (1 - fraction)
    if fraction <= 0 or step < start:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * min((step - start) / max(total_steps - start, 1), 1.0)))


def bank_sharpness(latents: torch.Tensor, focus: float, samples: int = 2048, seed: int = 0) -> float:
    """The latent-bank sharpness at which a random z gives, on average, weight `focus` to its nearest latent
    (bisection in log space; the mean top weight grows with the sharpness)."""
    if not 0 < focus < 1:
        raise ValueError(f"focus must be in (0, 1), got {focus}")
    z = torch.randn([samples, latents.shape[1]], generator=torch.Generator().manual_seed(seed))
    from stylegan.layers import bank_cosine
    cos = bank_cosine(z, latents.float())
    lo, hi = 1e-3, 1e5
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        top = torch.softmax(cos * mid, dim=1).max(dim=1).values.mean().item()
        lo, hi = (mid, hi) if top < focus else (lo, mid)
    return math.sqrt(lo * hi)


def attach_latent_bank(G: torch.nn.Module, latents: torch.Tensor, focus: float, seed: int = 0) -> float:
    """Make random z draw from the learned latents (MappingNetwork's latent bank) and re-centre w_avg (the
    truncation target) on what the mapping now gives; returns the sharpness used."""
    sharpness = bank_sharpness(latents, focus, seed=seed)
    G.set_latent_bank(latents, sharpness)
    with torch.no_grad():
        z = torch.randn([4096, G.z_dim], generator=torch.Generator().manual_seed(seed)).to(G.device)
        G.mapping.w_avg.copy_(G.mapping(z, None)[:, 0].mean(dim=0))
    return sharpness


# -- the run ---------------------------------------------------------------------------------------------------

def _arch(o: GloOptions, resolution: int) -> dict:
    return dict(resolution=int(resolution), channel_base=o.channel_base, channel_max=o.channel_max,
                z_dim=o.z_dim, w_dim=o.w_dim, map_layers=o.map_layers, fp16_res=0, conv_clamp=None,
                mbstd_group=4, noise=False)


def _build_G(arch: dict):
    from sgvis.train.gan import build_generator
    return build_generator(arch)


def load_state(path: str) -> dict:
    return load_training_state(path, STATE_TAG, STATE_VERSION, "train-glo")


class _Images:
    """The first `count` dataset images, held in memory as uint8 when they fit in `max_bytes` (decoding a PNG
    costs about as much as a 64^2 training step on CPU), decoded per batch otherwise; batches come in [-1, 1]."""

    def __init__(self, dataset, count: int, max_bytes: float = 3e9, progress: bool = False):
        from tqdm import tqdm
        self.dataset, self.count = dataset, count
        res = dataset.resolution
        self.held = None
        if count * 3 * res * res <= max_bytes:
            self.held = torch.empty([count, 3, res, res], dtype=torch.uint8)
            for i in tqdm(range(count), desc="loading images", disable=not progress, leave=False):
                self.held[i] = dataset[i]

    def uint8(self, indices) -> torch.Tensor:
        if self.held is not None:
            return self.held[torch.as_tensor(np.asarray(indices), dtype=torch.long)]
        return torch.stack([self.dataset[int(i)] for i in indices])

    def batch(self, indices, device) -> torch.Tensor:
        return self.uint8(indices).to(device).float() / 127.5 - 1


def _grid(images: torch.Tensor, grid: tuple[int, int], path: str) -> None:
    from sgvis.train.common import save_image_grid
    save_image_grid(images, grid, path)


def _grow(G, low_state: dict) -> torch.Tensor:
    """Load a lower-resolution run's generator into the grown G (new toRGB at zero); returns its latents."""
    from sgvis.train.grow import init_generator_from_lower
    init_generator_from_lower(G, low_state["G"], json.loads(low_state["arch"])["resolution"])
    return low_state["codes"]


def train(o: GloOptions) -> dict:
    from sgvis.data.dataset import open_dataset
    from sgvis.train.common import resolve_device
    device = resolve_device(o.device)
    with training_process(device, o.threads):
        return _train(o, device, open_dataset(o.data))


def _train(o: GloOptions, device: torch.device, dataset) -> dict:
    import stylegan
    from tqdm import tqdm
    outdir = os.path.abspath(o.outdir)
    state_path = os.path.join(outdir, STATE_FILE)
    state = None
    if o.resume in ("auto", "latest") and os.path.exists(state_path):
        state = load_state(state_path)
    elif o.resume == "latest":
        raise UserError(f"--resume: no {STATE_FILE} in {o.outdir} to resume from")
    elif o.resume is None and os.path.exists(state_path):
        raise UserError(f"{o.outdir} already holds a train-glo run ({STATE_FILE}); pass --resume to continue it "
                        f"or choose another --outdir")
    count = min(len(dataset), o.max_images or len(dataset))
    if count < 2:
        raise UserError(f"{o.data}: train-glo needs at least 2 images (found {count})")
    if o.batch < 1 or o.epochs <= 0:
        raise UserError("--batch must be >= 1 and --epochs > 0")
    if not 0 <= o.lr_rampdown <= 1:
        raise UserError(f"--lr-rampdown must be between 0 and 1, got {o.lr_rampdown}")
    if o.latent_bank and not 0 < o.bank_focus < 1:
        raise UserError(f"--bank-focus must be between 0 and 1 (exclusive), got {o.bank_focus}")
    arch = json.loads(state["arch"]) if state is not None else _arch(o, dataset.resolution)
    if state is not None and state["codes"].shape[0] != count:
        raise UserError(f"--resume: the run learned {state['codes'].shape[0]} latents but {o.data} gives {count} "
                        f"images; resume with the same dataset and --max-images")
    if dataset.resolution != arch["resolution"]:
        raise UserError(f"resolution mismatch: {o.data} holds {dataset.resolution}x{dataset.resolution} images but "
                        f"the run is {arch['resolution']}x{arch['resolution']}")
    low = None
    if state is None and o.grow_from:
        low_path = os.path.join(o.grow_from, STATE_FILE) if os.path.isdir(o.grow_from) else o.grow_from
        low = load_state(low_path)
        low_arch = json.loads(low["arch"])
        if any(low_arch[k] != arch[k] for k in ("channel_base", "channel_max", "w_dim", "z_dim", "map_layers")):
            raise UserError(f"--grow-from {o.grow_from}: its architecture differs from this run's "
                            f"(channel base/max, w/z dim, mapping layers must match)")
        if low_arch["resolution"] >= arch["resolution"]:
            raise UserError(f"--grow-from: that run is {low_arch['resolution']}^2; this one must be larger")
        # The grown blocks upsample the low run's finished image border-clamped (SynthesisNetwork's grown_from).
        arch["grown_from"] = int(low_arch.get("grown_from") or low_arch["resolution"])
        if low["codes"].shape[0] < count:
            raise UserError(f"--grow-from: that run learned {low['codes'].shape[0]} latents; this dataset has "
                            f"{count} images (build both datasets from the same images, or pass --max-images)")
    check_outdir(outdir)
    torch.manual_seed(o.seed)
    G = _build_G(arch).to(device)
    images = _Images(dataset, count, progress=o.progress)
    if state is not None:
        G.load_state_dict(state["G"])
        codes = state["codes"]
    elif low is not None:
        codes = _grow(G, low)[:count]
    else:
        codes = pca_codes(images.uint8(range(count)) if images.held is None else images.held, arch["z_dim"],
                          seed=o.seed)
    codes_param = torch.nn.Embedding(count, arch["z_dim"], sparse=True).to(device)
    with torch.no_grad():
        codes_param.weight.copy_(codes.to(device))
    opt_G = torch.optim.Adam(G.parameters(), lr=o.lr, betas=(0.9, 0.99))
    opt_codes = torch.optim.SparseAdam(codes_param.parameters(), lr=o.code_lr, betas=(0.9, 0.99))
    step = 0
    if state is not None:
        opt_G.load_state_dict(state["opt_G"])
        opt_codes.load_state_dict(state["opt_codes"])
        step = int(state["step"])
    steps_per_epoch = math.ceil(count / o.batch)
    total_steps = int(math.ceil(o.epochs * steps_per_epoch))
    grid_n = o.grid[0] * o.grid[1]
    grid_idx = np.random.default_rng(o.seed).choice(count, size=min(grid_n, count), replace=False)
    if state is None:
        _grid(images.batch(grid_idx, "cpu"), o.grid, os.path.join(outdir, "reals.png"))

    def save_state():
        atomic_torch_save(dict(format=STATE_TAG, version=STATE_VERSION, arch=json.dumps(arch), G=G.state_dict(),
                                codes=codes_param.weight.detach().cpu(), opt_G=opt_G.state_dict(),
                                opt_codes=opt_codes.state_dict(), step=step,
                                options=json.dumps({k: v for k, v in vars(o).items() if k != "grid"})),
                           state_path)

    def recon_grid(name):
        with torch.no_grad():
            z = codes_param.weight[torch.as_tensor(grid_idx, device=device)]
            _grid(synthesize(G, z).cpu(), o.grid, os.path.join(outdir, name))

    log = open(os.path.join(outdir, "log.jsonl"), "a")
    bar = tqdm(total=total_steps, initial=min(step, total_steps), desc="train-glo", unit="step",
               disable=not o.progress, dynamic_ncols=True)
    last_save, losses, t_start, interrupted = time.time(), [], time.time(), None
    G.train()
    try:
        while step < total_steps:
            epoch = step // steps_per_epoch
            order = np.random.default_rng(o.seed * 7919 + epoch).permutation(count)
            k = step % steps_per_epoch
            idx = order[k * o.batch:(k + 1) * o.batch]
            real = images.batch(idx, device)
            ids = torch.as_tensor(idx, device=device)
            fake = synthesize(G, codes_param(ids), update_emas=True)
            loss = pyramid_l1(fake, real)
            factor = rampdown_factor(step, total_steps, o.lr_rampdown)
            for opt, lr in ((opt_G, o.lr), (opt_codes, o.code_lr)):
                for group in opt.param_groups:
                    group["lr"] = lr * factor
            opt_G.zero_grad(set_to_none=True)
            opt_codes.zero_grad(set_to_none=True)
            loss.backward()
            opt_G.step()
            opt_codes.step()
            with torch.no_grad():
                codes_param.weight[ids] = project_to_sphere(codes_param.weight[ids])
            losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", epoch=f"{step / steps_per_epoch:.2f}")
            if step % steps_per_epoch == 0 or step == total_steps:
                e = step / steps_per_epoch
                log.write(json.dumps(dict(epoch=e, step=step, loss=float(np.mean(losses)),
                                          images_per_s=len(losses) * o.batch / max(time.time() - t_start, 1e-9)))
                          + "\n")
                log.flush()
                losses, t_start = [], time.time()
                recon_grid(f"recon-{int(round(e * 100)):06d}.png")
                save_state()
                stylegan.save(G, os.path.join(outdir, "network-snapshot.safetensors"),
                              extra=dict(trained_with="sgvis train-glo", epochs=f"{e:.2f}", seed=str(o.seed)))
                last_save = time.time()
            elif time.time() - last_save > o.state_minutes * 60:
                save_state()
                last_save = time.time()
    except KeyboardInterrupt as e:      # Ctrl-C, SIGTERM, SIGHUP: save the state, then end as interrupted
        interrupted = e
    finally:
        bar.close()
        log.close()
    save_state()
    if interrupted is not None:
        print(f"\ninterrupted: saved {state_path} at step {step} (epoch {step / steps_per_epoch:.2f}); "
              f"continue with --resume", file=sys.stderr)
        raise interrupted
    G.eval().requires_grad_(False).cpu()
    extra = {}
    if o.latent_bank:
        sharpness = attach_latent_bank(G, codes_param.weight.detach().cpu(), o.bank_focus, seed=o.seed)
        extra = dict(latent_bank=f"{count} learned latents, focus {o.bank_focus}, sharpness {sharpness:.1f}")
    final = os.path.join(outdir, "network-final.safetensors")
    manifest = dataset.manifest
    stylegan.save(G, final, extra=dict(trained_with="sgvis train-glo", epochs=f"{step / steps_per_epoch:.2f}",
                                       dataset_source=str(manifest.get("source")),
                                       dataset_licence=str(manifest.get("licence")), seed=str(o.seed), **extra))
    with torch.no_grad():
        z = torch.randn([grid_n, G.z_dim], generator=torch.Generator().manual_seed(o.seed))
        _grid(G(z), o.grid, os.path.join(outdir, "samples.png"))
    return dict(final=final, steps=step, epochs=step / steps_per_epoch)


# -- command line ----------------------------------------------------------------------------------------------

def cmd_train_glo(args) -> int:
    from sgvis.train.common import parse_grid
    if args.resume not in (None, "auto", "latest"):
        raise UserError(f"--resume takes 'auto' or nothing (continue the run in --outdir), got {args.resume!r}")
    o = GloOptions(data=args.data, outdir=args.outdir, epochs=args.epochs, batch=args.batch, lr=args.lr,
                   code_lr=args.code_lr, lr_rampdown=args.lr_rampdown, seed=args.seed, resume=args.resume,
                   grow_from=args.grow_from,
                   max_images=args.max_images, channel_base=args.channel_base, channel_max=args.channel_max,
                   z_dim=args.z_dim, w_dim=args.w_dim, map_layers=args.map_layers,
                   state_minutes=args.state_minutes, grid=parse_grid(args.grid),
                   latent_bank=not args.no_latent_bank, bank_focus=args.bank_focus, device=args.device,
                   threads=args.threads, progress=not args.quiet)
    s = train(o)
    print(f"done: {s['epochs']:.2f} epochs ({s['steps']} steps); model {s['final']}")
    return 0
