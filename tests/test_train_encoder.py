"""`sgvis train-encoder`: the learned-steering trainer (sync and clip objectives), its losses and its outputs."""
from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import torch

import stylegan
from audio_fixtures import click_track, write_audio, write_video
from conftest import tiny_generator
from sgvis.features.analysis import MelConfig
from sgvis.train.steering_objectives import (VideoPatchDiscriminator, encoder_contrastive_loss, frame_motion,
                                       latent_regulariser, onset_corr_loss, onset_sync_loss)
from sgvis.train.encoder import TRAIN_DEFAULTS, EncoderTrainer, resolve_weights
from test_safety_and_errors import run_cli

SR = 22050
TINY_CLIP = dict(projection_dim=16,
                 text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  vocab_size=1000, max_position_embeddings=16),
                 vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                    num_attention_heads=2, image_size=32, patch_size=8))


def fixed_batch(B=4, T=6, seed=1, video=False):
    """Clips whose mel windows carry a loud band exactly on the frames where onset=1 (so sound predicts motion)."""
    mel = MelConfig()
    g = torch.Generator().manual_seed(seed)
    onset = (torch.rand(B, T, generator=g) > 0.6).float()
    onset[:, 0] = 0
    mels = torch.full((B, T, mel.n_mels, mel.window_frames), -9.0) + 0.3 * torch.randn(
        B, T, mel.n_mels, mel.window_frames, generator=g)
    mels[..., -3:] += 8 * onset[..., None, None]
    frames = (torch.rand(B, T, 3, 16, 16, generator=g) * 255).to(torch.uint8) if video else \
        torch.zeros(B, T, 3, 0, 0, dtype=torch.uint8)
    return {"mels": mels, "onset": onset, "rms": onset.clone(), "frames": frames,
            "has_video": torch.full((B,), video), "label_index": torch.arange(B) % 2,
            "label": ["rain", "drums"] * (B // 2)}


def config(**over):
    cfg = copy.deepcopy(TRAIN_DEFAULTS)
    cfg.update(loss_resolution=16, lr=3e-4, encoder_channels=[8, 16, 32], hidden=32, sample_bank=32)
    for k, v in over.items():
        cfg[k] = v
    return cfg


def test_losses_behave():
    m = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    o = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    assert onset_corr_loss(m, o).item() == pytest.approx(0.0, abs=1e-5)
    assert onset_corr_loss(-m, o).item() == pytest.approx(2.0, abs=1e-5)
    assert onset_sync_loss(0.003 + 0.03 * o, o, 0.003, 0.03).item() == pytest.approx(0.0, abs=1e-7)
    assert onset_sync_loss(torch.zeros_like(o), o, 0.003, 0.03).item() > 0.1
    frames = torch.zeros(1, 3, 3, 4, 4)
    frames[:, 1] = 1.0
    assert frame_motion(frames).tolist() == [[1.0, 1.0]]
    ws = torch.randn(2, 5, 3, 4)
    assert latent_regulariser(ws).item() > 0
    assert latent_regulariser(ws[:, :1].expand(-1, 5, -1, -1)).item() < 1e-10
    e = torch.randn(6, 3, 4)
    assert encoder_contrastive_loss(e, e + 0.01 * torch.randn_like(e)) < encoder_contrastive_loss(e, e.flip(0))
    logits = VideoPatchDiscriminator(channels=8)(torch.randn(2, 4, 3, 16, 16))
    assert logits.shape == (2,)


def test_objective_weights_and_bad_weight():
    from sgvis.errors import UserError
    assert resolve_weights(config(objective="sync"))["onset_sync"] > 0
    assert resolve_weights(config(objective="clip"))["clip_av"] > 0
    cfg = config()
    cfg["weights"] = dict(cfg["weights"], image_adv=-1)
    with pytest.raises(UserError, match="image_adv"):
        resolve_weights(cfg)


def test_sync_objective_learns_onset_following_motion_on_a_fixed_batch():
    torch.manual_seed(0)
    G = tiny_generator(resolution=32)
    trainer = EncoderTrainer(G, config(objective="sync"), torch.device("cpu"), MelConfig())
    batch = fixed_batch()
    trainer.calibrate_inputs(batch["mels"])
    history = [trainer.step(batch) for _ in range(24)]
    for h in history:
        assert all(np.isfinite(v) for v in h.values())
    mean = lambda key, part: np.mean([h[key] for h in part])  # noqa: E731
    assert mean("onset_sync", history[-6:]) < 0.8 * mean("onset_sync", history[:3])
    assert mean("onset_corr", history[-6:]) < 0.5 * mean("onset_corr", history[:3])
    # The trained model moves more on the onset frames than elsewhere.
    with torch.no_grad():
        ws = trainer.model(batch["mels"], trainer.model._base(torch.zeros(4, G.num_ws, G.w_dim)))
        img = G.synthesis(ws.flatten(0, 1), noise_mode="const").view(4, 6, 3, 32, 32)
    motion = frame_motion(img)
    on = batch["onset"][:, 1:] > 0
    assert motion[on].mean() > 1.5 * motion[~on].mean()


def test_onset_input_learns_to_move_on_picked_onsets_that_the_mel_does_not_show():
    """Mel windows carry no sign of the onsets here, so only the picked-onset input (sgvis.steer.learned
    onset_input) can tell the recurrent blocks when to move: after training, the rendered frames (the last 6 of 10,
    seen through the contour look) move more on the picked frames, and the latent steps follow them too."""
    from sgvis.backends.look import Look
    torch.manual_seed(0)
    G = tiny_generator(resolution=32)
    weights = dict(TRAIN_DEFAULTS["weights"], onset_sync=1.0, onset_corr=0.5, latent_sync=0.3, offset_limit=1.0,
                   contrastive=0.0, latent_reg=0.0, offset_reg=0.0, image_adv=0.0)
    cfg = config(objective="sync", onset_input=True, clip_frames=10, render_frames=6, lr=1e-3, weights=weights,
                 motion=dict(base=0.01, gain=0.1, release_s=0.0, onsets="picked"),
                 latent_motion=dict(base=0.05, gain=0.5), offset_limit=2.0)
    trainer = EncoderTrainer(G, cfg, torch.device("cpu"), MelConfig(),
                             look=Look({"contours": {"amount": 1.0}}, builtin_model=False))
    assert trainer.look is not None
    batch = fixed_batch(T=10)
    batch["mels"][:] = batch["mels"][:, :1].clone()                     # the same window on every frame
    batch["onset_peak"] = batch["onset"].clone()
    trainer.calibrate_inputs(batch["mels"])
    with torch.no_grad():                 # off the still start, where |frame change| has no gradient (as --init)
        for out in trainer.model.outs.values():
            torch.nn.init.normal_(out.weight, std=1e-3)
    history = [trainer.step(batch) for _ in range(40)]
    assert all(np.isfinite(v) for h in history for v in h.values())
    assert {"latent_sync", "offset_limit", "onset_sync"} <= set(history[0])
    with torch.no_grad():
        ws = trainer.model(batch["mels"], trainer.model._base(torch.zeros(4, G.num_ws, G.w_dim)),
                           onsets=batch["onset"])
        img = G.synthesis(ws.flatten(0, 1), noise_mode="const").view(4, 10, 3, 32, 32)
    on = batch["onset"][:, 1:] > 0
    motion = frame_motion(img)
    assert motion[on].mean() > 2 * motion[~on].mean()
    steps = (ws[:, 1:] - ws[:, :-1]).norm(dim=-1).mean(-1)
    assert steps[on].mean() > 2 * steps[~on].mean()
    # The timing comes through the onset input: driven without it, the same model moves far less on those frames.
    with torch.no_grad():
        blind = trainer.model(batch["mels"], trainer.model._base(torch.zeros(4, G.num_ws, G.w_dim)))
    blind_steps = (blind[:, 1:] - blind[:, :-1]).norm(dim=-1).mean(-1)
    assert steps[on].mean() > 1.5 * blind_steps[on].mean()


def silence_batch(T=12, seed=1):
    """fixed_batch with picked onsets and the window-end rows of 30 fps frames (22050 Hz, hop 512)."""
    batch = fixed_batch(T=T, seed=seed)
    batch["onset_peak"] = batch["onset"].clone()
    rows = torch.round(torch.arange(T) * 22050 / 512 / 30).long()
    batch["mel_rows"] = rows[None].repeat(batch["onset"].shape[0], 1)
    return batch


def test_silence_augmentation_floors_one_span_of_mel_rows_and_drops_its_onsets():
    from sgvis.features.analysis import SILENT_LOG_MEL
    G = tiny_generator(resolution=32)
    cfg = config(objective="sync", onset_input=True, silence=dict(probability=1.0, min_s=0.4, max_s=0.4),
                 motion=dict(base=0.01, gain=0.1, release_s=0.0, onsets="picked"))
    trainer = EncoderTrainer(G, cfg, torch.device("cpu"), MelConfig())
    batch = silence_batch()
    B, T, _, W = batch["mels"].shape
    rows = batch["mel_rows"]
    spans = 0
    for _ in range(6):
        mels, onset, picked, quiet = trainer._silence(batch, batch["mels"], batch["onset"], batch["onset_peak"])
        for b in range(B):
            col_rows = rows[b][:, None] - W + torch.arange(W)                  # [T, W]
            floored = (mels[b] == SILENT_LOG_MEL).all(dim=1)                     # [T, W]: whole mel rows at the floor
            silent_rows = torch.unique(col_rows[floored])
            assert torch.equal(mels[b][~floored[:, None, :].expand_as(mels[b])],
                               batch["mels"][b][~floored[:, None, :].expand_as(mels[b])])   # the rest untouched
            if len(silent_rows):
                spans += 1
                lo, hi = int(silent_rows.min()), int(silent_rows.max())
                assert len(silent_rows) == hi - lo + 1                           # one contiguous span of rows ...
                assert len(silent_rows) <= round(0.4 * 22050 / 512) + 1          # ... 0.4 s long at most
                # the same rows are silent in every window that holds them
                assert torch.equal(floored, (col_rows >= lo) & (col_rows <= hi))
                ends = rows[b] - 1
                expect = ((ends >= lo) & (ends <= hi)).float()
                assert torch.equal(quiet[b], expect)
            assert torch.equal(onset[b], batch["onset"][b] * (1 - quiet[b]))
            assert torch.equal(picked[b], batch["onset_peak"][b] * (1 - quiet[b]))
    assert spans >= B * 6 // 2                 # probability 1: spans that fall before the clip hold no window rows
    trainer.cfg["silence"]["probability"] = 0.0
    mels, onset, _, quiet = trainer._silence(batch, batch["mels"], batch["onset"], batch["onset_peak"])
    assert torch.equal(mels, batch["mels"]) and not quiet.any()


def test_silence_augmentation_teaches_the_steering_to_hold_still_in_silence():
    """Trained on the latent motion target alone (base motion everywhere, more on onsets), a model that also saw
    silent spans keeps its latent nearly still once its mel window is silent; one that never did moves on."""
    def silent_steps(probability):
        torch.manual_seed(0)
        G = tiny_generator(resolution=32)
        weights = dict(TRAIN_DEFAULTS["weights"], onset_sync=0.0, onset_corr=0.0, latent_sync=1.0, offset_limit=0.0,
                       contrastive=0.0, latent_reg=0.0, offset_reg=0.0, image_adv=0.0)
        cfg = config(objective="sync", onset_input=True, clip_frames=12, lr=1e-3, weights=weights,
                     motion=dict(base=0.01, gain=0.1, release_s=0.0, onsets="picked"),
                     latent_motion=dict(base=0.3, gain=0.6),
                     silence=dict(probability=probability, min_s=0.5, max_s=1.0))
        trainer = EncoderTrainer(G, cfg, torch.device("cpu"), MelConfig())
        batches = [silence_batch(seed=s) for s in range(4)]
        trainer.calibrate_inputs(torch.cat([b["mels"] for b in batches]))
        with torch.no_grad():                             # off the still start (as --init from a trained model)
            for out in trainer.model.outs.values():
                torch.nn.init.normal_(out.weight, std=1e-3)
        for i in range(200):              # enough that 1 or 2 threads' rounding does not decide it
            trainer.step(batches[i % 4])
        from sgvis.features.analysis import SILENT_LOG_MEL
        test = silence_batch(seed=9)
        mels, onsets = test["mels"].clone(), test["onset"].clone()
        mels[:, 4:] = SILENT_LOG_MEL                       # the music stops after frame 3: whole windows silent
        onsets[:, 4:] = 0
        with torch.no_grad():
            ws = trainer.model(mels, trainer.model._base(torch.zeros(4, G.num_ws, G.w_dim)), onsets=onsets)
        steps = (ws[:, 1:] - ws[:, :-1]).norm(dim=-1).mean(-1)
        return float(steps[:, 5:].mean()), float(steps[:, :3].mean())
    calm, before = silent_steps(0.7)
    restless, _ = silent_steps(0.0)
    assert calm < 0.3 * restless, (calm, restless)
    assert calm < 0.3 * before, (calm, before)             # it still moved while there was sound


def test_picked_onset_target_needs_picked_onsets_in_the_data():
    from sgvis.errors import UserError
    G = tiny_generator(resolution=32)
    trainer = EncoderTrainer(G, config(objective="sync", motion=dict(base=0.01, gain=0.1, release_s=0.2,
                                                                    onsets="picked")),
                             torch.device("cpu"), MelConfig())
    with pytest.raises(UserError, match="picked onsets"):
        trainer.step(fixed_batch())
    with pytest.raises(UserError, match="motion.onsets"):
        EncoderTrainer(G, config(motion=dict(base=0.01, gain=0.1, release_s=0.2, onsets="loud")),
                       torch.device("cpu"), MelConfig())


def test_clip_objective_lowers_clip_losses_on_a_fixed_batch():
    from sgvis.train.clip_models import AudioClipEncoder, load_clip
    torch.manual_seed(0)
    G = tiny_generator(resolution=32)
    clip = load_clip({"config": TINY_CLIP})
    audio = AudioClipEncoder(clip.embed_dim, MelConfig(), channels=(8, 16)).eval().requires_grad_(False)
    cfg = config(objective="clip")
    trainer = EncoderTrainer(G, cfg, torch.device("cpu"), MelConfig(), clip, audio, ["rain", "drums"])
    batch = fixed_batch(video=True)
    trainer.calibrate_inputs(batch["mels"])
    history = [trainer.step(batch) for _ in range(20)]
    for key in ("clip_av", "clip_at", "image_adv", "video_adv", "d_video", "latent_reg"):
        assert key in history[0] and all(np.isfinite(h[key]) for h in history), key
    for key in ("clip_av", "clip_at"):
        assert np.mean([h[key] for h in history[-3:]]) < history[0][key], key


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    d = tmp_path_factory.mktemp("train_encoder")
    model = d / "g.safetensors"
    stylegan.save(tiny_generator("stylegan2", resolution=32), model)
    data = d / "data"
    data.mkdir()
    for k, bpm in enumerate((100, 140)):
        samples, _ = click_track(2.5, SR, bpm=bpm)
        write_audio(data / f"clicks{k}.wav", samples, SR)
    write_video(data / "clip.mp4", seconds=1.5)
    return d, str(model), str(data)


def train(workspace, out, *extra):
    d, model, data = workspace
    return run_cli("train-encoder", "--model", model, "--data", data, "--out", str(out), "--batch", "2",
                   "--clip-frames", "4", "--device", "cpu", "--set", "train_encoder.loss_resolution=16",
                   "--set", "train_encoder.preview_seconds=1", "--set", "train_encoder.preview_clips=1",
                   *[str(e) for e in extra])


def test_train_encoder_cli_end_to_end_and_resume(workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("SGVIS_CACHE", str(tmp_path / "cache"))
    d, model, data = workspace
    out = tmp_path / "run"
    result = train(workspace, out, "--steps", "3", "--set", "train_encoder.preview_every=3")
    assert result.returncode == 0, result.stderr
    ckpt = out / "steering.safetensors"
    from sgvis.steer.learned import load_steering
    steer = load_steering(str(ckpt), stylegan.load(model, "cpu"))
    assert steer.encoder.in_std.item() != 4.0              # input standardisation was calibrated on the data
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert all(np.isfinite(float(r["onset_sync"])) for r in rows)
    previews = list((out / "previews").glob("*.mp4"))
    assert len(previews) == 1 and previews[0].stat().st_size > 0
    assert json.load(open(out / "options.json"))["weights"]["onset_sync"] > 0

    # Continue the same run.
    result = train(workspace, out, "--steps", "5", "--resume")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4", "5"]
    state = torch.load(out / "training-state.pt", weights_only=True)
    assert state["step"] == 5

    # The checkpoint drives render.
    video = tmp_path / "steered.mp4"
    result = run_cli("render", f"{data}/clicks0.wav", "-o", str(video), "--model", model, "--fps", "15",
                     "--steer", "learned", "--steering", str(ckpt))
    assert result.returncode == 0, result.stderr
    assert video.stat().st_size > 0


def test_train_encoder_bad_input_is_one_line(workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("SGVIS_CACHE", str(tmp_path / "cache"))
    d, model, data = workspace
    cases = [
        (["--data", str(tmp_path / "missing")], "not a folder"),
        (["--objective", "clip"], "CLIP"),
        (["--set", "train_encoder.weights.nonsense=1"], "unknown setting"),
    ]
    for extra, message in cases:
        out = tmp_path / f"o{len(message)}"
        args = ["train-encoder", "--model", model, "--data", data, "--out", str(out), "--steps", "1", *extra]
        if extra[0] == "--data":
            args = ["train-encoder", "--model", model, "--out", str(out), "--steps", "1", *extra]
        result = run_cli(*args)
        assert result.returncode == 2, (extra, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
        assert not out.exists()                      # no output folder left behind
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    result = train(workspace, busy, "--steps", "1")
    assert result.returncode == 2 and "--resume" in result.stderr
    result = train(workspace, tmp_path / "fresh", "--steps", "1", "--resume")
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_train_encoder_init_starts_from_a_checkpoint_for_another_model(workspace, tmp_path, monkeypatch):
    """--init: a retrained generator's steering starts from the old checkpoint's weights (the encoder keeps its
    input standardisation) and the new file is stamped with the new model's hash."""
    from safetensors import safe_open

    from sgvis.steer.directions import model_hash
    from sgvis.steer.learned import load_steering
    monkeypatch.setenv("SGVIS_CACHE", str(tmp_path / "cache"))
    d, model, data = workspace
    assert train(workspace, tmp_path / "a", "--steps", "1").returncode == 0
    old = tmp_path / "a" / "steering.safetensors"
    model2 = tmp_path / "g2.safetensors"
    stylegan.save(tiny_generator("stylegan2", resolution=32, seed=5), model2)
    out = tmp_path / "b"
    result = run_cli("train-encoder", "--model", str(model2), "--data", data, "--out", str(out), "--batch", "2",
                     "--clip-frames", "4", "--device", "cpu", "--steps", "1", "--init", str(old),
                     "--set", "train_encoder.loss_resolution=16", "--set", "train_encoder.lr=0",
                     "--set", "train_encoder.preview_every=0")
    assert result.returncode == 0, result.stderr
    a, b = load_steering(str(old)), load_steering(str(out / "steering.safetensors"))
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, msg=k)          # lr 0: exactly the weights it started from
    with safe_open(str(out / "steering.safetensors"), "pt") as f:
        assert f.metadata()["model_hash"] == model_hash(stylegan.load(str(model2), "cpu"))

    bad = tmp_path / "c"
    result = run_cli("train-encoder", "--model", str(model2), "--data", data, "--out", str(bad), "--steps", "1",
                     "--device", "cpu", "--init", str(old), "--set", "train_encoder.hidden=64")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "architecture differs" in lines[0] and "hidden" in lines[0]
    assert not bad.exists()


def test_shipped_steering_fits_the_default_model_and_drives_render(tmp_path):
    """The built-in checkpoint was trained for the built-in model (same hash), `--steer learned` picks it up with
    no flags, and it moves the image on the clicks."""
    from safetensors import safe_open

    from sgvis.steer.directions import model_hash
    from sgvis.steer.learned import DEFAULT_STEERING
    from sgvis.backends.stylegan import default_model_path
    with safe_open(DEFAULT_STEERING, "pt") as f:
        meta = f.metadata()
    assert meta["model_hash"] == model_hash(stylegan.load(default_model_path(), "cpu"))
    samples, _ = click_track(2.0, SR)
    wav = tmp_path / "clicks.wav"
    write_audio(wav, samples, SR)
    out, stats = tmp_path / "o.mp4", tmp_path / "s.json"
    # fp32 (the generator's precision otherwise depends on the CPU: bf16 where it has AMX), no spatial motion and
    # no drift of the base latent: what moves is the learned steering alone.
    pinned = ["--set", "render.precision=fp32", "--set", "motion.amount=0", "--set", "steer.learned.drift=false"]
    result = run_cli("render", str(wav), "-o", str(out), "--fps", "15", "--steer", "learned", "--stats", str(stats),
                     *pinned)
    assert result.returncode == 0, result.stderr
    assert json.load(open(stats))["steering"] == "learned"
    # It moves the image, against the same render with the learned offset scaled to 0 (a still image), and more
    # of the video's motion peaks land on the 5 clicks than the still image's.
    still = tmp_path / "still.mp4"
    assert run_cli("render", str(wav), "-o", str(still), "--fps", "15", "--steer", "learned",
                   "--set", "steer.learned.intensity=0", *pinned).returncode == 0
    from sgvis.eval.av_align import av_align
    moving, held = av_align(str(out)), av_align(str(still))
    assert moving["smoothness"]["flow_mean"] > 4 * held["smoothness"]["flow_mean"]
    # Peak timing without TempoTokens' 0.1 px floor: the shipped steering's motion is far below it (BENCHMARKS).
    assert moving["hits_unthresholded"] > held["hits_unthresholded"] and moving["audio_peaks"] == 5


def test_steer_learned_without_checkpoint_for_another_model_is_one_line(workspace, tmp_path):
    d, model, data = workspace
    result = run_cli("render", f"{data}/clicks0.wav", "-o", str(tmp_path / "o.mp4"), "--model", model,
                     "--steer", "learned")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--steering PATH" in lines[0]
    assert not (tmp_path / "o.mp4").exists()
