"""`sgvis train-gan` on CPU with a tiny network: losses, regularisers, augmentation, snapshots, resume."""
import argparse
import json
import math
import os

import numpy as np
import pytest
import torch

import stylegan
from sgvis.data import dataset as ds
from sgvis.train import commands
from sgvis.train import gan as train_gan
from sgvis.train.augment import AdaptiveP, AugmentPipe
from sgvis.errors import UserError

pytest.importorskip("PIL")

TINY = ["--resolution", "16", "--channel-base", "128", "--channel-max", "16", "--z-dim", "16", "--w-dim", "16",
        "--map-layers", "2", "--batch", "4", "--grid", "2x2", "--quiet", "--threads", "1"]


def run_command(*argv):
    """Local harness until `sgvis train-gan` is wired into sgvis.cli: parse with our subparser, run func."""
    parser = argparse.ArgumentParser(prog="sgvis")
    commands.register_gan(parser.add_subparsers())
    args = parser.parse_args(["train-gan"] + [str(a) for a in argv])
    return args.func(args)


@pytest.fixture(scope="module")
def data16(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "proc16.zip"
    ds.build_dataset(path, resolution=16, procedural=12, seed=1, workers=1, progress=False)
    return path


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def read_log(outdir):
    with open(os.path.join(outdir, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def g_output(G, seed=0):
    z = torch.randn([2, G.z_dim], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G.synthesis(G.mapping(z, None), noise_mode="const")


def state_generator(path):
    state = train_gan.load_state(path)
    G, _ = train_gan.build_networks(json.loads(state["arch"]))
    G.load_state_dict(state["G_ema"])
    return G.eval(), state


def test_train_snapshot_and_resume(data16, tmp_path, capsys):
    out = tmp_path / "run"
    # 3 iterations: R1 and path length run at iterations 0 and 2, fixed augmentation p = 0.5.
    assert run_command("--data", data16, "--outdir", out, *TINY, "--kimg", "0.012", "--snap", "0.008",
                       "--tick", "0.004", "--r1-interval", "2", "--pl-interval", "2", "--augment", "fixed",
                       "--augment-p", "0.5") == 0
    assert "final model" in capsys.readouterr().out
    files = set(os.listdir(out))
    assert {"network-snapshot-000000.safetensors", "network-final.safetensors", "training-state.pt",
            "reals.png", "fakes-init.png", "fakes000000.png", "log.jsonl", "training_options.json"} <= files
    log = read_log(out)
    assert [round(e["kimg"], 3) for e in log] == [0.004, 0.008, 0.012]
    for e in log:
        assert math.isfinite(e["loss_G"]) and math.isfinite(e["loss_D"])
        assert e["augment_p"] == 0.5
    assert any("r1_penalty" in e and math.isfinite(e["r1_penalty"]) for e in log)
    assert any("pl_penalty" in e and math.isfinite(e["pl_penalty"]) for e in log)

    G = stylegan.load(str(out / "network-final.safetensors"))
    assert G.img_resolution == 16 and G.z_dim == 16 and G.config["synthesis_kwargs"]["channel_max"] == 16
    G_state, state = state_generator(out / "training-state.pt")
    assert state["cur_nimg"] == 12 and state["iteration"] == 3 and state["augment_p"] == 0.5
    assert torch.equal(g_output(G), g_output(G_state))

    # The trained generator differs from its initialisation (fakes-init.png is G_ema before step 1).
    torch.manual_seed(0)
    G0, _ = train_gan.build_networks(json.loads(state["arch"]))
    assert (g_output(G0.eval()) - g_output(G)).abs().max() > 1e-3

    # Same outdir without --resume: refused; --resume continues from image 12.
    with pytest.raises(UserError, match="already holds a training run"):
        run_command("--data", data16, "--outdir", out, *TINY, "--kimg", "0.02")
    o = train_gan.TrainOptions(data=str(data16), outdir=str(out), resume="latest", kimg=0.02, batch=4, tick=0.004,
                               snap=0, grid=(2, 2), progress=False, threads=1, augment="ada", ada_interval=1)
    s = train_gan.train(o)
    assert s["resumed_from"] == 12 and s["steps"] == 2 and s["iterations"] == 5 and s["kimg"] == 0.02
    assert s["trainer"].arch["channel_max"] == 16                 # architecture comes from the state
    G2, state2 = state_generator(out / "training-state.pt")
    assert state2["cur_nimg"] == 20
    assert (g_output(G2) - g_output(G)).abs().max() > 0            # training went on
    # ADA moved p from the resumed 0.5 by at most 4 images / 100 kimg per adjustment.
    assert state2["augment_p"] != 0.5 and abs(state2["augment_p"] - 0.5) <= 2 * 4 / 100_000 + 1e-12
    assert [round(e["kimg"], 3) for e in read_log(out)][-2:] == [0.016, 0.02]


def test_resume_rejects_conflicting_architecture_and_missing_state(data16, tmp_path):
    out = tmp_path / "run"
    run_command("--data", data16, "--outdir", out, *TINY, "--kimg", "0.004", "--snap", "0")
    with pytest.raises(UserError, match="--channel-max 32 conflicts"):
        run_command("--data", data16, "--outdir", out, *TINY, "--channel-max", "32", "--kimg", "0.008", "--resume")
    with pytest.raises(UserError, match="no training-state.pt"):
        run_command("--data", data16, "--outdir", tmp_path / "fresh", *TINY, "--kimg", "0.004", "--resume")
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="is not readable"):
        run_command("--data", data16, "--outdir", tmp_path / "x", *TINY, "--kimg", "0.004", "--resume",
                    tmp_path / "bad.pt")
    # --resume auto starts fresh when there is nothing to resume.
    assert run_command("--data", data16, "--outdir", tmp_path / "auto", *TINY, "--kimg", "0.004", "--snap", "0",
                       "--resume", "auto", "--pl-weight", "0", "--augment", "none") == 0
    assert (tmp_path / "auto" / "network-final.safetensors").exists()


def test_bad_input_is_a_user_error(data16, tmp_path):
    def fails(message, *argv):
        with pytest.raises(UserError, match=message):
            run_command(*argv)

    fails("no such file", "--data", tmp_path / "missing", "--outdir", tmp_path / "o", *TINY)
    (tmp_path / "empty").mkdir()
    fails("empty", "--data", tmp_path / "empty", "--outdir", tmp_path / "o", *TINY)
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04junk")
    fails("not a zip", "--data", tmp_path / "junk.zip", "--outdir", tmp_path / "o", *TINY)
    fails("resolution mismatch.*16x16.*32x32", "--data", data16, "--outdir", tmp_path / "o", *TINY,
          "--resolution", "32")
    (tmp_path / "file").write_text("x")
    fails("cannot create --outdir", "--data", data16, "--outdir", tmp_path / "file" / "run", *TINY)
    fails("divisible by the minibatch-std group", "--data", data16, "--outdir", tmp_path / "o", *TINY,
          "--batch", "6")
    fails("power of two", "--data", data16, "--outdir", tmp_path / "o", *TINY, "--resolution", "20")
    fails("--grid", "--data", data16, "--outdir", tmp_path / "o", *TINY, "--grid", "four")


def test_augment_pipe_is_differentiable_twice_and_respects_p():
    torch.manual_seed(0)
    x = torch.rand([8, 3, 16, 16]) * 2 - 1
    pipe = AugmentPipe(p=0.0)
    assert torch.equal(pipe(x), x)
    pipe.p = 1.0
    y = pipe(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    geo = AugmentPipe(ops=("xflip", "translate"), p=1.0)
    y = geo(x)
    # Flips and integer translations only move pixels: every output value is an input value of that image.
    for i in range(8):
        assert torch.isin(y[i], x[i]).all()
    # R1 through the augmentation needs double backward (no grid_sample).
    x_req = x.clone().requires_grad_(True)
    w = torch.randn(3, 3, 3, 3, requires_grad=True)
    out = torch.nn.functional.conv2d(pipe(x_req), w).square().sum()
    (g,) = torch.autograd.grad(out, x_req, create_graph=True)
    g.square().sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def test_adaptive_p_follows_the_sign_of_real_logits():
    ada = AdaptiveP(target=0.6, interval=2, speed_kimg=0.1)
    for _ in range(2):
        ada.accumulate(torch.ones(10))            # D sure that reals are real: overfitting -> more augmentation
    assert ada.ready()
    assert ada.update() == pytest.approx(0.2) and ada.last_rt == 1.0
    for _ in range(2):
        ada.accumulate(-torch.ones(10))
    assert ada.update() == pytest.approx(0.0)
    for _ in range(100):
        ada.accumulate(torch.ones(50))
        ada.update()
    assert ada.p == 1.0                            # clamped


def test_training_state_loads_weights_only(data16, tmp_path):
    out = tmp_path / "run"
    s = train_gan.train(train_gan.TrainOptions(data=str(data16), outdir=str(out), resolution=16, channel_base=128,
                                               channel_max=16, z_dim=16, w_dim=16, map_layers=2, batch=4,
                                               kimg=1, max_steps=1, snap=0, grid=(1, 1), progress=False,
                                               pl_weight=0, r1_interval=1))
    assert s["final"] is None and s["kimg"] == 0.004 and s["steps"] == 1
    state = torch.load(out / "training-state.pt", weights_only=True)
    assert state["format"] == "sgvis-train-state" and isinstance(state["opt_D"], dict)
    assert np.isfinite(read_log(out)[-1]["r1_penalty"])


def test_noise_off_trains_a_generator_steered_by_w_alone(data16, tmp_path, capsys):
    """--noise off: no per-pixel noise inputs in G, so the image is a function of w only (what render and live
    steer); the setting is part of the architecture: the model loads without noise and resume keeps it."""
    out = tmp_path / "run"
    assert run_command("--data", data16, "--outdir", out, *TINY, "--noise", "off", "--kimg", "0.008",
                       "--snap", "0") == 0
    G = stylegan.load(str(out / "network-final.safetensors"), "cpu")
    assert not any("noise" in name for name, _ in G.named_parameters())
    z = torch.randn([2, G.z_dim], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ws = G.mapping(z, None)
        a, b = G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random")
    torch.testing.assert_close(a, b)                       # "random" noise changes nothing: there is none
    from stylegan.fast import FastSynthesis
    torch.testing.assert_close(FastSynthesis(G)(ws), a, rtol=0, atol=2e-3)
    assert json.load(open(out / "training_options.json"))["arch"]["noise"] is False
    with pytest.raises(UserError, match="--noise on conflicts with the run being resumed \\(off\\)"):
        run_command("--data", data16, "--outdir", out, *TINY, "--noise", "on", "--resume", "latest",
                    "--kimg", "0.012")
    assert run_command("--data", data16, "--outdir", out, *TINY, "--resume", "latest", "--kimg", "0.012") == 0


def test_coverage_matches_each_real_with_its_nearest_fake_and_pulls_it_closer():
    """The coverage term: nearest_candidates finds the generated image closest to each real one (at thumbnail
    resolution), and descending coverage() on those pairs moves the generator's nearest samples to the data."""
    from sgvis.train import losses
    real = torch.rand([3, 3, 16, 16]) * 2 - 1
    pool = torch.rand([10, 3, 16, 16]) * 2 - 1
    pool[7], pool[2] = real[0], real[2] + 0.01 * torch.randn([3, 16, 16])   # near-copies of reals 0 and 2
    matched = losses.nearest_candidates(real, pool, 4)
    assert matched[0] == 7 and matched[2] == 2
    assert losses.coverage(pool[matched], real, 4) < losses.coverage(pool[:3], real, 4)

    torch.manual_seed(0)
    G, _ = train_gan.build_networks(dict(resolution=16, channel_base=128, channel_max=16, z_dim=16, w_dim=16,
                                         map_layers=2, fp16_res=0, conv_clamp=None, mbstd_group=4, noise=False))
    real = torch.stack([torch.linspace(-1, 1, 16).expand(3, 16, 16), torch.linspace(1, -1, 16).expand(3, 16, 16)])
    real = torch.cat([real, real.transpose(2, 3)])                         # four gradients: 4 "modes"
    opt = torch.optim.Adam(G.parameters(), lr=0.01)

    def nearest_distance():
        with torch.no_grad():
            pool = G.synthesis(G.mapping(torch.randn([32, 16], generator=torch.Generator().manual_seed(1)),
                                         None), noise_mode="const")
            return losses.coverage(pool[losses.nearest_candidates(real, pool, 8)], real, 8).item()

    before = nearest_distance()
    for _ in range(40):
        with torch.no_grad():
            z = torch.randn([32, 16])
            pool = G.synthesis(G.mapping(z, None), noise_mode="const")
            matched = losses.nearest_candidates(real, pool, 8)
        opt.zero_grad()
        losses.coverage(G.synthesis(G.mapping(z[matched], None), noise_mode="const"), real, 8).backward()
        opt.step()
    assert nearest_distance() < 0.3 * before


def test_train_gan_with_coverage(data16, tmp_path):
    """--coverage runs its G step every --coverage-interval iterations (logged as 'coverage'); bad values are
    one-line errors."""
    out = tmp_path / "run"
    assert run_command("--data", data16, "--outdir", out, *TINY, "--noise", "off", "--kimg", "0.012",
                       "--snap", "0", "--tick", "0.004", "--coverage", "2", "--coverage-interval", "2",
                       "--coverage-candidates", "8", "--coverage-res", "4") == 0
    log = read_log(out)
    assert [("coverage" in e) for e in log] == [True, False, True]        # iterations 0 and 2 of 0, 1, 2
    assert all(math.isfinite(e["coverage"]) and e["coverage"] > 0 for e in log if "coverage" in e)
    assert json.load(open(out / "training_options.json"))["options"]["coverage"] == 2
    with pytest.raises(UserError, match="--coverage must be >= 0"):
        run_command("--data", data16, "--outdir", tmp_path / "bad", *TINY, "--coverage", "-1")
    assert not (tmp_path / "bad").exists()


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(script, *args, nproc=2):
    import subprocess
    import sys
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
           str(_free_port()), str(script), *[str(a) for a in args]]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_two_process_gloo_training(data16, tmp_path):
    """torchrun with two processes (gloo on CPU): the CLI trains, only rank 0 writes."""
    script = tmp_path / "run.py"
    script.write_text("import argparse, sys\nfrom sgvis.train import commands\n"
                      "p = argparse.ArgumentParser(); commands.register_gan(p.add_subparsers())\n"
                      "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n")
    out = tmp_path / "run"
    result = _torchrun(script, "train-gan", "--data", data16, "--outdir", out, *TINY, "--batch", "8",
                       "--kimg", "0.024", "--snap", "0", "--tick", "0.008", "--r1-interval", "2",
                       "--pl-interval", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("final model") == 1                 # only rank 0 reports and writes
    log = read_log(out)
    assert [round(e["kimg"], 3) for e in log] == [0.008, 0.016, 0.024]
    assert all(math.isfinite(e["loss_G"]) and math.isfinite(e["loss_D"]) for e in log)
    assert stylegan.load(str(out / "network-final.safetensors")).img_resolution == 16


@pytest.mark.slow
def test_ddp_keeps_processes_in_step(data16, tmp_path):
    """Each process trains on different images and noise, yet after steps with every phase (G, path length,
    D, R1) both hold the same G and D: DistributedDataParallel averaged the gradients."""
    script = tmp_path / "steps.py"
    script.write_text(f"""
import torch
from sgvis.data import dataset as ds
from sgvis.train import gan as train_gan
from sgvis.train.common import Dist
dist = Dist()
dist.init("cpu")
o = train_gan.TrainOptions(data={str(data16)!r}, outdir="unused", resolution=16, channel_base=128, channel_max=16,
                           z_dim=16, w_dim=16, map_layers=2, batch=8, r1_interval=2, pl_interval=2, device="cpu")
data = ds.open_dataset(o.data)
trainer = train_gan.Trainer(o, data, torch.device("cpu"), dist, None)
before = torch.cat([p.detach().flatten() for p in trainer.G.parameters()]).clone()
torch.manual_seed(100 + dist.rank)                       # different noise / z on each process
for i in range(3):
    real = torch.stack([data[(dist.rank * 4 + j + i) % len(data)] for j in range(4)]).float() / 127.5 - 1
    trainer.step(real)
params = torch.cat([p.detach().flatten() for p in [*trainer.G.parameters(), *trainer.D.parameters()]]).double()
moved = (torch.cat([p.detach().flatten() for p in trainer.G.parameters()]) - before).abs().max().item()
with open({str(tmp_path)!r} + f"/rank{{dist.rank}}.txt", "w") as f:     # a file each: no interleaved stdout
    f.write(f"SUM {{params.sum().item():.12e}} ABS {{params.abs().sum().item():.12e}} MOVED {{moved:.3e}}")
dist.close()
""")
    result = _torchrun(script)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [(tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert lines[0][:4] == lines[1][:4], lines             # identical networks on both processes
    assert float(lines[0][-1]) > 1e-4                      # and training moved them


def test_init_from_fine_tunes_a_saved_generator_with_its_latent_bank(data16, tmp_path):
    """--init-from MODEL: G and G_ema start as the file's generator (its architecture, weights and latent bank);
    D starts new; bad sources get one line."""
    arch = dict(resolution=16, channel_base=128, channel_max=16, z_dim=16, w_dim=16, map_layers=2, fp16_res=0,
                conv_clamp=None, mbstd_group=4, noise=False)
    torch.manual_seed(3)
    src = train_gan.build_generator(arch).eval()
    with torch.no_grad():
        for p in src.parameters():                         # not what a fresh network would be
            p.add_(torch.randn_like(p) * 0.2)
    src.set_latent_bank(torch.randn(6, 16), sharpness=40.0)
    src_path = tmp_path / "src.safetensors"
    stylegan.save(src, str(src_path))
    common = ["--batch", "4", "--grid", "2x2", "--quiet", "--threads", "1", "--snap", "0"]
    out = tmp_path / "ft"
    assert run_command("--data", data16, "--outdir", out, "--init-from", src_path, *common, "--kimg", "0.008",
                       "--lr", "0.0005") == 0
    run_arch = json.load(open(out / "training_options.json"))["arch"]
    assert run_arch["noise"] is False and run_arch["z_dim"] == 16 and run_arch["latent_bank"] == 6
    G = stylegan.load(str(out / "network-final.safetensors"), "cpu")
    assert G.mapping.latent_bank == 6 and torch.equal(G.mapping.z_bank, src.mapping.z_bank)
    torch.manual_seed(3)
    fresh = train_gan.build_generator(arch).eval()
    fresh.set_latent_bank(src.mapping.z_bank, sharpness=40.0)
    tuned, start, new = g_output(G), g_output(src), g_output(fresh)
    assert torch.isfinite(tuned).all() and not torch.equal(tuned, start)      # it trained ...
    assert (tuned - start).abs().mean() < 0.2 * (new - start).abs().mean()    # ... from the file's weights
    # The run resumes as a normal run (its state holds the bank).
    assert run_command("--data", data16, "--outdir", out, *common, "--resume", "latest", "--kimg", "0.012") == 0

    def fails(message, *argv):
        with pytest.raises(UserError, match=message):
            run_command("--data", data16, "--outdir", tmp_path / "o", *common, *argv)

    fails("no such file", "--init-from", tmp_path / "missing.safetensors")
    fails("use one", "--init-from", src_path, "--grow-from", out)
    fails("--z-dim 32 conflicts with the run being initialised from \\(16\\)", "--init-from", src_path,
          "--z-dim", "32")
    sg3 = tmp_path / "sg3.safetensors"
    from conftest import tiny_generator
    stylegan.save(tiny_generator("stylegan3", resolution=16), str(sg3))
    fails("fine-tunes unconditional RGB StyleGAN2", "--init-from", sg3)
    big = train_gan.build_generator(dict(arch, resolution=32))
    big_path = tmp_path / "big.safetensors"
    stylegan.save(big, str(big_path))
    fails("resolution mismatch.*16x16.*init-from", "--init-from", big_path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    fails("cannot read it as a generator", "--init-from", tmp_path / "junk.safetensors")
