"""`sgvis train-glo` on CPU with a tiny network: the pyramid loss, PCA latents, reconstruction that improves,
sampling from random z, resume, growing and bad input."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import stylegan
from sgvis.data import dataset as ds
from sgvis.train import glo as train_glo
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
    # The model carries the learned latents, and random z land near the images they draw: closer than the same
    # network's samples without the bank.
    assert G.mapping.latent_bank == 12 and torch.equal(G.mapping.z_bank, state["codes"])
    z = torch.randn([32, G.z_dim], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        with_bank = G(z)
        G.mapping.latent_bank = 0
        without = G(z)
    nearest = lambda x: float(torch.cdist(x.flatten(1), own.flatten(1)).min(dim=1).values.mean())
    assert nearest(with_bank) < 0.8 * nearest(without)


def test_lr_rampdown_ends_the_run_at_a_small_learning_rate(data, tmp_path):
    assert train_glo.rampdown_factor(0, 100, 0.25) == 1.0 and train_glo.rampdown_factor(74, 100, 0.25) == 1.0
    assert train_glo.rampdown_factor(100, 100, 0.25) == pytest.approx(0.0, abs=1e-9)
    assert 0.4 < train_glo.rampdown_factor(88, 100, 0.25) < 0.6
    out = tmp_path / "run"
    args = ["--data", data / "p16.zip", "--outdir", out, "--lr", "0.01", *TINY]
    assert run_cli("train-glo", *args, "--epochs", "2", "--lr-rampdown", "0.5").returncode == 0
    state = train_glo.load_state(str(out / "training-state.pt"))
    # 6 steps, the last 3 ramped: the last step ran at 0.01 * 0.5 * (1 + cos(pi * 2/3)) = 0.0025.
    assert state["opt_G"]["param_groups"][0]["lr"] == pytest.approx(0.0025)
    assert state["opt_codes"]["param_groups"][0]["lr"] == pytest.approx(0.1 * 0.25)


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
    arch.update(resolution=16, grown_from=8)       # what train-glo --grow-from builds
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
    grown = stylegan.load(str(high / "network-final.safetensors"))
    assert grown.img_resolution == 16 and grown.synthesis.grown_from == 8


@pytest.mark.parametrize("extra, message", [
    (["--epochs", "0"], "--epochs"),
    (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "nonsense"], "--device"),
    (["--grow-from", "MISSING"], "does not exist"),
    (["--resume", "sideways"], "--resume"),
    (["--bank-focus", "1.5"], "--bank-focus"),
    (["--lr-rampdown", "2"], "--lr-rampdown"),
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


def test_latent_bank_draws_random_z_to_the_learned_latents(tmp_path):
    from sgvis.train.gan import build_generator
    torch.manual_seed(0)
    G = build_generator(train_glo._arch(train_glo.GloOptions(data="", outdir="", channel_base=128, channel_max=16,
                                                             z_dim=16, w_dim=16, map_layers=2), 8)).eval()
    latents = train_glo.project_to_sphere(torch.randn(40, 16))
    z = torch.randn([256, 16], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        w_free = G.mapping(z)[:, 0]
        w_latents = G.mapping(latents)[:, 0]
        sharpness = train_glo.attach_latent_bank(G, latents, focus=0.9)
        w_bank = G.mapping(z)[:, 0]
    # The calibration hits the asked-for focus.
    cos = F.normalize(z, dim=1) @ F.normalize(latents, dim=1).T
    assert float(torch.softmax(cos * sharpness, dim=1).max(dim=1).values.mean()) == pytest.approx(0.9, abs=0.03)
    # Random z now give (nearly) the latents' w; without the bank they were far from all of them.
    near_bank = torch.cdist(w_bank, w_latents).min(dim=1).values.mean()
    near_free = torch.cdist(w_free, w_latents).min(dim=1).values.mean()
    assert float(near_bank) < 0.3 * float(near_free)
    # w_avg is re-centred on what the mapping gives now.
    torch.testing.assert_close(G.mapping.w_avg, w_bank.mean(dim=0), atol=0.1 * float(w_bank.std()), rtol=0)
    # Moving z a little moves w a little (no jumps), and the bank survives a save and a load.
    with torch.no_grad():
        step = (G.mapping(z[:8] + 1e-3 * torch.randn(8, 16))[:, 0] - w_bank[:8]).norm(dim=1)
    assert float(step.max()) < 0.05 * float(torch.pdist(w_latents).mean())
    stylegan.save(G, str(tmp_path / "g.safetensors"))
    H = stylegan.load(str(tmp_path / "g.safetensors"))
    assert H.mapping.latent_bank == 40 and H.mapping.latent_bank_sharpness == pytest.approx(sharpness)
    with torch.no_grad():
        torch.testing.assert_close(H.mapping(z), G.mapping(z))
    r = run_cli("info", tmp_path / "g.safetensors")
    assert r.returncode == 0 and "40 learned latents" in r.stdout, r.stdout + r.stderr
