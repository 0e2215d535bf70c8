"""`sgvis train-mapper` on tiny random models (the tiny diffusers folder, BEATs and mapper files the diffusion tests
build) and tiny videos with sound: the loss is TempoTokens' (diffusion MSE + 0.01 |temporal|), only the mapper
learns, training lowers the loss on its data, checkpoints load in the render, and a run resumes."""
import csv
import json
import os

import pytest
import torch

pytest.importorskip("diffusers")

from audio_fixtures import write_video                                  # noqa: E402
from test_diffusion_models import tiny_beats_checkpoint                   # noqa: E402
from test_diffusion_render import WIDTH, write_tiny_t2v                   # noqa: E402
from test_safety_and_errors import run_cli                              # noqa: E402


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    d = tmp_path_factory.mktemp("train-mapper")
    write_tiny_t2v(str(d / "t2v"))
    tiny_beats_checkpoint(d / "beats.pt")                       # 48-wide features
    videos = d / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", seconds=4.2, fps=12)          # two 2 s windows
    write_video(videos / "b.mp4", seconds=2.5, fps=12)          # one
    write_video(videos / "silent.mp4", seconds=3.0, fps=12, with_audio=False)    # no sound: skipped
    return {k: str(d / name) for k, name in (("t2v", "t2v"), ("beats", "beats.pt"), ("data", "videos"))}


def make_trainer(kit, **cfg):
    from diffusers import DDPMScheduler

    from sgvis.diffusion import load_beats
    from sgvis.diffusion.t2v import load_t2v
    from sgvis.diffusion.train_mapper import MapperTrainer, TRAIN_DEFAULTS, new_mapper
    parts = load_t2v(kit["t2v"])
    beats = load_beats(kit["beats"])
    torch.manual_seed(0)
    mapper = new_mapper(beats, WIDTH, 24)
    settings = {**TRAIN_DEFAULTS, "size": 16, **cfg}
    scheduler = DDPMScheduler.from_pretrained(kit["t2v"], subfolder="scheduler", local_files_only=True)
    return MapperTrainer(parts, scheduler, beats, mapper, settings, torch.device("cpu")), parts


def test_windows_of_videos_with_sound(kit):
    from sgvis.diffusion.train_mapper import MapperClips
    clips = MapperClips(kit["data"], frames=24, window_seconds=2.0, size=16)
    assert len(clips) == 3 and clips.skipped == 1
    item = clips[1]                                            # a.mp4, 2-4 s
    assert item["frames"].shape == (24, 3, 16, 16) and item["frames"].dtype == torch.uint8
    assert item["audio"].shape == (32000,) and float(item["audio"].abs().max()) > 0.05
    # The picture is the one showing in that window: write_video's frames get brighter by 20 per frame at 12 fps.
    first = clips[0]["frames"].float().mean(dim=(1, 2, 3))
    later = item["frames"].float().mean(dim=(1, 2, 3))
    assert abs(float(later[0]) - 24 * 20 % 255) < 12 and abs(float(first[0])) < 12


def test_loss_is_diffusion_mse_plus_the_temporal_l1_and_only_the_mapper_learns(kit):
    from sgvis.diffusion.train_mapper import MapperClips
    trainer, parts = make_trainer(kit)
    clips = MapperClips(kit["data"], size=16)
    batch = {k: torch.stack([clips[0][k]]) for k in ("frames", "audio")}
    frozen = {name: [p.clone() for p in parts[name].parameters()] for name in ("unet", "vae", "text_encoder")}
    torch.manual_seed(1)
    total, logs = trainer.loss(batch)
    assert abs(logs["total"] - (logs["mse"] + 0.01 * logs["temporal_l1"])) < 1e-5
    torch.manual_seed(1)
    trainer.cfg = {**trainer.cfg, "temporal_l1": 0.5}
    total2, logs2 = trainer.loss(batch)
    assert abs(logs2["mse"] - logs["mse"]) < 1e-6                # same noise and timestep: same MSE
    assert abs(logs2["total"] - (logs["mse"] + 0.5 * logs["temporal_l1"])) < 1e-5
    before = [p.clone() for p in trainer.mapper.parameters()]
    trainer.cfg = {**trainer.cfg, "temporal_l1": 0.01}
    logs = trainer.step(batch)
    assert logs["grad_norm"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.mapper.parameters()))
    for name, params in frozen.items():                          # the text-to-video model does not move
        assert all(torch.equal(a, b) for a, b in zip(params, parts[name].parameters())), name


def test_training_lowers_the_loss_on_its_data(kit):
    # The same windows, noise and timesteps at every step: what the mapper can change of the loss goes down.
    # (In these tiny random models the text path moves the UNet's prediction only a little, so the margin is small
    # against the loss itself but far above float noise.)
    from sgvis.diffusion.train_mapper import MapperClips
    trainer, _ = make_trainer(kit, lr=1e-2)
    clips = MapperClips(kit["data"], size=16)
    batch = {k: torch.stack([clips[i][k] for i in range(3)]) for k in ("frames", "audio")}

    def fixed_loss():
        trainer.mapper.eval()
        torch.manual_seed(123)
        with torch.no_grad():
            value = trainer.loss(batch)[1]["total"]
        trainer.mapper.train()
        return value

    start = fixed_loss()
    for _ in range(40):
        torch.manual_seed(123)
        trainer.step(batch)
    assert fixed_loss() < start - 0.003, (start, fixed_loss())


def test_cli_trains_resumes_and_the_mapper_renders(kit, tmp_path):
    out = tmp_path / "run"
    args = ["train-mapper", "--t2v", kit["t2v"], "--beats", kit["beats"], "--data", kit["data"], "--out", str(out),
            "--size", "16", "--steps", "2", "--checkpoint-every", "1", "--compute", "cpu"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "1 files without picture, sound or 2 s skipped" in result.stdout
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [r["step"] for r in rows] == ["1", "2"] and all(float(r["mse"]) > 0 for r in rows)
    options = json.loads((out / "options.json").read_text())
    assert options["windows"] == 3 and options["skipped_files"] == 1
    # Resume: on to 4 steps, the log continues.
    result = run_cli(*[a if a != "2" else "4" for a in args], "--resume")
    assert result.returncode == 0, result.stderr
    assert [r["step"] for r in csv.DictReader(open(out / "log.csv"))] == ["1", "2", "3", "4"]
    # The trained mapper is a TempoTokens state_dict: the render loads it.
    sd = torch.load(out / "mapper.pth", weights_only=True)
    assert {"fc1.weight", "fc2.weight", "fc3.weight", "fc4.weight"} <= set(sd)
    video = tmp_path / "v.mp4"
    track = os.path.join(kit["data"], "a.mp4")
    render = run_cli("render", track, "-o", str(video), "--backend", "tempotokens", "--t2v", kit["t2v"],
                     "--beats", kit["beats"], "--mapper", str(out / "mapper.pth"), "--size", "16x16", "--steps", "2",
                     "--guidance", "1", "--end", "2", "--compute", "cpu")
    assert render.returncode == 0, render.stderr and os.path.getsize(video) > 0
    # A non-empty --out without --resume or --overwrite is one line, exit 2, and nothing is touched.
    again = run_cli(*args)
    assert again.returncode == 2 and "is not empty" in again.stderr
    assert len(list(csv.DictReader(open(out / "log.csv")))) == 4


def test_bad_inputs_are_one_line(kit, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["train-mapper", "--t2v", kit["t2v"], "--beats", kit["beats"], "--out", str(tmp_path / "r"),
            "--compute", "cpu"]
    r = run_cli(*base, "--data", str(empty))
    assert r.returncode == 2 and "no video with sound" in r.stderr and not (tmp_path / "r").exists()
    r = run_cli(*base, "--data", kit["data"], "--size", "10", "--steps", "1")    # the tiny VAE downsamples 4x
    assert r.returncode == 2 and "multiple of" in r.stderr and not (tmp_path / "r").exists()
