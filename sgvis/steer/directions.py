"""Principal directions of a generator's W space, computed once per model and cached on disk.

    dirs = load_or_compute_directions(G)          # cached under default_cache_dir() by model hash
    dirs.components[k]                            # unit vector [w_dim], k-th principal direction
    dirs.std[k]                                   # standard deviation of W along it

`n_samples` z are drawn from a seeded normal distribution (and, for conditional models, uniformly random
classes), mapped through `G.mapping` in chunks (no truncation), and the centred W samples are decomposed with
an SVD.  Signs are fixed (the largest-magnitude entry of each component is positive) so the result does not
depend on the SVD implementation's sign choice.

The cache key is a SHA-256 of the mapping network's weights and buffers (names, shapes and bytes), so
renaming or re-saving a checkpoint reuses the cache and changing any weight does not.  Files are written
atomically (temporary file in the same folder + rename); an unreadable or inconsistent cache file is
recomputed and replaced; an unwritable cache folder only costs the recomputation next time.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np
import torch

CACHE_FORMAT = 1

# Number of times `compute_directions` ran in this process (tests use it to prove the cache is used).
compute_calls = 0


def default_cache_dir() -> str:
    """$SGVIS_CACHE, else $XDG_CACHE_HOME/sgvis, else ~/.cache/sgvis."""
    if os.environ.get("SGVIS_CACHE"):
        return os.environ["SGVIS_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sgvis")


def model_hash(G) -> str:
    """Hex SHA-256 of the mapping network's state (what W's distribution depends on)."""
    h = hashlib.sha256()
    h.update(f"c_dim={G.c_dim};z_dim={G.z_dim};w_dim={G.w_dim}".encode())
    if getattr(G.mapping, "latent_bank", 0):      # the bank's entries are in the state; its sharpness is not
        h.update(f";latent_bank_sharpness={G.mapping.latent_bank_sharpness!r}".encode())
    for name, t in sorted(G.mapping.state_dict().items()):
        if t is None:
            continue
        a = t.detach().to("cpu", torch.float32).contiguous().numpy()
        h.update(name.encode())
        h.update(str(tuple(a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class Directions:
    components: torch.Tensor     # [K, w_dim] orthonormal rows, by decreasing variance
    std: torch.Tensor            # [K] standard deviation of W along each component
    mean: torch.Tensor           # [w_dim] mean of the sampled W
    sigma: float                 # sqrt(total variance of W): the typical distance of a sample from the mean
    model_hash: str

    @property
    def num_components(self) -> int:
        return int(self.components.shape[0])

    def to(self, device) -> "Directions":
        return Directions(self.components.to(device), self.std.to(device), self.mean.to(device), self.sigma,
                          self.model_hash)


def _sample_w(G, n_samples: int, seed: int, chunk: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    with torch.no_grad():
        for start in range(0, n_samples, chunk):
            n = min(chunk, n_samples - start)
            z = torch.randn([n, G.z_dim], generator=gen).to(G.device) if G.z_dim > 0 else None
            c = torch.zeros([n, G.c_dim], device=G.device)
            if G.c_dim > 0:
                cls = torch.randint(0, G.c_dim, [n], generator=gen).to(G.device)
                c[torch.arange(n, device=G.device), cls] = 1
            ws = G.mapping(z, c, truncation_psi=1)
            out.append((ws[:, 0] if ws.ndim == 3 else ws).to("cpu", torch.float64))
    return torch.cat(out)


def compute_directions(G, n_samples: int = 4096, seed: int = 0, chunk: int = 512) -> Directions:
    """PCA of W from `n_samples` mapped z.  Keeps min(w_dim, n_samples - 1) components."""
    global compute_calls
    compute_calls += 1
    w = _sample_w(G, int(n_samples), seed, chunk)
    mean = w.mean(dim=0)
    x = w - mean
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    k = min(G.w_dim, max(1, int(n_samples) - 1))
    vh, s = vh[:k], s[:k]
    idx = vh.abs().argmax(dim=1)
    signs = torch.sign(vh[torch.arange(k), idx])
    signs[signs == 0] = 1
    vh = vh * signs[:, None]
    std = s / max(int(n_samples) - 1, 1) ** 0.5
    sigma = float(x.square().sum(dim=1).mean().sqrt())
    return Directions(vh.float(), std.float(), mean.float(), sigma, model_hash(G))


def cache_path(cache_dir: str, mhash: str, n_samples: int, seed: int) -> str:
    return os.path.join(cache_dir, f"wpca-{mhash[:24]}-n{int(n_samples)}-s{int(seed)}.npz")


def _write_atomic(path: str, d: Directions) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".wpca-", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, components=d.components.cpu().numpy(), std=d.std.cpu().numpy(),
                     mean=d.mean.cpu().numpy(), sigma=np.float64(d.sigma), model_hash=np.array(d.model_hash),
                     format=np.int64(CACHE_FORMAT))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read(path: str, mhash: str, w_dim: int) -> Directions | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) != CACHE_FORMAT or str(z["model_hash"]) != mhash:
                return None
            comp, std, mean = z["components"], z["std"], z["mean"]
            sigma = float(z["sigma"])
    except Exception:
        return None
    if comp.ndim != 2 or comp.shape[1] != w_dim or std.shape != (comp.shape[0],) or mean.shape != (w_dim,):
        return None
    if not (np.all(np.isfinite(comp)) and np.all(np.isfinite(std)) and np.isfinite(sigma)):
        return None
    return Directions(torch.from_numpy(comp.astype(np.float32)), torch.from_numpy(std.astype(np.float32)),
                      torch.from_numpy(mean.astype(np.float32)), sigma, mhash)


def load_or_compute_directions(G, cache_dir: str | None = None, n_samples: int = 4096, seed: int = 0,
                               chunk: int = 512) -> Directions:
    """Directions for `G` on G's device, from the cache when present, else computed and cached."""
    cache_dir = cache_dir or default_cache_dir()
    mhash = model_hash(G)
    path = cache_path(cache_dir, mhash, n_samples, seed)
    d = _read(path, mhash, G.w_dim) if os.path.exists(path) else None
    if d is None:
        d = compute_directions(G, n_samples=n_samples, seed=seed, chunk=chunk)
        try:
            _write_atomic(path, d)
        except OSError as e:
            warnings.warn(f"sgvis: could not cache W directions in {cache_dir} ({e}); they will be recomputed "
                          f"next time (set SGVIS_CACHE to a writable folder)")
    return d.to(G.device)
