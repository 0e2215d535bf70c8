"""`sgvis train-glo` on CPU with a tiny network: the pyramid loss, PCA latents, reconstruction that improves,
sampling from random z, resume, growing and bad input."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import stylegan
from sgvis import dataset as ds
from sgvis import train_glo
from sgvis.errors import UserError
from test_grow import upsampled_like
from test_safety_and_errors import _one_clear_line, run_cli as _run_cli

TINY = ["--channel-base", "128", "--channel-max", "16", "--z-dim", "16", "--w-dim", "16", "--map-layers", "2",
        "--batch", "4", "--grid", "2x2", "--quiet", "--threads", "1"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The same 12 procedural images at 8x8 and 16x16."""
    root = tmp_path_factory.mktemp("glo-data")
    ds.build_dataset(root / "p16.zip", resolution=16, procedural=12, seed=3, workers=1, progress=False)
    ds.build_dataset(root / "p8.zip", resolution=8, images=[str(root / "p16.zip")], min_size=8, workers=1,
                     progress=False)
    return root


def run_cli(*args):
    """An in-process `sgvis` command: CompletedProcess (returncode, stdout, stderr)."""
    return _run_cli(*[str(a) for a in args])


def read_log(outdir):
    with open(os.path.join(outdir, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_pyramid_l1_counts_every_level_alike():
    torch.manual_seed(0)
    a = torch.rand(2, 3, 16, 16)
    assert float(train_glo.pyramid_l1(a, a)) == 0.0
    # A constant offset is the same error at every level.
    assert float(train_glo.pyramid_l1(a + 0.25, a)) == pytest.approx(0.25, abs=1e-6)
    # Fine checkerboard noise with the right mean is cheap (it vanishes from the coarse levels); a wrong layout
    # with the same per-pixel error is not.
    checker = (torch.arange(16)[:, None] + torch.arange(16)[None]) % 2 * 2 - 1.0
    noisy = a + 0.3 * checker
    half = a.clone()
    half[..., :8] += 0.3
    half[..., 8:] -= 0.3
    assert float((noisy - a).abs().mean()) == pytest.approx(float((half - a).abs().mean()))
    assert float(train_glo.pyramid_l1(half, a)) > 2 * float(train_glo.pyramid_l1(noisy, a))


def test_pca_codes_sit_on_the_sphere_and_keep_neighbours_close():
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(6, 3, 16, 16, generator=gen) * 255
    near = (base + torch.rand(6, 3, 16, 16, generator=gen) * 10).clamp(0, 255)
    codes = train_glo.pca_codes(torch.cat([base, near]), dim=8, seed=0)
    assert codes.shape == (12, 8)
    assert torch.allclose(codes.norm(dim=1), torch.full([12], 8 ** 0.5), atol=1e-4)
    d = torch.cdist(codes[:6], codes[6:])
    assert bool((d.argmin(dim=1) == torch.arange(6)).all())      # each image's nearest code is its near twin


def test_train_reconstructs_samples_and_renders(data, tmp_path):
    out = tmp_path / "run"
    r = run_cli("train-glo", "--data", data / "p16.zip", "--outdir", out, "--epochs", "12", "--lr", "0.01", *TINY)
    assert r.returncode == 0, r.stderr
    log = read_log(out)
    assert len(log) == 12 and log[-1]["step"] == 36                 # 12 images / batch 4 = 3 steps per epoch
    assert all(np.isfinite(e["loss"]) for e in log)
    assert log[-1]["loss"] < 0.7 * log[0]["loss"]                   # it learns to reconstruct
    for name in ("reals.png", "recon-001200.png", "samples.png", "training-state.pt"):
        assert (out / name).is_file(), name
    # The model is an ordinary generator file: random z give different images, and render --model uses it.
    G = stylegan.load(str(out / "network-final.safetensors"))
    with torch.no_grad():
        imgs = G(torch.randn([4, G.z_dim], generator=torch.Generator().manual_seed(1)))
    assert imgs.shape == (4, 3, 16, 16) and torch.isfinite(imgs).all()
    assert float(imgs.std(dim=0).mean()) > 0.01
    # The learned latents draw their images better than random z do.
    state = train_glo.load_state(str(out / "training-state.pt"))
    reals = torch.stack([ds.open_dataset(str(data / "p16.zip"))[i] for i in range(12)]).float() / 127.5 - 1
    with torch.no_grad():
        own = train_glo.synthesize(G, state["codes"])
        other = train_glo.synthesize(G, state["codes"].roll(1, dims=0))
    assert float((own - reals).abs().mean()) < float((other - reals).abs().mean())


def test_resume_continues_and_a_second_start_is_refused(data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--data", data / "p16.zip", "--outdir", out, *TINY]
    assert run_cli("train-glo", *args, "--epochs", "1").returncode == 0
    first = train_glo.load_state(str(out / "training-state.pt"))
    _one_clear_line(run_cli("train-glo", *args, "--epochs", "1"), "--resume")
    assert run_cli("train-glo", *args, "--epochs", "2", "--resume").returncode == 0
    log = read_log(out)
    assert [e["step"] for e in log] == [3, 6]
    second = train_glo.load_state(str(out / "training-state.pt"))
    assert not torch.equal(first["codes"], second["codes"])


def test_grow_starts_from_the_old_images_upsampled(data, tmp_path):
    low = tmp_path / "low"
    assert run_cli("train-glo", "--data", data / "p8.zip", "--outdir", low, "--epochs", "2", *TINY).returncode == 0
    state = train_glo.load_state(str(low / "training-state.pt"))
    G_low = train_glo._build_G(json.loads(state["arch"]))
    G_low.load_state_dict(state["G"])
    arch = json.loads(state["arch"])
    arch["resolution"] = 16
    G_high = train_glo._build_G(arch)
    codes = train_glo._grow(G_high, state)
    assert torch.equal(codes, state["codes"])
    with torch.no_grad():
        low_img = train_glo.synthesize(G_low.eval(), codes[:3])
        high_img = train_glo.synthesize(G_high.eval(), codes[:3])
    torch.testing.assert_close(high_img, upsampled_like(low_img, G_high, 16), rtol=0, atol=1e-5)
    # And through the command line, on to a model at the new resolution.
    high = tmp_path / "high"
    r = run_cli("train-glo", "--data", data / "p16.zip", "--outdir", high, "--grow-from", low, "--epochs", "1",
                *TINY)
    assert r.returncode == 0, r.stderr
    assert stylegan.load(str(high / "network-final.safetensors")).img_resolution == 16


@pytest.mark.parametrize("extra, message", [
    (["--epochs", "0"], "--epochs"),
    (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "nonsense"], "--device"),
    (["--grow-from", "MISSING"], "does not exist"),
    (["--resume", "sideways"], "--resume"),
])
def test_bad_input_is_one_line(data, tmp_path, extra, message):
    out = tmp_path / "run"
    _one_clear_line(run_cli("train-glo", "--data", data / "p16.zip", "--outdir", out, *TINY, *extra), message)
    assert not out.exists()


def test_grow_from_a_higher_resolution_is_refused(data, tmp_path):
    high = tmp_path / "high"
    assert run_cli("train-glo", "--data", data / "p16.zip", "--outdir", high, "--epochs", "1", *TINY).returncode == 0
    _one_clear_line(run_cli("train-glo", "--data", data / "p8.zip", "--outdir", tmp_path / "low",
                            "--grow-from", high, "--epochs", "1", *TINY), "larger")
