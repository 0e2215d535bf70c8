"""`sgvis eval steering`: every track x steering rendered and scored as rendered and lossless, the baselines, the
comparison it exists for (reactive moves with the clicks, an untrained learned model stands still), the JSON
report, and bad input."""
import json
import os
import re

import pytest
import torch

import stylegan
from audio_fixtures import click_track, write_audio
from conftest import tiny_generator
from test_safety_and_errors import _one_clear_line, run_cli

SR = 22050
FPS = 20


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    G = tiny_generator("stylegan2", resolution=32)
    stylegan.save(G, path)
    return str(path), G.num_ws, G.w_dim


def _steering_checkpoint(path, num_ws, w_dim, moving=True):
    """A learned-steering checkpoint; `moving`: a non-zero encoder head (a stand-in for a trained one)."""
    from sgvis.steer.learned import LearnedSteeringModel, save_steering
    torch.manual_seed(1)
    m = LearnedSteeringModel(num_ws, w_dim, hidden=16, channels=(8, 16), head_hidden=32)
    if moving:
        with torch.no_grad():
            m.encoder.head[-1].weight.normal_(0.0, 2.0)
    save_steering(m, str(path))
    return str(path)


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    samples, _ = click_track(2.0, SR)
    write_audio(d / "clicks.wav", samples, SR)
    (d / "more").mkdir()
    samples, _ = click_track(2.5, SR, bpm=100)
    write_audio(d / "more" / "slow.flac", samples, SR)
    (d / "notes.txt").write_text("not audio")
    return d


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory, model, audio_dir):
    """One run: two tracks (one in a subfolder) x reactive, untrained and a learned checkpoint, plus baselines."""
    d = tmp_path_factory.mktemp("eval")
    ckpt = _steering_checkpoint(d / "mine.safetensors", model[1], model[2])
    out, videos = d / "report.json", d / "videos"
    result = run_cli("eval", "steering", str(audio_dir), "--model", model[0], "--steering", "reactive",
                     "--steer", "untrained", "--steering", ckpt, "--fps", str(FPS), "--seconds", "2",
                     "--baselines", "--label", "clicks", "--json", str(out), "--keep-videos", str(videos),
                     "--set", "motion.amount=0")          # the steerings' own motion: no spatial motion stage
    assert result.returncode == 0, result.stderr
    return result, json.loads(out.read_text()), videos


def test_one_result_per_track_and_steering(evaluation, audio_dir):
    result, report, videos = evaluation
    labels = ["reactive", "untrained", "mine", "still image", "random motion"]
    assert [s["label"] for s in report["steerings"]] == labels
    assert [s["kind"] for s in report["steerings"]] == ["reactive", "untrained", "learned", "baseline:still",
                                                         "baseline:random"]
    assert report["label"] == "clicks" and report["crf"] == 18
    assert sorted(os.path.relpath(t, audio_dir) for t in report["tracks"]) == ["clicks.wav",
                                                                               os.path.join("more", "slow.flac")]
    pairs = [(r["track"], r["steering"]) for r in report["results"]]
    assert sorted(pairs) == sorted((t, lab) for t in report["tracks"] for lab in labels)
    for r in report["results"]:
        assert r["frames"] == 2 * FPS and r["lossless"]["frames"] == 2 * FPS
        assert r["render"] is None if r["kind"].startswith("baseline:") else r["render"]["frames"] == 2 * FPS
        for key in ("av_align", "av_align_unthresholded", "av_align_lossless", "av_align_lossless_unthresholded"):
            assert 0.0 <= r["scores"][key] <= 1.0
        assert r["scores"]["av_align"] == r["av_align"]
        assert r["scores"]["av_align_lossless"] == r["lossless"]["av_align"]
        assert isinstance(r["strobe_flags"], list) and isinstance(r["scores"]["flags"], list)
        assert os.path.isfile(r["video"]) and os.path.dirname(r["video"]) == str(videos)
    assert len(os.listdir(videos)) == 10
    # One table row per track and steering, the track named on its first row; the summary follows.
    lines = result.stdout.splitlines()
    assert "AV-Align" in lines[1] and "lossless" in lines[1] and "no floor" in lines[1]
    rows = [line for line in lines[3:] if line.strip()]
    for lab in labels:
        cell = re.compile(rf"(^|  ){re.escape(lab)}  ")
        assert sum(1 for line in rows if cell.search(line)) == 3           # two track rows + its summary row
    assert any(line.startswith("clicks.wav") for line in lines)
    assert any(line.startswith(os.path.join("more", "slow.flac")) for line in lines)
    assert "summary" in result.stdout and "frozen" in result.stdout and "pulses in silence" in result.stdout


def test_reactive_moves_with_the_clicks_untrained_stands_still(evaluation):
    _, report, _ = evaluation
    by = {(r["name"], r["steering"]): r for r in report["results"]}
    for track in ("clicks.wav", os.path.join("more", "slow.flac")):
        still, reactive = by[(track, "untrained")], by[(track, "reactive")]
        assert still["render"]["steering"] == "learned" and reactive["render"]["steering"] == "reactive"
        assert still["smoothness"]["flow_mean"] < 0.01 or still["av_align"] == 0.0, still["smoothness"]
        assert reactive["smoothness"]["flow_mean"] > 10 * max(still["smoothness"]["flow_mean"], 1e-3)
        assert reactive["av_align"] > still["av_align"], (reactive["av_align"], still["av_align"])
    s = report["summary"]
    assert s["reactive"]["mean_av_align"] > s["untrained"]["mean_av_align"]


def test_learned_checkpoint_column(evaluation):
    _, report, _ = evaluation
    rows = [r for r in report["results"] if r["steering"] == "mine"]
    assert len(rows) == 2
    for r in rows:
        assert r["kind"] == "learned" and r["render"]["steering"] == "learned"
        assert r["smoothness"]["flow_mean"] > 0.01                  # a non-zero encoder moves the latent


def test_baselines_are_produced_and_scored(evaluation):
    _, report, _ = evaluation
    for track in report["tracks"]:
        by = {r["steering"]: r for r in report["results"] if r["track"] == track}
        still, random = by["still image"], by["random motion"]
        assert still["kind"] == "baseline:still" and random["kind"] == "baseline:random"
        # The still picture: no flow at all lossless, so no peaks with or without the floor; frozen.
        assert still["lossless"]["av_align"] == 0.0 and still["lossless"]["av_align_unthresholded"] == 0.0
        assert still["scores"]["frozen"] and "frozen" in still["scores"]["flags"]
        # Through the codec its noise stays under the 0.1 px floor too.
        assert still["av_align"] == 0.0
        # Random motion moves visibly in nearly every step, smoothly, without cuts.
        assert not random["scores"]["frozen"] and random["scores"]["moving_share"] > 0.9
        assert random["scores"]["cuts"] == 0 and random["lossless"]["video_peaks"] > 0
        assert random["lossless"]["smoothness"]["strobe_flags"] == []
    s = report["summary"]
    assert s["still image"]["frozen_tracks"] == 2 and s["random motion"]["frozen_tracks"] == 0


def test_baselines_alone(tmp_path, model, audio_dir):
    from sgvis.eval.steering import evaluate_steering
    report = evaluate_steering([str(audio_dir / "clicks.wav")], [], model=model[0], fps=10, seconds=1.0,
                               baselines=True, progress=False)
    assert [r["steering"] for r in report["results"]] == ["still image", "random motion"]
    assert report["summary"]["still image"]["mean_av_align_lossless"] == 0.0


def test_json_summary(evaluation):
    _, report, _ = evaluation
    assert report["fps"] == FPS and report["seconds"] == 2 and report["seed"] == 0
    assert report["steerings"][2]["path"].endswith("mine.safetensors")
    assert report["thresholds"]["peak_min_flow"] == 0.1
    for label, s in report["summary"].items():
        rows = [r for r in report["results"] if r["steering"] == label]
        assert s["tracks"] == 2
        assert s["mean_av_align"] == pytest.approx(sum(r["av_align"] for r in rows) / 2)
        assert s["mean_av_align_lossless_unthresholded"] == pytest.approx(
            sum(r["lossless"]["av_align_unthresholded"] for r in rows) / 2)
        assert s["frozen_tracks"] == sum(1 for r in rows if r["lossless"]["motion"]["frozen"])
        assert s["mean_jerk"] == pytest.approx(sum(r["smoothness"]["jerk"] for r in rows) / 2)
        assert s["strobe_tracks"] == sum(1 for r in rows if r["strobe_flags"])
        for key in ("mean_spike_fraction", "mean_frame_change_p95", "mean_flow"):
            assert isinstance(s[key], float)
    r = report["results"][0]
    for key in ("hits", "audio_peaks", "video_peaks", "flow", "audio_peak_times", "smoothness"):
        assert key in r


def test_saved_report_prints_again(evaluation, tmp_path):
    result, report, _ = evaluation
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    again = run_cli("eval", "report", str(path))
    assert again.returncode == 0, again.stderr
    assert again.stdout == result.stdout
    path.write_text("{}")
    _one_clear_line(run_cli("eval", "report", str(path)), "not a report")


def test_no_audio_found(tmp_path, model):
    (tmp_path / "readme.txt").write_text("x")
    result = run_cli("eval", "steering", str(tmp_path), "--model", model[0], "--steering", "reactive")
    _one_clear_line(result, "no audio files")
    _one_clear_line(run_cli("eval", "steering", str(tmp_path / "missing.wav"), "--model", model[0],
                            "--steering", "reactive"), "missing.wav")


def test_bad_steering_checkpoints(tmp_path, model, audio_dir):
    track = str(audio_dir / "clicks.wav")
    other = _steering_checkpoint(tmp_path / "other.safetensors", model[1] + 2, model[2], moving=False)
    _one_clear_line(run_cli("eval", "steering", track, "--model", model[0], "--steering", "reactive",
                            "--steering", other), "num_ws")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    _one_clear_line(run_cli("eval", "steering", track, "--model", model[0], "--steering", str(junk)), "junk")
    _one_clear_line(run_cli("eval", "steering", track, "--model", model[0], "--steering", "reactiv"), "reactiv")
    _one_clear_line(run_cli("eval", "steering", track, "--model", model[0]), "--steering")
    # The built-in learned checkpoint fits the built-in model only.
    _one_clear_line(run_cli("eval", "steering", track, "--model", model[0], "--steering", "learned"), "built-in")
    _one_clear_line(run_cli("eval", "steering", track, "--model", model[0], "--steering", "reactive",
                            "--text", "a cat"), "--clip-path")
    assert not os.path.exists("clicks__reactive.mp4")


TINY_CLIP = {"projection_dim": 16,
             "text_config": dict(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=16),
             "vision_config": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   image_size=32, patch_size=8)}


@pytest.fixture(scope="module")
def audio_encoder(tmp_path_factory):
    from sgvis.train.clip_models import AudioClipEncoder, save_audio_encoder
    path = tmp_path_factory.mktemp("aclip") / "audio-clip.safetensors"
    torch.manual_seed(2)
    save_audio_encoder(AudioClipEncoder(16, channels=(8,), head_hidden=16), str(path))
    return str(path)


def test_clip_figures_with_a_tiny_random_clip(model, audio_dir, audio_encoder):
    pytest.importorskip("transformers")
    from sgvis.eval.steering import evaluate_steering, format_report
    report = evaluate_steering([str(audio_dir / "clicks.wav")], ["reactive", "untrained"], model=model[0], fps=10,
                               seconds=1.0, size=16, clip={"config": TINY_CLIP}, audio_clip=audio_encoder,
                               text="a red square", progress=False, overrides=["motion.amount=0"])
    assert len(report["results"]) == 2
    for r in report["results"]:
        c = r["clip"]
        assert c["frames"] == 10 and len(c["av_clip_per_frame"]) == 10 and c["text"] == "a red square"
        assert -1 <= c["av_clip"] <= 1 and -1 <= c["clipsim"] <= 1
        assert report["summary"][r["steering"]]["mean_clipsim"] == pytest.approx(c["clipsim"])
        assert report["summary"][r["steering"]]["mean_av_clip"] == pytest.approx(c["av_clip"])
    # The untrained model renders one still image: one text similarity throughout; the reactive one moves.
    by = {r["steering"]: r["clip"] for r in report["results"]}
    assert max(by["untrained"]["clipsim_per_frame"]) - min(by["untrained"]["clipsim_per_frame"]) < 1e-3
    assert max(by["reactive"]["clipsim_per_frame"]) - min(by["reactive"]["clipsim_per_frame"]) > 1e-4
    text = format_report(report)
    assert "CLIPSIM" in text and "AV-CLIP" in text and "audio-visual CLIP similarity per track" in text


def test_clip_path_on_the_command_line(tmp_path, model, audio_dir, audio_encoder):
    transformers = pytest.importorskip("transformers")
    from sgvis.train.clip_models import model_from_config
    clip_dir = tmp_path / "clip"
    model_from_config(TINY_CLIP, transformers)[0].save_pretrained(str(clip_dir))      # no tokenizer files
    out = tmp_path / "r.json"
    track = str(audio_dir / "clicks.wav")
    result = run_cli("eval", "steering", track, "--model", model[0], "--steering", "untrained", "--fps", "10",
                     "--seconds", "1", "--size", "16", "--clip-path", str(clip_dir), "--audio-clip", audio_encoder,
                     "--json", str(out))
    assert result.returncode == 0, result.stderr
    r = json.loads(out.read_text())["results"][0]
    assert "av_clip" in r["clip"] and "clipsim" not in r["clip"]
    assert "AV-CLIP" in result.stdout and "CLIPSIM" not in result.stdout
    # CLIPSIM needs a tokenizer, which this folder lacks; a missing folder; an audio encoder for another CLIP.
    _one_clear_line(run_cli("eval", "steering", track, "--model", model[0], "--steering", "untrained",
                            "--clip-path", str(clip_dir), "--text", "a cat"), "tokenizer")
    _one_clear_line(run_cli("eval", "steering", track, "--model", model[0], "--steering", "untrained",
                            "--clip-path", str(tmp_path / "nope"), "--audio-clip", audio_encoder), "nope")
    from sgvis.train.clip_models import AudioClipEncoder, save_audio_encoder
    other = tmp_path / "other.safetensors"
    save_audio_encoder(AudioClipEncoder(8, channels=(8,), head_hidden=8), str(other))
    _one_clear_line(run_cli("eval", "steering", track, "--model", model[0], "--steering", "untrained",
                            "--clip-path", str(clip_dir), "--audio-clip", str(other)), "embeddings of size")


def test_the_model_is_loaded_once_for_every_render(model, audio_dir, monkeypatch):
    """Two tracks x two steerings: one model load, and the untrained steering never touches the disk."""
    import stylegan as sg
    from sgvis.eval.steering import evaluate_steering
    loads, saves = [], []
    real_load = sg.load
    monkeypatch.setattr(sg, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    import sgvis.steer.learned as learned
    monkeypatch.setattr(learned, "save_steering", lambda *a, **k: saves.append(a))
    report = evaluate_steering([str(audio_dir)], ["reactive", "untrained"], model=model[0], fps=10,
                               seconds=1.0, progress=False, overrides=["motion.amount=0"])
    assert len(report["results"]) == 4
    assert len(loads) == 1 and not saves
