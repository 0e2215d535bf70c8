import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from stylegan.generator import Generator  # noqa: E402

FIXED_BUFFERS = ("resample_filter", "up_filter", "down_filter", "freqs", "phases")


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every weight a non-initial random value so a wrong mapping cannot hide (noise strengths start
    at zero, affine biases at one, magnitude EMAs at one...). Designed filters stay as built."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            leaf = name.split(".")[-1]
            if leaf in FIXED_BUFFERS or t is None:
                continue
            if leaf == "transform":
                a, tx, ty = 0.3, 0.1, -0.2
                t.copy_(torch.tensor([[math.cos(a), -math.sin(a), tx], [math.sin(a), math.cos(a), ty], [0, 0, 1]]))
            elif leaf == "magnitude_ema":
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif leaf == "noise_strength":
                t.copy_(0.3 * torch.randn(t.shape, generator=g))
            elif leaf == "bias" and ".affine." in f".{name}":
                t.copy_(1 + 0.1 * torch.randn(t.shape, generator=g))
            elif leaf == "bias":
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif leaf == "w_avg":
                t.copy_(0.5 * torch.randn(t.shape, generator=g))
            elif name.startswith("mapping.fc"):
                # Stored mapping weights are scaled by 1/lr_multiplier (0.01), as in trained models; without
                # that, W would have almost no spread and every z would give the same image.
                scale = 100.0 if leaf == "weight" else 10.0
                t.copy_(scale * torch.randn(t.shape, generator=g))
            else:
                t.copy_(torch.randn(t.shape, generator=g))
    return module


def tiny_generator(kind="stylegan2", c_dim=0, resolution=32, seed=0, **synthesis_kwargs) -> Generator:
    if kind == "stylegan2":
        sk = dict(channel_base=512, channel_max=32)
    else:
        sk = dict(channel_base=1024, channel_max=32, num_layers=6, margin_size=4)  # all layer kinds, less time
    sk.update(synthesis_kwargs)
    torch.manual_seed(seed)
    G = Generator(kind, z_dim=32, c_dim=c_dim, w_dim=32, img_resolution=resolution, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=sk)
    return randomize(G, seed).eval().requires_grad_(False)


def inputs(G, n=3, seed=123):
    z = torch.randn([n, G.z_dim], generator=torch.Generator().manual_seed(seed))
    c = torch.zeros([n, G.c_dim])
    if G.c_dim:
        c[torch.arange(n), torch.tensor([0, 1, G.c_dim - 1])[:n]] = 1
    return z, c


TRUNCATION_CASES = [(1.0, None), (0.7, None), (0.5, 2)]


def assert_images_close(img, ref):
    """The exactness bar: max|diff| <= 1e-4 * max|ref| + 1e-6."""
    assert img.shape == ref.shape
    diff = (img - ref).abs().max().item()
    bound = 1e-4 * ref.abs().max().item() + 1e-6
    assert diff <= bound, f"max|diff| {diff:.3g} exceeds {bound:.3g}"


@pytest.fixture
def marker(tmp_path):
    """A path that embedded code in test checkpoints would create if it were ever executed."""
    path = tmp_path / "EXECUTED"
    yield str(path)
    assert not path.exists(), "code embedded in a checkpoint was executed"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: thread start-up and barrier costs dominate, and two OpenMP threads on a shared 2-core machine
    spin-wait on each other; one thread is faster.  Correctness does not depend on the thread count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
