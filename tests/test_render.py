"""`sgvis render`: audio file -> mp4 with the audio muxed in, every stage and the bad inputs."""
import json
import os
import threading

import numpy as np
import pytest

import stylegan
from audio_fixtures import click_track, read_video, write_audio, write_video
from conftest import tiny_generator
from test_safety_and_errors import _one_clear_line, run_cli

SR = 22050


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    stylegan.save(tiny_generator("stylegan2", resolution=32), path)
    return str(path)


@pytest.fixture(scope="module")
def clicks(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    samples, times = click_track(3.0, SR)
    path = d / "clicks.wav"
    write_audio(path, samples, SR)
    return str(path), times


def render(*args):
    return run_cli("render", *[str(a) for a in args])


def test_render_writes_mp4_with_audio_of_equal_duration(tmp_path, model, clicks):
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    result = render(clicks[0], "-o", out, "--model", model, "--fps", 20, "--stats", stats)
    assert result.returncode == 0, result.stderr
    frames, vdur, adur, codec = read_video(out)
    assert frames.shape == (60, 32, 32, 3)
    assert codec == "aac"
    assert abs(vdur - 3.0) <= 1 / 20 and abs(adur - 3.0) <= 1 / 20
    s = json.loads(stats.read_text())
    for key in ("frames", "seconds_of_audio", "wall_seconds", "frames_per_second", "stage_frames_per_second",
                "device", "model", "steering"):
        assert key in s
    assert s["frames"] == 60 and s["steering"] == "reactive"
    assert 0 < s["setup_seconds"] < s["time_to_first_frame_s"] < s["setup_seconds"] + s["wall_seconds"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".sgvis")]


def test_motion_follows_the_clicks(tmp_path, model, clicks):
    """Frame-to-frame change is larger right after clicks than elsewhere."""
    out = tmp_path / "o.mp4"
    assert render(clicks[0], "-o", out, "--model", model, "--fps", 25).returncode == 0
    frames = read_video(out)[0].astype(np.float32)
    change = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))       # change into frame k+1
    click_frames = {int(round(t * 25)) + d for t in clicks[1] for d in (-1, 0, 1, 2)}
    near = [c for k, c in enumerate(change) if k + 1 in click_frames]
    far = [c for k, c in enumerate(change) if k + 1 not in click_frames]
    assert np.mean(near) > 1.5 * np.mean(far), (np.mean(near), np.mean(far))


def test_options_size_trim_png_seed(tmp_path, model, clicks):
    out, pngs = tmp_path / "o.mp4", tmp_path / "frames"
    result = render(clicks[0], "-o", out, "--model", model, "--fps", 10, "--size", "48x36", "--start", 0.5,
                    "--end", 2.0, "--png-dir", pngs, "--seed", 3)
    assert result.returncode == 0, result.stderr
    frames, vdur, adur, _ = read_video(out)
    assert frames.shape == (15, 36, 48, 3)
    assert abs(adur - 1.5) <= 0.1 and abs(vdur - 1.5) <= 0.1
    assert sorted(os.listdir(pngs))[:2] == ["frame_000000.png", "frame_000001.png"] and len(os.listdir(pngs)) == 15
    out2 = tmp_path / "o2.mp4"
    assert render(clicks[0], "-o", out2, "--model", model, "--fps", 10, "--end", 1.0, "--seed", 4).returncode == 0
    assert not np.array_equal(read_video(out2)[0][0], frames[0])


def test_draft_render_is_a_softer_picture_of_the_same_size(tmp_path, model, clicks):
    """render.draft (a quick preview): the synthesis stops at that resolution and the picture is scaled up."""
    full, draft = tmp_path / "full", tmp_path / "draft"
    base = [clicks[0], "--model", model, "--fps", 10, "--end", 1.0, "--set", "motion.amount=0"]
    assert render(*base, "-o", tmp_path / "f.mp4", "--png-dir", full).returncode == 0
    result = render(*base, "-o", tmp_path / "d.mp4", "--png-dir", draft, "--set", "render.draft=16")
    assert result.returncode == 0, result.stderr
    from PIL import Image
    a = np.stack([np.asarray(Image.open(full / n)) for n in sorted(os.listdir(full))]).astype(float)
    b = np.stack([np.asarray(Image.open(draft / n)) for n in sorted(os.listdir(draft))]).astype(float)
    assert a.shape == b.shape == (10, 32, 32, 3)
    err = np.abs(a - b).mean()
    assert 0 < err < np.abs(a - a.mean()).mean()              # the same picture, softer
    bad = render(*base, "-o", tmp_path / "x.mp4", "--set", "render.draft=big")
    assert bad.returncode == 2 and "render.draft" in bad.stderr and not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize("ext", ["flac", "ogg", "mp3", "m4a"])
def test_audio_formats(tmp_path, model, ext):
    samples, _ = click_track(1.0, SR)
    src = tmp_path / f"in.{ext}"
    write_audio(src, samples, SR)
    out = tmp_path / "o.mp4"
    result = render(src, "-o", out, "--model", model, "--fps", 10)
    assert result.returncode == 0, result.stderr
    frames, vdur, adur, _ = read_video(out)
    assert len(frames) == 10 and abs(adur - 1.0) <= 0.1


def test_video_input_uses_its_sound(tmp_path, model):
    src = tmp_path / "clip.mp4"
    write_video(src, seconds=1.0)
    out = tmp_path / "o.mp4"
    assert render(src, "-o", out, "--model", model, "--fps", 12).returncode == 0
    assert len(read_video(out)[0]) == 12


@pytest.mark.parametrize("kind", ["silence", "dc", "clipping", "tiny", "rate8k", "rate192k"])
def test_awkward_audio_is_handled(tmp_path, model, kind):
    sr = {"rate8k": 8000, "rate192k": 192000}.get(kind, SR)
    n = {"tiny": 100}.get(kind, sr)
    t = np.arange(n) / sr
    x = {"silence": np.zeros(n), "dc": np.full(n, 0.5), "clipping": np.clip(5 * np.sin(2 * np.pi * 100 * t), -1, 1),
         "tiny": 0.3 * np.sin(2 * np.pi * 440 * t)}.get(kind, 0.3 * np.sin(2 * np.pi * 440 * t))
    src = tmp_path / "in.wav"
    write_audio(src, x.astype(np.float32), sr)
    out = tmp_path / "o.mp4"
    result = render(src, "-o", out, "--model", model, "--fps", 10)
    assert result.returncode == 0, result.stderr
    frames = read_video(out)[0]
    assert len(frames) >= 1 and np.isfinite(frames.astype(float)).all()


def _bad(tmp_path, model, clicks, case):
    out = tmp_path / "o.mp4"
    src = clicks[0]
    args = []
    if case == "missing":
        src = tmp_path / "nope.wav"
    elif case == "directory":
        src = tmp_path
    elif case == "corrupt":
        src = tmp_path / "bad.mp3"
        src.write_bytes(b"ID3" + os.urandom(3000))
    elif case == "no-audio-track":
        src = tmp_path / "silent.mp4"
        write_video(src, with_audio=False)
    elif case == "zero-length":
        src = tmp_path / "empty.wav"
        write_audio(src, np.zeros(0, np.float32), SR)
    elif case == "unwritable":
        out = tmp_path / "no" / "such" / "dir" / "o.mp4"
    elif case == "bad-model":
        bad = tmp_path / "model.pkl"
        bad.write_bytes(b"not a model")
        args = ["--model", bad]
    elif case == "exists":
        out.write_bytes(b"keep me")
    elif case == "bad-set":
        args = ["--set", "steer.no_such_knob=3"]
    elif case == "start-beyond-end":
        args = ["--start", "100"]
    if "--model" not in args:
        args += ["--model", model]
    return src, out, render(src, "-o", out, *args)


@pytest.mark.parametrize("case,expected", [
    ("missing", "no such file"), ("directory", "directory"), ("corrupt", "cannot read"),
    ("no-audio-track", "without an audio track"), ("zero-length", "empty"), ("unwritable", "cannot write"),
    ("bad-model", "not a StyleGAN checkpoint"), ("exists", "--overwrite"), ("bad-set", "no_such_knob"),
    ("start-beyond-end", "beyond the end")])
def test_bad_input_one_line_exit_2_no_output(tmp_path, model, clicks, case, expected):
    src, out, result = _bad(tmp_path, model, clicks, case)
    _one_clear_line(result, expected)
    if case == "exists":
        assert out.read_bytes() == b"keep me"
    else:
        assert not out.exists()
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".sgvis")]
    assert not leftovers


def test_interrupt_removes_partial_output(tmp_path, model, clicks, monkeypatch):
    """Ctrl-C in the middle of a render leaves no file behind."""
    from sgvis.backends import stylegan as generation
    calls = {"n": 0}
    original = generation.StyleGANBackend.frames

    def interrupted(self, ws, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, ws, **kw)

    monkeypatch.setattr(generation.StyleGANBackend, "frames", interrupted)
    out = tmp_path / "o.mp4"
    result = render(clicks[0], "-o", out, "--model", model, "--fps", 30, "--png-dir", tmp_path / "png")
    assert result.returncode == 130
    assert not out.exists() and not (tmp_path / "png").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".sgvis")]
    assert not [t for t in threading.enumerate() if t.name in ("analysis", "encoder") and t.is_alive()]


def test_presets_change_the_motion(tmp_path, model, clicks):
    outs = {}
    for preset in ("calm", "energetic"):
        out = tmp_path / f"{preset}.mp4"
        assert render(clicks[0], "-o", out, "--model", model, "--fps", 15, "--preset", preset).returncode == 0
        frames = read_video(out)[0].astype(np.float32)
        outs[preset] = np.abs(np.diff(frames, axis=0)).mean()
    assert outs["energetic"] > outs["calm"]


def test_default_model_is_used_without_model_flag(tmp_path):
    """A fresh install renders with the model shipped in the package."""
    from sgvis.backends.stylegan import default_model_path
    samples, _ = click_track(0.5, SR)
    src = tmp_path / "short.wav"
    write_audio(src, samples, SR)
    out = tmp_path / "o.mp4"
    assert os.path.exists(default_model_path())
    result = render(src, "-o", out, "--fps", 10)
    assert result.returncode == 0, result.stderr
    frames = read_video(out)[0]
    G = stylegan.load(default_model_path())
    assert frames.shape == (5, G.img_resolution, G.img_resolution, 3)


def test_demo_writes_track_and_video(tmp_path, model):
    """`sgvis demo` (README's first command): a synthesized track and its rendering, equally long."""
    out = tmp_path / "demo.mp4"
    result = run_cli("demo", str(out), "--model", model)
    assert result.returncode == 0, result.stderr
    from sgvis.audio import decode as audio_in
    track = audio_in.probe(str(tmp_path / "demo.wav"))
    video = audio_in.probe(str(out))
    assert track.duration > 20 and abs(video.duration - track.duration) < 0.1 and video.has_video
    result = run_cli("demo", str(out), "--model", model)
    assert result.returncode == 2 and "--overwrite" in result.stderr
