"""The pipeline's seams (backends, steering modes, sinks, controls), the CLI around them, and outputs that never
lose a user's file."""
import json
import os
import subprocess
import sys
import venv

import numpy as np
import pytest
import torch

import stylegan
from audio_fixtures import click_track, read_video, write_audio
from conftest import tiny_generator
from test_safety_and_errors import _one_clear_line, run_cli

SR = 22050
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    stylegan.save(tiny_generator("stylegan2", resolution=32), path)
    return str(path)


@pytest.fixture(scope="module")
def clicks(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "clicks.wav"
    samples, _ = click_track(1.0, SR)
    write_audio(path, samples, SR)
    return str(path)


# -- seams: a new sink, control producer, steering mode or backend is one registry line ----------------------
class CountingSink:
    """A throwaway sink: keeps the frames it is given."""
    opened = []

    def __init__(self, target, context):
        self.target, self.context, self.frames, self.closed = target, context, [], False
        CountingSink.opened.append(self)

    def write(self, frame):
        self.frames.append(frame.copy())

    def close(self):
        self.closed = True

    def abort(self):
        pass


def test_a_sink_added_through_the_registry_gets_every_frame(tmp_path, model, clicks):
    from sgvis.outputs import SINKS, FrameSink
    SINKS.register("counting", CountingSink)
    CountingSink.opened.clear()
    try:
        out = tmp_path / "o.mp4"
        result = run_cli("render", clicks, "-o", str(out), "--model", model, "--fps", "10",
                         "--out", "counting:anything", "--png-dir", str(tmp_path / "png"))
    finally:
        SINKS.unregister("counting")
    assert result.returncode == 0, result.stderr
    (sink,) = CountingSink.opened
    assert isinstance(sink, FrameSink) and sink.closed and sink.target == "anything"
    assert sink.context.size == (32, 32) and sink.context.fps == 10
    from PIL import Image
    pngs = [np.asarray(Image.open(tmp_path / "png" / f"frame_{i:06d}.png")) for i in range(10)]
    assert len(sink.frames) == len(read_video(out)[0]) == 10
    assert np.array_equal(np.stack(sink.frames), np.stack(pngs))            # the same pictures


def test_unknown_output_names_what_exists(tmp_path, model, clicks):
    result = run_cli("render", clicks, "-o", str(tmp_path / "o.mp4"), "--model", model, "--out", "smoke:stage")
    _one_clear_line(result, "unknown output 'smoke'")
    assert "png" in result.stderr and not os.listdir(tmp_path)


def test_a_steering_mode_added_through_the_registry_drives_the_backend(tmp_path, model):
    from sgvis.backends import BACKENDS, Backend
    from sgvis.features.analysis import Features
    from sgvis.steer import STEERINGS, Steering, make_steering

    class StillSteering(Steering):
        name = "still"

        def __init__(self, G):
            self.w = G.mapping.w_avg.expand(G.num_ws, -1).clone()

        def reset(self, seed):
            pass

        def step(self, features):
            return self.w

    STEERINGS.register("still", lambda G, cfg, seed, checkpoint=None, cache_dir=None: StillSteering(G))
    try:
        backend = BACKENDS.create("stylegan", model=model, device="cpu", precision="fp32")
        assert isinstance(backend, Backend) and backend.latent_model is not None
        steering = make_steering(backend, {"mode": "still"}, seed=0)
        frames = backend.frames(torch.stack([steering.step(Features(time=t)) for t in (0.0, 0.1)]))
    finally:
        STEERINGS.unregister("still")
    assert frames.shape == (2, 32, 32, 3) and frames.dtype == torch.uint8
    assert torch.equal(frames[0], frames[1])


def test_crossfade_blends_without_a_jump():
    from sgvis.features.analysis import Features
    from sgvis.steer import Crossfade, Steering

    class Constant(Steering):
        def __init__(self, value):
            self.value = value

        def step(self, features):
            return torch.full((2, 3), float(self.value))

    fade = Crossfade(Constant(0.0), Constant(1.0), seconds=1.0)
    values = [float(fade.step(Features(time=t))[0, 0]) for t in np.arange(0.0, 1.3, 0.1)]
    assert values[0] == 0.0 and values[-1] == 1.0 and fade.done
    assert all(b >= a for a, b in zip(values, values[1:]))          # monotone
    assert max(np.diff(values)) < 0.2                               # no step larger than a smooth blend's


def test_control_bus_checks_names_types_and_ranges_per_source():
    import threading
    from sgvis.control import ControlBus, standard_controls
    bus = ControlBus(standard_controls(presets=["calm", "energetic"]))
    assert bus.send("intensity", 99, "osc") and bus.get("intensity") == 8.0          # clamped into range
    assert not bus.send("intensity", "loud", "osc")
    assert not bus.send("preset", "nope", "midi") and not bus.send("warp", 1, "midi")
    assert bus.send("preset", "calm", "midi")

    def hammer():
        for _ in range(500):
            bus.scale("speed", 1.0, "t")
    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = bus.report()["sources"]
    assert report["osc"] == {"received": 2, "rejected": 1, "last_error": report["osc"]["last_error"]}
    assert "number" in report["osc"]["last_error"]
    assert report["midi"]["rejected"] == 2 and report["t"]["received"] == 2000
    names = [e.name for e in bus.drain()]
    assert names[:2] == ["intensity", "preset"] and len(names) == 2002 and bus.drain() == []


def test_keys_are_a_producer_of_control_events():
    from sgvis.control import ControlBus, standard_controls
    from sgvis.control.keys import KeyControls
    bus = ControlBus(standard_controls(presets=["calm", "energetic"]))
    keys = KeyControls()
    keys.start(bus)
    assert keys.press("space") and bus.get("freeze") is True
    assert keys.press("UP") and bus.get("intensity") == pytest.approx(1.25)
    assert keys.press("2") and bus.get("preset") == "energetic"
    assert not keys.press("9") and not keys.press("F12")
    assert [e.source for e in bus.drain()] == ["keys"] * 3


# -- one steering switch ---------------------------------------------------------------------------------------
def test_a_steering_file_with_reactive_is_an_error_not_ignored(tmp_path, model, clicks):
    steering = tmp_path / "s.safetensors"
    steering.write_bytes(b"x")
    result = run_cli("render", clicks, "-o", str(tmp_path / "o.mp4"), "--model", model, "--steer", "reactive",
                     "--steering", str(steering))
    _one_clear_line(result, "--steer learned")
    assert not (tmp_path / "o.mp4").exists()


def test_steering_file_alone_means_learned(tmp_path, model, clicks):
    bad = tmp_path / "not-steering.safetensors"
    stylegan.save(tiny_generator("stylegan2", resolution=32), bad)     # a generator, not a steering file
    result = run_cli("render", clicks, "-o", str(tmp_path / "o.mp4"), "--model", model, "--steering", str(bad))
    _one_clear_line(result, "not an sgvis steering checkpoint")


# -- the command line -----------------------------------------------------------------------------------------
def test_version_and_help_answer_without_loading_torch():
    code = ("import sys\nfrom sgvis.cli import main\n"
            "for argv in (['--help'], ['--version'], ['render', '--help'], ['live', '--bogus'],\n"
            "             ['train-gan', '--bogus'], ['train-encoder', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('TORCH', 'torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "sgvis 0.1.0" in result.stdout and "usage: sgvis render" in result.stdout
    assert "--bogus" in result.stderr and "usage: sgvis train-encoder" in result.stdout
    assert result.stdout.strip().endswith("TORCH False")


def test_every_command_is_listed_and_runs_its_own_parser():
    from sgvis.cli import COMMANDS, build_parser
    parser = build_parser()                          # every module registers: the table and modules agree
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
    for name, p in sub.choices.items():
        assert p.get_default("func") is not None, name


def test_info_default_and_info_on_a_steering_file(tmp_path):
    from sgvis.backends.stylegan import default_model_path
    from sgvis.steer.learned import DEFAULT_STEERING
    result = run_cli("info", "default")
    assert result.returncode == 0, result.stderr
    assert default_model_path() in result.stdout and "resolution" in result.stdout
    result = run_cli("info", DEFAULT_STEERING)
    assert result.returncode == 0, result.stderr
    assert "learned-steering" in result.stdout and "convert" not in result.stdout


def test_model_default_renders_the_built_in_model(tmp_path, clicks):
    out = tmp_path / "d.mp4"
    result = run_cli("render", clicks, "-o", str(out), "--model", "default", "--fps", "5", "--size", "64")
    assert result.returncode == 0, result.stderr
    assert read_video(out)[0].shape == (5, 64, 64, 3)


def test_packages_in_pyproject_are_every_package_folder():
    import tomllib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = {"sgvis.configs"}
    for top in ("sgvis", "stylegan", "cuda_ops"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            if "__init__.py" in files:
                found.add(os.path.relpath(folder, ROOT).replace(os.sep, "."))
    assert listed == found


@pytest.mark.slow
def test_wheel_install_renders_with_a_preset(tmp_path, clicks):
    """Not editable: the wheel in a fresh venv (sharing this interpreter's torch & co.) finds its presets."""
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(wheels), ROOT], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    py = str(env_dir / "bin" / "python")
    (wheel,) = wheels.glob("sgvis-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps",
                              str(wheel)], capture_output=True, text=True, timeout=600)
    if install.returncode and "no such option: --python" in install.stderr:
        install = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                                 capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([py, "-c", "import sgvis, sgvis.config as c; print(sgvis.__file__, c.CONFIG_DIR)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert str(env_dir) in where.stdout, where.stdout + where.stderr        # the wheel, not the source tree
    result = subprocess.run([py, "-m", "sgvis", "render", clicks, "-o", "calm.mp4", "--preset", "calm",
                             "--fps", "5", "--size", "32"], cwd=work, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_video(work / "calm.mp4")[0].shape[0] == 5


# -- outputs never lose a user's file -------------------------------------------------------------------------
def test_png_dir_overwrite_keeps_everything_it_did_not_write(tmp_path, model, clicks):
    folder = tmp_path / "p"
    folder.mkdir()
    song = folder / "song.wav"
    song.write_bytes(open(clicks, "rb").read())
    (folder / "notes.txt").write_text("mine")
    (folder / "sub").mkdir()
    (folder / "frame_000099.png").write_bytes(b"stale frame of an earlier render")
    out = folder / "song.mp4"
    result = run_cli("render", str(song), "-o", str(out), "--model", model, "--fps", "5",
                     "--png-dir", str(folder), "--overwrite")
    assert result.returncode == 0, result.stderr
    assert song.exists() and (folder / "notes.txt").read_text() == "mine" and (folder / "sub").is_dir()
    assert out.exists()
    pngs = sorted(p.name for p in folder.glob("frame_*.png"))
    assert pngs == [f"frame_{i:06d}.png" for i in range(5)]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".sgvis")]


def test_stats_file_is_not_replaced_without_overwrite(tmp_path, model, clicks):
    stats = tmp_path / "stats.json"
    stats.write_text("keep me")
    result = run_cli("render", clicks, "-o", str(tmp_path / "o.mp4"), "--model", model, "--stats", str(stats))
    _one_clear_line(result, "already exists")
    assert stats.read_text() == "keep me" and not (tmp_path / "o.mp4").exists()


def test_output_equal_to_input_is_refused(tmp_path, model, clicks):
    song = tmp_path / "song.mp4"
    song.write_bytes(open(clicks, "rb").read())                   # wav data behind an .mp4 name
    before = song.read_bytes()
    result = run_cli("render", str(song), "-o", str(song), "--model", model, "--overwrite")
    _one_clear_line(result, "also an input")
    assert song.read_bytes() == before


def test_a_file_created_at_the_output_during_the_render_is_kept(tmp_path, model, clicks, monkeypatch):
    from sgvis.outputs import files
    out = tmp_path / "o.mp4"
    original = files.VideoSink.write

    def write(self, frame):
        if self.frames_written == 2 and not out.exists():
            out.write_text("someone else's file")
        original(self, frame)

    monkeypatch.setattr(files.VideoSink, "write", write)
    result = run_cli("render", clicks, "-o", str(out), "--model", model, "--fps", "5")
    assert result.returncode == 0, result.stderr
    assert out.read_text() == "someone else's file"
    assert read_video(tmp_path / "o-1.mp4")[0].shape[0] == 5
    assert "o-1.mp4" in result.stderr and "o-1.mp4" in result.stdout


@pytest.mark.parametrize("ext,container", [(".mkv", "matroska"), (".mov", "mov"), (".webm", "webm"),
                                           (".gif", "gif")])
def test_output_extension_picks_the_container(tmp_path, model, clicks, ext, container):
    import av
    out = tmp_path / f"o{ext}"
    result = run_cli("render", clicks, "-o", str(out), "--model", model, "--fps", "5")
    assert result.returncode == 0, result.stderr
    with av.open(str(out)) as c:
        assert container in c.format.name
        assert sum(1 for _ in c.decode(video=0)) == 5


def test_unknown_output_extension_is_refused(tmp_path, model, clicks):
    result = run_cli("render", clicks, "-o", str(tmp_path / "o.avi"), "--model", model)
    _one_clear_line(result, "cannot write a .avi video")
    assert not os.listdir(tmp_path)


def test_stream_resampler_keeps_time_and_pitch_across_pushes():
    from sgvis.audio import StreamResampler
    rate_in, rate_out = 48000, 22050
    t = np.arange(rate_in) / rate_in
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    r = StreamResampler(rate_in, rate_out)
    out = np.concatenate([b for i in range(0, rate_in, 256) for b in r.push(tone[i:i + 256])])
    assert abs(len(out) - rate_out) < 64                       # one second in, about one second out
    spectrum = np.abs(np.fft.rfft(out[1000:1000 + 16384]))
    assert abs(np.argmax(spectrum) * rate_out / 16384 - 440) < 3
    same = StreamResampler(rate_out, rate_out)
    assert np.array_equal(np.concatenate(same.push(out[:500])), out[:500])


def test_demo_with_an_audio_name_is_refused_before_anything_is_written(tmp_path):
    """`sgvis demo d.wav` used to write its track as d.wav and then fail on the existing d.wav, leaving it."""
    result = run_cli("demo", str(tmp_path / "d.wav"))
    _one_clear_line(result, "cannot write a .wav video")
    assert not os.listdir(tmp_path)
