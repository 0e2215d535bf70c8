"""What the trainers share: processes (one or torchrun), the device, the run folder, sample grids."""
from __future__ import annotations

import os

import torch

from sgvis.errors import UserError
from stylegan.atomic import write_atomically


class Dist:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self.dist = None

    def init(self, device_type: str):
        if not self.enabled:
            return
        import torch.distributed as dist
        self.dist = dist
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_reduce_mean_(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            self.dist.all_reduce(t)
            t /= self.world
        return t

    def sum_floats(self, values: list[float], device) -> list[float]:
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        self.dist.all_reduce(t)
        return t.tolist()

    def average_gradients(self, module: torch.nn.Module) -> None:
        """Mean of every parameter's gradient over the processes, in one all-reduce.  A missing gradient counts
        as zeros, so every process takes part in the same collective even when a loss term was absent on one."""
        if not self.enabled:
            return
        params = list(module.parameters())
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
        self.all_reduce_mean_(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset: offset + n].view_as(p).clone()
            offset += n

    def wrap(self, module: torch.nn.Module, device: torch.device, find_unused: bool = False) -> torch.nn.Module:
        """The module under DistributedDataParallel (gradients all-reduced in buckets during backward, overlapping
        the computation); the module itself when there is one process."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel
        return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None,
                                       find_unused_parameters=find_unused)

    def broadcast_module(self, module: torch.nn.Module) -> None:
        if self.enabled:
            for t in list(module.parameters()) + list(module.buffers()):
                self.dist.broadcast(t.data, src=0)

    def barrier(self):
        if self.enabled:
            self.dist.barrier()

    def close(self):
        """Leave the process group together: a barrier first, so that no process tears down its gloo pairs
        while another is still in its last collective (that peer then aborts with SIGABRT)."""
        if self.enabled and self.dist.is_initialized():
            self.dist.barrier()
            self.dist.destroy_process_group()


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless shuffled indices; each rank takes every world-th index of a shared permutation."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, start: int = 0):
        self.n, self.seed, self.rank, self.world, self.start = n, seed, rank, world, start

    def __iter__(self):
        epoch = 0
        while True:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.start * 7919 + epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
            if self.n < self.world:
                perm = perm * self.world
            yield from perm[self.rank::self.world]
            epoch += 1


def save_image_grid(images: torch.Tensor, grid: tuple[int, int], path: str) -> None:
    from PIL import Image
    gw, gh = grid
    x = images[: gw * gh].detach().to("cpu", torch.float32)
    n, c, h, w = x.shape
    if n < gw * gh:
        x = torch.cat([x, torch.full([gw * gh - n, c, h, w], -1.0)])
    x = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    x = x.reshape(gh, gw, c, h, w).permute(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c).numpy()
    write_atomically(path, lambda tmp: Image.fromarray(x).save(tmp, format="PNG"), suffix=".png")


def resolve_device(name: str, dist: Dist | None = None) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available in this torch build / machine")
        if dist is not None and dist.enabled:
            device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device


def parse_grid(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        if w < 1 or h < 1:
            raise ValueError
    except ValueError:
        raise UserError(f"--grid must look like 4x4, got {text!r}") from None
    return w, h


def run_steps(trainer, batches, total_steps: int, *, bar, checkpoint, checkpoint_every: int, log=None,
              log_file=None, preview=None, preview_every: int = 0, postfix=None) -> dict:
    """The loop of the step trainers (train-encoder, train-mapper): `trainer.step(batch)` until
    `trainer.step_count` reaches total_steps, a CSV row per step (`log`, a csv.DictWriter on log_file), the
    progress bar, `checkpoint()` every checkpoint_every steps and at the end, `preview(step)` every preview_every
    steps and at the end (after a checkpoint, so that it shows the saved weights). Ctrl-C and SIGTERM (as
    KeyboardInterrupt) checkpoint before they end the run. Returns the last step's figures."""
    import time
    started = time.perf_counter()
    last: dict = {}
    try:
        while trainer.step_count < total_steps:
            last = trainer.step(next(batches))
            step = trainer.step_count
            if log is not None:
                log.writerow({"step": step, "seconds": round(time.perf_counter() - started, 3), **last})
                log_file.flush()
            bar.update(1)
            if postfix is not None:
                bar.set_postfix(postfix(last))
            saved = step % int(checkpoint_every) == 0 or step == total_steps
            if saved:
                checkpoint()
            if preview is not None and preview_every > 0 and (step % preview_every == 0 or step == total_steps):
                if not saved:
                    checkpoint()
                preview(step)
    except KeyboardInterrupt:
        checkpoint()
        raise
    return last


def start_processes(device_name: str, batch: int, batch_name: str) -> tuple["Dist", torch.device]:
    """This process's place in the run (one process, or one of torchrun's) and its device; the batch must split
    evenly over the processes (`batch_name`: the setting or flag, for the one-line error)."""
    dist = Dist()
    device = resolve_device(device_name, dist)
    dist.init(device.type)
    if int(batch) % dist.world:
        raise UserError(f"{batch_name} {batch} must be a multiple of the number of processes ({dist.world})")
    return dist, device
