"""`sgvis train-gan`: StyleGAN2 training from scratch, on CPU (slowly), one GPU, or several via torchrun.

    sgvis train-gan --data data/vj.zip --outdir runs/vj --kimg 2000
    torchrun --nproc_per_node 4 -m sgvis train-gan --data data/vj.zip --outdir runs/vj     (after CLI wiring)

Per iteration (lazy regularisation as in StyleGAN2):
  G main   softplus(-D(aug(G(z))))                         style mixing, w_avg tracking in G.mapping
  G reg    path length penalty, every --pl-interval steps  (if --pl-weight > 0)
  G cover  each real x pulls the nearest of --coverage-candidates fakes towards it, at --coverage-res^2
           (mean squared difference, weight --coverage, every --coverage-interval steps; if --coverage > 0)
  D main   softplus(D(aug(G(z)))) + softplus(-D(aug(x)))   sign(D(aug(x))) drives the ADA probability p
  D reg    R1: gamma/2 |dD(aug(x))/dx|^2, every --r1-interval steps
  G_ema    exponential moving average of G (half-life --ema-kimg), what snapshots and samples use

The run folder (--outdir) gets: network-snapshot-KKKKKK.safetensors (sgvis format, G_ema; load with
stylegan.load), network-final.safetensors, training-state.pt (G, D, G_ema, optimisers, counters, augment p:
what --resume reads, with torch.load(weights_only=True)), fakesKKKKKK.png sample grids from fixed z,
reals.png, log.jsonl (one JSON line per tick) and training_options.json.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch

from sgvis.errors import UserError
from sgvis.train.settings import ARCH_DEFAULTS
from sgvis.train.common import Dist, InfiniteSampler, parse_grid, resolve_device, save_image_grid
from sgvis.train.state import atomic_torch_save, check_outdir, load_training_state, training_process

STATE_FILE = "training-state.pt"
STATE_TAG = "sgvis-train-state"
STATE_VERSION = 1
FINAL_NAME = "network-final.safetensors"



@dataclass
class TrainOptions:
    data: str
    outdir: str
    # architecture (None: from the dataset / resumed state / ARCH_DEFAULTS)
    resolution: int | None = None
    channel_base: int | None = None
    channel_max: int | None = None
    z_dim: int | None = None
    w_dim: int | None = None
    map_layers: int | None = None
    fp16_res: int | None = None          # highest-resolution blocks in fp16 on CUDA (None: 4 on CUDA, 0 on CPU)
    conv_clamp: float | None = None      # None: 256 when fp16 is used
    noise: bool | None = None            # per-pixel noise inputs in G (None: on, or the resumed run's)
    # schedule
    batch: int = 16
    kimg: float = 1000.0
    tick: float = 4.0
    snap: float = 50.0
    seed: int = 0
    # optimisation
    lr: float = 0.0025
    d_lr: float | None = None
    beta1: float = 0.0
    beta2: float = 0.99
    gamma: float | None = None           # None: 0.0002 * resolution^2 / batch
    r1_interval: int = 16
    pl_weight: float = 2.0
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    style_mixing: float = 0.9
    coverage: float = 0.0                # mode-coverage weight (0: off; see sgvis.train.losses.coverage)
    coverage_interval: int = 4
    coverage_candidates: int = 64
    coverage_res: int = 16
    ema_kimg: float | None = None        # None: batch * 10 / 32
    ema_rampup: float | None = 0.05
    mbstd_group: int = 4
    # augmentation
    augment: str = "ada"                 # ada | fixed | none
    augment_p: float = 0.0
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 100.0
    augment_ops: tuple = ("xflip", "translate", "brightness", "contrast", "saturation", "cutout")
    # running
    resume: str | None = None            # None | "latest" | "auto" | path to a training-state.pt
    grow_from: str | None = None         # a lower-resolution run (folder or training-state.pt) to grow from
    init_from: str | None = None         # a generator file (sgvis format) that G and G_ema start from; D is new
    fade_kimg: float = 4.0               # grown runs: kimg over which D fades from the old input to the new
    device: str = "auto"
    workers: int | None = None
    grid: tuple = (4, 4)
    state_minutes: float = 10.0
    threads: int | None = None           # torch CPU threads (None: torch's default)
    progress: bool = True
    max_steps: int | None = None         # stop after this many iterations (tests, benchmarks)
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Distributed helpers


# ---------------------------------------------------------------------------------------------
# Data


def _real_batches(dataset, batch_gpu: int, seed: int, dist: Dist, start: int, workers: int, device):
    sampler = InfiniteSampler(len(dataset), seed, dist.rank, dist.world, start)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_gpu, sampler=sampler, num_workers=workers,
                                         pin_memory=device.type == "cuda", drop_last=True,
                                         prefetch_factor=2 if workers > 0 else None,
                                         persistent_workers=workers > 0)
    for x in loader:
        yield x.to(device, non_blocking=True).to(torch.float32) / 127.5 - 1


# ---------------------------------------------------------------------------------------------
# Networks and state


def _precision_arch(o: TrainOptions, device: torch.device) -> dict:
    """The architecture entries set by the device and options, not by a model: fp16 blocks, conv clamp, mbstd."""
    fp16_res = o.fp16_res if o.fp16_res is not None else (4 if device.type == "cuda" else 0)
    conv_clamp = o.conv_clamp if o.conv_clamp is not None else (256 if fp16_res > 0 else None)
    return dict(fp16_res=fp16_res, conv_clamp=conv_clamp, mbstd_group=o.mbstd_group)


def _arch_from_options(o: TrainOptions, resolution: int, device: torch.device) -> dict:
    get = lambda k: getattr(o, k) if getattr(o, k) is not None else ARCH_DEFAULTS[k]  # noqa: E731
    return dict(resolution=resolution, channel_base=get("channel_base"), channel_max=get("channel_max"),
                z_dim=get("z_dim"), w_dim=get("w_dim"), map_layers=get("map_layers"), noise=get("noise"),
                **_precision_arch(o, device))


def build_generator(arch: dict):
    """The StyleGAN2 generator (skip architecture) for an architecture dict as stored in a training state."""
    from stylegan.generator import Generator
    mapping_kwargs = dict(num_layers=arch["map_layers"])
    if arch.get("latent_bank"):
        mapping_kwargs.update(latent_bank=arch["latent_bank"], latent_bank_sharpness=arch["latent_bank_sharpness"])
    synthesis_kwargs = dict(channel_base=arch["channel_base"], channel_max=arch["channel_max"],
                            num_fp16_res=arch["fp16_res"], conv_clamp=arch["conv_clamp"], architecture="skip",
                            use_noise=bool(arch.get("noise", True)))
    if arch.get("grown_from"):          # grown runs: the finished low-resolution image is upsampled border-clamped
        synthesis_kwargs["grown_from"] = int(arch["grown_from"])
    return Generator("stylegan2", z_dim=arch["z_dim"], c_dim=0, w_dim=arch["w_dim"],
                     img_resolution=arch["resolution"], img_channels=3,
                     mapping_kwargs=mapping_kwargs, synthesis_kwargs=synthesis_kwargs)


def build_networks(arch: dict):
    """(G, D) for an architecture dict as stored in the training state."""
    from stylegan.stylegan2 import Discriminator
    G = build_generator(arch)
    D = Discriminator(c_dim=0, img_resolution=arch["resolution"], img_channels=3, architecture="resnet",
                      channel_base=arch["channel_base"], channel_max=arch["channel_max"],
                      num_fp16_res=arch["fp16_res"], conv_clamp=arch["conv_clamp"],
                      epilogue_kwargs=dict(mbstd_group_size=arch["mbstd_group"]))
    if arch.get("grow"):
        from sgvis.train.grow import FadeInDiscriminator
        D = FadeInDiscriminator(D, arch["grow"]["from_resolution"])
    return G, D


def export_generator(state_path: str, out_path: str) -> dict:
    """Write the G_ema of a training state (also of a run still in progress) as an sgvis generator file."""
    import json

    import stylegan
    state = load_state(state_path)
    arch = state["arch"] if isinstance(state["arch"], dict) else json.loads(state["arch"])
    G, _ = build_networks(arch)
    G.load_state_dict(state["G_ema"])
    kimg = int(state["cur_nimg"]) / 1000
    stylegan.save(G.eval(), out_path, extra={"kimg": f"{kimg:.3f}", "trained_by": "sgvis train-gan"})
    return {"kimg": kimg, "arch": arch}


def cmd_export_gan(args) -> int:
    if os.path.exists(args.output) and not args.overwrite:
        raise UserError(f"{args.output} already exists; pass --overwrite to replace it")
    info = export_generator(args.state, args.output)
    print(f"wrote {args.output}: G_ema after {info['kimg']:.2f} kimg")
    return 0


def load_state(path: str) -> dict:
    return load_training_state(path, STATE_TAG, STATE_VERSION, "train-gan")


# ---------------------------------------------------------------------------------------------
# Training


class _GeneratorPass(torch.nn.Module):
    """One generator forward for training, as a module (what DistributedDataParallel wraps): mapping with
    optional style mixing (the ws of mix_z from layer `cutoff` on), then synthesis with random noise."""

    def __init__(self, G: torch.nn.Module):
        super().__init__()
        self.G = G

    def forward(self, z: torch.Tensor, mix_z: torch.Tensor | None, cutoff: int | None, update_emas: bool):
        c = torch.zeros([z.shape[0], 0], device=z.device)
        ws = self.G.mapping(z, c, update_emas=update_emas)
        if mix_z is not None:
            ws2 = self.G.mapping(mix_z, c, update_emas=False)
            ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
        return self.G.synthesis(ws, noise_mode="random"), ws


class Trainer:
    """Holds networks, optimisers and counters; `step()` runs one iteration (all phases)."""

    def __init__(self, o: TrainOptions, dataset, device: torch.device, dist: Dist, state: dict | None,
                 grow_state: dict | None = None, init: tuple[dict, dict] | None = None):
        from sgvis.train.augment import AdaptiveP, AugmentPipe
        self.o, self.device, self.dist = o, device, dist
        if state is not None:
            self.arch = json.loads(state["arch"])
        elif init is not None:
            self.arch = init[0]
        else:
            self.arch = _arch_from_options(o, o.resolution or dataset.resolution, device)
            if grow_state is not None:
                from sgvis.train.grow import grown_arch
                self.arch = grown_arch(json.loads(grow_state["arch"]), self.arch["resolution"], o.fade_kimg,
                                       self.arch["fp16_res"], self.arch["conv_clamp"])
        self.G, self.D = build_networks(self.arch)
        self.G_ema = copy.deepcopy(self.G).eval()
        if state is not None:
            self.G.load_state_dict(state["G"])
            self.D.load_state_dict(state["D"])
            self.G_ema.load_state_dict(state["G_ema"])
        elif grow_state is not None:
            from sgvis.train.grow import init_from_lower
            init_from_lower(self.G, self.D, self.G_ema, grow_state)
        elif init is not None:
            self.G.load_state_dict(init[1])
            self.G_ema.load_state_dict(init[1])
        for m in (self.G, self.D, self.G_ema):
            m.to(device)
        self.G.train()
        self.D.train()
        self.G_ema.requires_grad_(False)
        dist.broadcast_module(self.G_ema)
        # The phases that train G run it through G_ddp, those that train D through D_ddp (DistributedDataParallel
        # under torchrun; the plain modules otherwise); the other network runs plain, with its gradients off.
        # A grown D skips its new blocks at first (and its old input layer at the end): unused parameters.
        self.G_pass = _GeneratorPass(self.G)
        self.G_ddp = dist.wrap(self.G_pass, device)
        self.D_ddp = dist.wrap(self.D, device, find_unused=bool(self.arch.get("grow")))

        self.batch_gpu = o.batch // dist.world
        res = self.arch["resolution"]
        self.gamma = o.gamma if o.gamma is not None else 0.0002 * res * res / o.batch
        self.ema_kimg = o.ema_kimg if o.ema_kimg is not None else o.batch * 10 / 32

        def adam(params, lr, interval):
            ratio = interval / (interval + 1) if interval else 1.0
            return torch.optim.Adam(params, lr=lr * ratio, betas=(o.beta1 ** ratio, o.beta2 ** ratio), eps=1e-8)

        self.pl_on = o.pl_weight > 0 and o.pl_interval > 0
        self.r1_on = self.gamma > 0 and o.r1_interval > 0
        self.coverage_on = o.coverage > 0 and o.coverage_interval > 0
        self.opt_G = adam(self.G.parameters(), o.lr, o.pl_interval if self.pl_on else 0)
        self.opt_D = adam(self.D.parameters(), o.d_lr if o.d_lr is not None else o.lr,
                          o.r1_interval if self.r1_on else 0)

        p0 = o.augment_p if o.augment != "none" else 0.0
        self.cur_nimg = 0
        self.iteration = 0
        self.seconds_before = 0.0          # training time of earlier invocations (resumed runs)
        self.seconds_now = 0.0
        self.pl_mean = torch.zeros([], device=device)
        if state is not None:
            for opt, key in ((self.opt_G, "opt_G"), (self.opt_D, "opt_D")):
                wanted = [(g["lr"], g["betas"]) for g in opt.param_groups]
                opt.load_state_dict(state[key])
                for g, (lr, betas) in zip(opt.param_groups, wanted):      # this invocation's options rule
                    g["lr"], g["betas"] = lr, betas
            self.cur_nimg = int(state["cur_nimg"])
            self.iteration = int(state["iteration"])
            self.pl_mean = state["pl_mean"].to(device)
            self.seconds_before = float(state.get("seconds", 0.0))
            if o.augment == "ada":
                p0 = float(state["augment_p"])
            if "rng" in state and dist.world == 1:
                torch.set_rng_state(state["rng"])
        self.augment = AugmentPipe(ops=o.augment_ops, p=p0) if o.augment != "none" else None
        self.ada = AdaptiveP(target=o.ada_target, interval=o.ada_interval, speed_kimg=o.ada_kimg, p=p0) \
            if o.augment == "ada" else None
        self.stats: dict[str, list[float]] = {}

    # -- pieces -------------------------------------------------------------------------------------

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn([n, self.G.z_dim], device=self.device)

    def run_G(self, z: torch.Tensor, update_emas: bool, train: bool = True):
        """(images, ws) for z with style mixing; through G_ddp when G is being trained."""
        mix_z, cutoff = None, None
        if self.o.style_mixing > 0 and self.G.num_ws > 1:
            cutoff = int(torch.randint(1, self.G.num_ws, ()))
            if float(torch.rand(())) < self.o.style_mixing:
                mix_z = torch.randn_like(z)
        return (self.G_ddp if train else self.G_pass)(z, mix_z, cutoff, update_emas)

    def run_D(self, img: torch.Tensor, train: bool = True) -> torch.Tensor:
        if self.augment is not None:
            img = self.augment(img)
        return (self.D_ddp if train else self.D)(img)

    def _record(self, name: str, value) -> None:
        if isinstance(value, torch.Tensor):
            value = float(value.detach().float().mean())
        self.stats.setdefault(name, []).append(float(value))

    @staticmethod
    def _step(module: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        """Replace non-finite gradient values (already averaged over the processes by DDP), take the step."""
        for p in module.parameters():
            if p.grad is not None:
                torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)
        opt.step()

    # -- one iteration --------------------------------------------------------------------------------

    def step(self, real: torch.Tensor) -> None:
        o = self.o
        n = self.batch_gpu
        i = self.iteration
        if self.arch.get("grow"):
            from sgvis.train.grow import set_fade
            self._record("fade_alpha", set_fade(self.D, self.cur_nimg, self.arch["grow"]["fade_kimg"]))

        # G main.
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        fake, _ = self.run_G(self._z(n), update_emas=True)
        loss_g = _losses().g_nonsaturating(self.run_D(fake, train=False))
        loss_g.backward()
        self._step(self.G, self.opt_G)
        self._record("loss_G", loss_g)

        # G path length regularisation.  (x * 0 keeps every parameter in the graph, for DDP's reduction.)
        if self.pl_on and i % o.pl_interval == 0:
            self.opt_G.zero_grad(set_to_none=True)
            m = max(n // o.pl_batch_shrink, 1)
            fake, ws = self.run_G(self._z(m), update_emas=False)
            lengths = _losses().path_lengths(fake, ws)
            mean_len = self.dist.all_reduce_mean_(lengths.detach().mean().clone())
            self.pl_mean.copy_(self.pl_mean.lerp(mean_len, o.pl_decay) if self.pl_mean.item() > 0 else mean_len)
            penalty = (lengths - self.pl_mean).square()
            (penalty.mean() * (o.pl_weight * o.pl_interval) + fake[:, 0, 0, 0].sum() * 0).backward()
            self._step(self.G, self.opt_G)
            self._record("pl_penalty", penalty)
            self._record("pl_mean", self.pl_mean)

        # G coverage: the fake nearest to each real (among a pool drawn without style mixing) is pulled towards it.
        if self.coverage_on and i % o.coverage_interval == 0:
            losses = _losses()
            self.opt_G.zero_grad(set_to_none=True)
            with torch.no_grad():
                pool_z = self._z(o.coverage_candidates)
                pool = torch.cat([self.G_pass(zs, None, None, False)[0] for zs in pool_z.split(max(n, 1))])
                matched = losses.nearest_candidates(real, pool, o.coverage_res)
            fake, _ = self.G_ddp(pool_z[matched], None, None, False)
            loss_cover = losses.coverage(fake, real, o.coverage_res)
            (loss_cover * (o.coverage * o.coverage_interval)).backward()
            self._step(self.G, self.opt_G)
            self._record("coverage", loss_cover)

        # D main: fakes and reals in two backward passes (one DDP reduction, after the second).
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        self.opt_D.zero_grad(set_to_none=True)
        with torch.no_grad():
            fake, _ = self.run_G(self._z(n), update_emas=False, train=False)
        losses = _losses()
        with self.D_ddp.no_sync() if self.dist.enabled else contextlib.nullcontext():
            fake_logits = self.run_D(fake)
            loss_fake = losses.d_logistic_fake(fake_logits)
            loss_fake.backward()
        real_logits = self.run_D(real)
        loss_real = losses.d_logistic_real(real_logits)
        loss_real.backward()
        self._step(self.D, self.opt_D)
        self._record("loss_D", loss_fake.detach() + loss_real.detach())
        self._record("D_real", real_logits)
        self._record("D_fake", fake_logits)
        if self.ada is not None:
            self.ada.accumulate(real_logits)
            if self.ada.ready():
                self.augment.p = self.ada.update(lambda v: self.dist.sum_floats(v, self.device))
                self._record("ada_rt", self.ada.last_rt)

        # D R1 regularisation.
        if self.r1_on and i % o.r1_interval == 0:
            self.opt_D.zero_grad(set_to_none=True)
            real_tmp = real.detach().requires_grad_(True)
            logits = self.run_D(real_tmp)
            penalty = _losses().r1_penalty(real_tmp, logits)
            (penalty.mean() * (self.gamma / 2 * o.r1_interval) + logits.sum() * 0).backward()
            self._step(self.D, self.opt_D)
            self._record("r1_penalty", penalty)

        # G_ema.
        self.cur_nimg += o.batch
        self.iteration += 1
        with torch.no_grad():
            ema_nimg = self.ema_kimg * 1000
            if o.ema_rampup:
                ema_nimg = min(ema_nimg, self.cur_nimg * o.ema_rampup)
            beta = 0.5 ** (o.batch / max(ema_nimg, 1e-8))
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.copy_(p.detach().lerp(p_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)
        self._record("augment_p", self.augment.p if self.augment is not None else 0.0)

    # -- outputs ------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return dict(format=STATE_TAG, version=STATE_VERSION, arch=json.dumps(self.arch),
                    options=json.dumps(_jsonable_options(self.o)),
                    G=self.G.state_dict(), D=self.D.state_dict(), G_ema=self.G_ema.state_dict(),
                    opt_G=self.opt_G.state_dict(), opt_D=self.opt_D.state_dict(),
                    cur_nimg=self.cur_nimg, iteration=self.iteration, pl_mean=self.pl_mean.detach().cpu(),
                    augment_p=float(self.augment.p if self.augment is not None else 0.0),
                    seconds=self.seconds_before + self.seconds_now, rng=torch.get_rng_state())

    @torch.no_grad()
    def samples(self, z: torch.Tensor) -> torch.Tensor:
        out = []
        c = torch.zeros([0], device=self.device)
        for chunk in z.split(max(self.batch_gpu, 1)):
            ws = self.G_ema.mapping(chunk.to(self.device), c.reshape(chunk.shape[0], 0))
            out.append(self.G_ema.synthesis(ws, noise_mode="const").cpu())
        return torch.cat(out)

    def pop_stats(self) -> dict:
        s = {k: float(np.mean(v)) for k, v in self.stats.items() if v}
        self.stats = {}
        return s


def _losses():
    from sgvis.train import losses
    return losses


def _jsonable_options(o: TrainOptions) -> dict:
    d = asdict(o)
    d["augment_ops"] = list(o.augment_ops)
    d["grid"] = list(o.grid)
    return d


def _validate(o: TrainOptions, world: int) -> None:
    if o.batch < 1 or o.batch % world:
        raise UserError(f"--batch {o.batch} must be a positive multiple of the number of processes ({world})")
    batch_gpu = o.batch // world
    g = min(o.mbstd_group, batch_gpu)
    if batch_gpu % g:
        raise UserError(f"--batch per process ({batch_gpu}) must be divisible by the minibatch-std group "
                        f"({g}); use a multiple of {o.mbstd_group}")
    for name in ("kimg", "lr"):
        if getattr(o, name) <= 0:
            raise UserError(f"--{name} must be > 0")
    if o.threads is not None and o.threads < 1:
        raise UserError(f"--threads must be >= 1, got {o.threads}")
    if o.augment not in ("ada", "fixed", "none"):
        raise UserError(f"--augment must be ada, fixed or none, got {o.augment}")
    if not 0 <= o.augment_p <= 1:
        raise UserError(f"--augment-p must be in [0, 1], got {o.augment_p}")
    if not 0 <= o.style_mixing <= 1:
        raise UserError(f"--style-mixing must be in [0, 1], got {o.style_mixing}")
    if o.coverage < 0:
        raise UserError(f"--coverage must be >= 0, got {o.coverage}")
    if o.coverage > 0 and (o.coverage_interval < 1 or o.coverage_candidates < 1 or o.coverage_res < 1):
        raise UserError("--coverage-interval, --coverage-candidates and --coverage-res must be >= 1")
    if o.resolution is not None and (o.resolution < 4 or o.resolution & (o.resolution - 1)):
        raise UserError(f"--resolution must be a power of two >= 4, got {o.resolution}")
    for name in ("channel_base", "channel_max", "z_dim", "w_dim", "map_layers"):
        v = getattr(o, name)
        if v is not None and v < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {v}")


def _check_resume_conflicts(o: TrainOptions, arch: dict, what: str = "resumed",
                            keys=("resolution", "channel_base", "channel_max", "z_dim", "w_dim", "map_layers",
                                  "fp16_res", "conv_clamp", "noise")) -> None:
    for k in keys:
        v, have = getattr(o, k), arch.get(k, ARCH_DEFAULTS.get(k))
        if v is not None and v != have:
            if isinstance(v, bool):
                v, have = ("on" if v else "off"), ("on" if have else "off")
            raise UserError(f"--{k.replace('_', '-')} {v} conflicts with the run being {what} ({have}); "
                            f"leave it out to keep the run's architecture")


def _load_init_source(o: TrainOptions, device: torch.device) -> tuple[dict, dict]:
    """(architecture, G's state dict) of the generator file named by --init-from, checked against the options:
    a StyleGAN2 generator of the kind train-gan and train-glo build (skip architecture, unconditional, RGB)."""
    import stylegan
    if not os.path.isfile(o.init_from):
        raise UserError(f"--init-from {o.init_from}: no such file; give a generator written by sgvis train-gan, "
                        f"train-glo or export-gan")
    try:
        G = stylegan.load(o.init_from)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one line
        raise UserError(f"--init-from {o.init_from}: cannot read it as a generator ({str(e).splitlines()[0]})") \
            from None
    cfg, syn, mp = G.config, G.config.get("synthesis_kwargs", {}), G.config.get("mapping_kwargs", {})
    architecture = syn.get("architecture", "skip")
    if cfg.get("kind") != "stylegan2" or G.c_dim != 0 or G.img_channels != 3 or architecture != "skip":
        raise UserError(f"--init-from {o.init_from}: train-gan fine-tunes unconditional RGB StyleGAN2 generators "
                        f"with the skip architecture (sgvis's own models); this one is {cfg.get('kind')}, "
                        f"{G.c_dim} classes, {G.img_channels} channels, {architecture}")
    arch = dict(resolution=int(G.img_resolution), channel_base=int(syn.get("channel_base", 32768)),
                channel_max=int(syn.get("channel_max", 512)), z_dim=int(G.z_dim), w_dim=int(G.w_dim),
                map_layers=int(mp.get("num_layers", 8)), noise=bool(syn.get("use_noise", True)),
                **_precision_arch(o, device))
    if syn.get("grown_from"):
        arch["grown_from"] = int(syn["grown_from"])
    if getattr(G.mapping, "latent_bank", 0):
        arch.update(latent_bank=int(G.mapping.latent_bank),
                    latent_bank_sharpness=float(G.mapping.latent_bank_sharpness))
    _check_resume_conflicts(o, arch, "initialised from", keys=("resolution", "channel_base", "channel_max", "z_dim",
                                                               "w_dim", "map_layers", "noise"))
    probe = build_generator(arch)
    try:
        probe.load_state_dict(G.state_dict())
    except RuntimeError as e:
        raise UserError(f"--init-from {o.init_from}: its layers differ from what train-gan builds "
                        f"({str(e).splitlines()[0]})") from None
    return arch, G.state_dict()


def _load_grow_source(o: TrainOptions, resolution: int) -> dict:
    """The training state named by --grow-from (a run folder or its training-state.pt), checked against the
    grown run's options."""
    from sgvis.train.grow import grown_arch
    path = o.grow_from
    if os.path.isdir(path):
        path = os.path.join(path, STATE_FILE)
    if not os.path.isfile(path):
        raise UserError(f"--grow-from {o.grow_from}: no {STATE_FILE} there; give a train-gan run folder or its "
                        f"{STATE_FILE}")
    state = load_state(path)
    low = json.loads(state["arch"])
    _check_resume_conflicts(o, low, "grown", keys=("channel_base", "channel_max", "z_dim", "w_dim", "map_layers",
                                                   "noise"))
    grown_arch(low, resolution, o.fade_kimg, 0, None)          # validates the resolutions and --fade-kimg
    return state


def train(o: TrainOptions) -> dict:
    """Run training; returns a summary (final kimg, paths, last stats).  Raises UserError for bad input."""
    from tqdm import tqdm
    import stylegan
    from sgvis.data.dataset import open_dataset

    dist = Dist()
    _validate(o, dist.world)
    device = resolve_device(o.device, dist)
    dist.init(device.type)
    try:
        with training_process(device, o.threads):
            return _train(o, dist, device, tqdm, stylegan, open_dataset)
    finally:
        dist.close()


def _train(o, dist, device, tqdm, stylegan, open_dataset) -> dict:
    outdir = os.path.abspath(o.outdir)
    state_path = os.path.join(outdir, STATE_FILE)
    dataset = open_dataset(o.data)
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise UserError(f"--outdir {o.outdir} is a file, not a folder")

    # Resume or fresh start.
    state = None
    if o.resume in ("latest", "auto"):
        if os.path.exists(state_path):
            state = load_state(state_path)
        elif o.resume == "latest":
            raise UserError(f"--resume: no {STATE_FILE} in {o.outdir} to resume from")
    elif o.resume:
        state = load_state(o.resume)
    elif os.path.exists(state_path):
        raise UserError(f"{o.outdir} already holds a training run ({STATE_FILE}); pass --resume to continue it or "
                        f"choose another --outdir")
    init = None
    if state is not None:
        arch = json.loads(state["arch"])
        _check_resume_conflicts(o, arch)
        res = arch["resolution"]
    elif o.init_from:
        if o.grow_from:
            raise UserError("--init-from and --grow-from both give the starting generator; use one")
        init = _load_init_source(o, device)
        res = init[0]["resolution"]
    else:
        res = o.resolution or dataset.resolution
    if dataset.resolution != res:
        what = "the resumed run" if state is not None else "--init-from's model" if init else "--resolution"
        raise UserError(f"resolution mismatch: {o.data} holds {dataset.resolution}x{dataset.resolution} images but "
                        f"{what} is {res}x{res}; rebuild the dataset with 'sgvis dataset --resolution {res}'")
    grow_state = _load_grow_source(o, res) if state is None and o.grow_from else None

    if dist.main:
        check_outdir(outdir)
    torch.manual_seed(o.seed * 1000 + dist.rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    trainer = Trainer(o, dataset, device, dist, state, grow_state, init)
    total_nimg = int(round(o.kimg * 1000))
    if dist.main:
        with open(os.path.join(outdir, "training_options.json"), "w") as f:
            json.dump(dict(options=_jsonable_options(o), arch=trainer.arch, gamma=trainer.gamma,
                           ema_kimg=trainer.ema_kimg, world_size=dist.world, device=str(device),
                           dataset=dict(path=os.path.abspath(o.data), count=len(dataset),
                                        manifest=dataset.manifest)), f, indent=1)

    workers = o.workers if o.workers is not None else (2 if device.type == "cuda" else 0)
    reals = _real_batches(dataset, trainer.batch_gpu, o.seed, dist, trainer.cur_nimg, workers, device)
    gw, gh = o.grid
    grid_z = torch.randn([gw * gh, trainer.G.z_dim], generator=torch.Generator().manual_seed(o.seed))
    manifest = dataset.manifest
    extra = dict(trained_with="sgvis train-gan", dataset_source=str(manifest.get("source")),
                 dataset_licence=str(manifest.get("licence")), seed=o.seed)

    def write_snapshot(name: str) -> str:
        path = os.path.join(outdir, name)
        stylegan.save(trainer.G_ema, path, extra=dict(extra, kimg=f"{trainer.cur_nimg / 1000:.3f}"))
        return path

    def write_state() -> None:
        atomic_torch_save(trainer.state_dict(), state_path)

    if dist.main and state is None:
        idx = np.random.default_rng(o.seed).choice(len(dataset), size=min(gw * gh, len(dataset)), replace=False)
        real_grid = torch.stack([dataset[int(i)] for i in idx]).float() / 127.5 - 1
        save_image_grid(real_grid, (gw, gh), os.path.join(outdir, "reals.png"))
        save_image_grid(trainer.samples(grid_z), (gw, gh), os.path.join(outdir, "fakes-init.png"))

    start_nimg = trainer.cur_nimg
    start_time = time.time()
    tick_start_nimg, tick_start_time = trainer.cur_nimg, time.time()
    last_state_time = time.time()
    snap_nimg = int(round(o.snap * 1000)) if o.snap > 0 else 0
    tick_nimg = max(int(round(o.tick * 1000)), 1)
    next_snap = (trainer.cur_nimg // snap_nimg + 1) * snap_nimg if snap_nimg else None
    next_tick = (trainer.cur_nimg // tick_nimg + 1) * tick_nimg
    last_stats: dict = {}
    snapshots: list[str] = []
    steps = 0
    bar = tqdm(total=o.kimg, initial=trainer.cur_nimg / 1000, unit="kimg", disable=not (o.progress and dist.main),
               dynamic_ncols=True, desc="train-gan",
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.3f}/{total:g} kimg [{elapsed}<{remaining}{postfix}]")
    bar_start = (time.time(), trainer.cur_nimg)
    stats_text = ""
    log_path = os.path.join(outdir, "log.jsonl")
    try:
        while trainer.cur_nimg < total_nimg and (o.max_steps is None or steps < o.max_steps):
            trainer.step(next(reals))
            steps += 1
            trainer.seconds_now = time.time() - start_time
            bar.n = min(trainer.cur_nimg / 1000, o.kimg)
            rate = (trainer.cur_nimg - bar_start[1]) / 1000 / max(time.time() - bar_start[0], 1e-9)
            bar.set_postfix_str(f"{rate:.4g} kimg/s{stats_text}", refresh=False)
            bar.refresh()
            done = trainer.cur_nimg >= total_nimg or (o.max_steps is not None and steps >= o.max_steps)

            if trainer.cur_nimg >= next_tick or done:
                now = time.time()
                stats = trainer.pop_stats()
                kimg_s = (trainer.cur_nimg - tick_start_nimg) / 1000 / max(now - tick_start_time, 1e-9)
                last_stats = dict(kimg=trainer.cur_nimg / 1000, iteration=trainer.iteration,
                                  sec=trainer.seconds_before + now - start_time, kimg_per_s=kimg_s, **stats)
                stats_text = (f", G {stats.get('loss_G', math.nan):.3f} D {stats.get('loss_D', math.nan):.3f} "
                              f"p {stats.get('augment_p', 0):.3f}")
                if dist.main:
                    with open(log_path, "a") as f:
                        f.write(json.dumps(last_stats) + "\n")
                tick_start_nimg, tick_start_time = trainer.cur_nimg, now
                next_tick = (trainer.cur_nimg // tick_nimg + 1) * tick_nimg

            snap_due = next_snap is not None and trainer.cur_nimg >= next_snap
            if snap_due or done:
                if dist.main:
                    kimg_int = trainer.cur_nimg // 1000
                    save_image_grid(trainer.samples(grid_z), (gw, gh),
                                     os.path.join(outdir, f"fakes{kimg_int:06d}.png"))
                    if snap_due:
                        snapshots.append(write_snapshot(f"network-snapshot-{kimg_int:06d}.safetensors"))
                    write_state()
                    last_state_time = time.time()
                if snap_due:
                    next_snap = (trainer.cur_nimg // snap_nimg + 1) * snap_nimg
                dist.barrier()
            elif dist.main and o.state_minutes > 0 and time.time() - last_state_time > o.state_minutes * 60:
                write_state()
                last_state_time = time.time()
    except KeyboardInterrupt:
        if dist.main and trainer.cur_nimg > start_nimg:
            write_state()
            print(f"\ninterrupted: saved {state_path} at {trainer.cur_nimg / 1000:.3f} kimg; "
                  f"continue with --resume", file=sys.stderr)
        raise
    finally:
        bar.close()

    final = None
    if dist.main and trainer.cur_nimg >= total_nimg:
        final = write_snapshot(FINAL_NAME)
    elapsed = time.time() - start_time
    return dict(kimg=trainer.cur_nimg / 1000, iterations=trainer.iteration, steps=steps, outdir=outdir,
                state=state_path, final=final, snapshots=snapshots, stats=last_stats, seconds=elapsed,
                kimg_per_s=(trainer.cur_nimg - start_nimg) / 1000 / max(elapsed, 1e-9),
                resumed_from=start_nimg if state is not None else None, trainer=trainer)


# ---------------------------------------------------------------------------------------------
# CLI


def options_from_args(args) -> TrainOptions:
    kw = {}
    names = {f.name for f in fields(TrainOptions)}
    for k, v in vars(args).items():
        if k in names:
            kw[k] = v
    kw["grid"] = parse_grid(args.grid)
    if getattr(args, "noise", None) is not None:
        kw["noise"] = args.noise == "on"
    if args.augment_ops:
        kw["augment_ops"] = tuple(s.strip() for s in args.augment_ops.split(",") if s.strip())
        from sgvis.train.augment import DEFAULT_OPS
        bad = [s for s in kw["augment_ops"] if s not in DEFAULT_OPS]
        if bad:
            raise UserError(f"--augment-ops: unknown op {bad[0]!r}; choose from {', '.join(DEFAULT_OPS)}")
    else:
        kw.pop("augment_ops", None)
    kw["progress"] = not args.quiet
    return TrainOptions(**kw)


def cmd_train_gan(args) -> int:
    o = options_from_args(args)
    s = train(o)
    if int(os.environ.get("RANK", "0")) == 0:
        if s["final"]:
            print(f"done: {s['kimg']:.3f} kimg in {s['seconds']:.0f} s ({s['kimg_per_s']:.4f} kimg/s); "
                  f"final model {s['final']}")
        else:
            print(f"stopped at {s['kimg']:.3f} kimg; state in {s['state']} (continue with --resume)")
    return 0
