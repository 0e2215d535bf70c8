"""`sgvis train-gan --grow-from`: a higher-resolution run started from a trained lower-resolution one."""
import json
import math
import os

import pytest
import torch

import stylegan
from sgvis.data import dataset as ds
from sgvis.train import grow
from sgvis.train import gan as train_gan
from sgvis.train.common import Dist
from sgvis.cli import main as sgvis_main

pytest.importorskip("PIL")

ARCH = ["--channel-base", "128", "--channel-max", "16", "--z-dim", "16", "--w-dim", "16", "--map-layers", "2"]
RUN = ["--batch", "4", "--grid", "2x2", "--quiet", "--threads", "1", "--snap", "0", "--tick", "0.004"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Datasets at 8x8 and 32x32 of the same procedural images, and a few iterations of an 8x8 run."""
    root = tmp_path_factory.mktemp("grow")
    data = {}
    for res in (8, 32):
        data[res] = root / f"proc{res}.zip"
        ds.build_dataset(data[res], resolution=res, procedural=8, seed=1, workers=1, progress=False)
    low = root / "low"
    assert sgvis_main(["train-gan", "--data", str(data[8]), "--outdir", str(low), *ARCH, *RUN,
                       "--kimg", "0.012"]) == 0
    return data, low


def g_images(G):
    z = torch.randn([3, G.z_dim], generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ws = G.mapping(z, None)
        return G.synthesis(ws, noise_mode="const")


def upsampled_like(img_low, G, resolution):
    """The low-resolution image upsampled the way the grown generator's skip path does it (border-clamped in
    the blocks above the resolution it was grown from)."""
    from cuda_ops import upsample2d, upsample2d_clamped
    img = img_low
    for r in G.synthesis.block_resolutions:
        if img.shape[-1] < r <= resolution:
            block = getattr(G.synthesis, f"b{r}")
            img = (upsample2d_clamped if block.clamp_image_border else upsample2d)(img, block.resample_filter)
    return img


def grown_trainer(data, low, fade_kimg=0.008):
    o = train_gan.TrainOptions(data=str(data[32]), outdir="unused", batch=4, grow_from=str(low),
                               fade_kimg=fade_kimg, device="cpu")
    state = train_gan.load_state(os.path.join(low, train_gan.STATE_FILE))
    return train_gan.Trainer(o, ds.open_dataset(str(data[32])), torch.device("cpu"), Dist(), None,
                             state), state


def test_grown_generator_starts_as_the_old_one_upsampled(runs):
    data, low = runs
    trainer, state = grown_trainer(data, low)
    G_low, _ = train_gan.build_networks(json.loads(state["arch"]))
    for key, G in (("G_ema", trainer.G_ema), ("G", trainer.G)):
        G_low.load_state_dict(state[key])
        img_low = g_images(G_low.eval())
        img = g_images(G.eval())
        assert img.shape[-1] == 32 and img_low.shape[-1] == 8
        expected = upsampled_like(img_low, G, 32)
        torch.testing.assert_close(img, expected, rtol=0, atol=1e-5)
        assert img_low.std() > 0.01                   # a real image, not a blank that would match anything
        assert G.synthesis.grown_from == 8 and G.synthesis.b16.clamp_image_border
        assert not G.synthesis.b8.clamp_image_border


def test_fade_in_discriminator_blends_old_input_into_new_path(runs):
    data, low = runs
    trainer, state = grown_trainer(data, low)
    D = trainer.D.eval()
    D_low = train_gan.build_networks(json.loads(state["arch"]))[1]
    D_low.load_state_dict(state["D"])
    img = torch.rand([4, 3, 32, 32], generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        grow.set_fade(D, 0, 0.008)
        torch.testing.assert_close(D(img), D_low.eval()(D.downsample(img)))      # alpha 0: the old D, unchanged
        grow.set_fade(D, 8, 0.008)
        assert float(D.alpha) == 1.0
        new_only = D(img)
        torch.testing.assert_close(new_only, D.D(img))                           # alpha 1: the plain new D
        grow.set_fade(D, 4, 0.008)
        half = D(img)
    assert float(D.alpha) == 0.5
    assert not torch.allclose(half, new_only) and not torch.allclose(half, D_low(D.downsample(img)))


def test_grow_run_trains_resumes_and_exports(runs, tmp_path):
    data, low = runs
    out = tmp_path / "grown"
    assert sgvis_main(["train-gan", "--data", str(data[32]), "--outdir", str(out), "--grow-from", str(low),
                       "--fade-kimg", "0.008", *RUN, "--kimg", "0.012"]) == 0
    with open(out / "log.jsonl") as f:
        log = [json.loads(line) for line in f]
    assert [round(e["fade_alpha"], 3) for e in log] == [0.0, 0.5, 1.0]
    assert all(math.isfinite(e["loss_G"]) and math.isfinite(e["loss_D"]) for e in log)
    options = json.load(open(out / "training_options.json"))
    assert options["arch"]["resolution"] == 32 and options["arch"]["grow"]["from_resolution"] == 8

    G0 = grown_trainer(data, low)[0].G_ema
    G = stylegan.load(str(out / "network-final.safetensors"), "cpu")
    assert G.img_resolution == 32
    assert (g_images(G) - g_images(G0.eval())).abs().max() > 1e-3          # training moved the grown generator
    new_torgb = G.synthesis.b32.torgb.weight
    assert new_torgb.abs().max() > 0                                        # and the new layers learn

    # --resume continues the grown run (same architecture, alpha stays at 1).
    assert sgvis_main(["train-gan", "--data", str(data[32]), "--outdir", str(out), "--resume", "latest",
                       *RUN, "--kimg", "0.016"]) == 0
    with open(out / "log.jsonl") as f:
        last = [json.loads(line) for line in f][-1]
    assert round(last["kimg"], 3) == 0.016 and last["fade_alpha"] == 1.0


def test_a_grown_run_grows_again(runs, tmp_path):
    """8 -> 16 -> 32: the second growth starts from the grown run's plain D and its G, upsampled exactly."""
    data, low = runs
    data16 = tmp_path / "proc16.zip"
    ds.build_dataset(data16, resolution=16, procedural=8, seed=1, workers=1, progress=False)
    mid = tmp_path / "mid"
    assert sgvis_main(["train-gan", "--data", str(data16), "--outdir", str(mid), "--grow-from", str(low),
                       "--fade-kimg", "0.004", *RUN, "--kimg", "0.008"]) == 0
    state = train_gan.load_state(os.path.join(mid, train_gan.STATE_FILE))
    assert any(k.startswith("D.") for k in state["D"])                      # a FadeInDiscriminator's state
    trainer, _ = grown_trainer(data, mid)
    G_mid, D_mid = train_gan.build_networks(json.loads(state["arch"]))
    G_mid.load_state_dict(state["G_ema"])
    D_mid.load_state_dict(state["D"])
    assert json.loads(state["arch"])["resolution"] == 16 and trainer.arch["grow"]["from_resolution"] == 16
    assert trainer.arch["grown_from"] == 8        # the first growth's: the 8^2 image is clamped all the way up
    torch.testing.assert_close(g_images(trainer.G_ema.eval()),
                               upsampled_like(g_images(G_mid.eval()), trainer.G_ema, 32), rtol=0, atol=1e-5)
    D_plain = D_mid.D                                                       # the mid run's D at alpha 1
    img = torch.rand([4, 3, 32, 32], generator=torch.Generator().manual_seed(0)) * 2 - 1
    grow.set_fade(trainer.D, 0, 0.004)
    with torch.no_grad():
        torch.testing.assert_close(trainer.D.eval()(img), D_plain.eval()(trainer.D.downsample(img)))
    out = tmp_path / "top"
    assert sgvis_main(["train-gan", "--data", str(data[32]), "--outdir", str(out), "--grow-from", str(mid),
                       "--fade-kimg", "0.004", *RUN, "--kimg", "0.008"]) == 0
    assert stylegan.load(str(out / "network-final.safetensors"), "cpu").img_resolution == 32


@pytest.mark.parametrize("extra, message", [
    (["--resolution", "8"], "must be higher"),
    (["--channel-base", "256"], "conflicts with the run being grown"),
])
def test_grow_errors_are_one_line_and_leave_no_folder(runs, tmp_path, capsys, extra, message):
    data, low = runs
    out = tmp_path / "bad"
    dataset = data[8] if "--resolution" in extra else data[32]
    assert sgvis_main(["train-gan", "--data", str(dataset), "--outdir", str(out), "--grow-from", str(low),
                       *extra, *RUN]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_grow_from_missing_run(runs, tmp_path, capsys):
    data, _ = runs
    assert sgvis_main(["train-gan", "--data", str(data[32]), "--outdir", str(tmp_path / "x"), "--grow-from",
                       str(tmp_path), *RUN]) == 2
    assert "no training-state.pt" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
