"""Fault injection: every command that writes, stopped by a signal at a known point, leaves nothing of its own
behind and exits with 128 + the signal's number (130 for Ctrl-C / SIGINT, 143 for SIGTERM, 129 for SIGHUP), as
a shell reports a process the signal ended.  Outputs the run had not finished do not exist; temporary files
(.sgvis-*, *.part, *.tmp, .NAME.tmp-PID folders) are gone.  Trainers keep what they are for: the state to
--resume from, saved atomically.

Each run is a real `sgvis` process (tests/fault_driver.py) with one function slowed down, and the signal comes
from outside once the run is at that point.  Disk-full faults are injected in-process through cli.main.
"""
import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import stylegan
from audio_fixtures import click_track, write_audio
from conftest import tiny_generator
from test_safety_and_errors import _one_clear_line, run_cli

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SR = 22050
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}
CAUSAL = ["--set", "render.beats=causal"]      # skips librosa's numba compilation (seconds per process)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("fault-assets")
    model = d / "tiny.safetensors"
    stylegan.save(tiny_generator("stylegan2", resolution=32), model)
    samples, _ = click_track(4.0, SR)
    write_audio(d / "clicks.wav", samples, SR)
    return d


def leftovers(root) -> list[str]:
    """Temporary files and folders of sgvis's under `root`."""
    found = []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            if name.startswith(".sgvis-") or name.endswith((".part", ".tmp")) or ".tmp-" in name \
                    or ".old-" in name:
                found.append(os.path.join(folder, name))
    return found


def run_and_signal(workdir, target, argv, sig, seconds=0.5, timeout=240, env=None):
    """Start `sgvis argv` in `workdir` with `target` slowed down; once it has been reached, send `sig`."""
    marker = os.path.join(str(workdir), "..", f"reached-{os.getpid()}-{time.monotonic_ns()}")
    environment = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                       OMP_NUM_THREADS="1", **(env or {}))
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fault_driver.py"), marker, target, str(seconds),
                             *[str(a) for a in argv]], cwd=workdir, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while not os.path.exists(marker):
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"sgvis ended (exit {proc.returncode}) before reaching {target}:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"sgvis did not reach {target} in {timeout} s")
        time.sleep(0.05)
    os.unlink(marker)
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, out, err


def check_stopped(code, err, sig, workdir):
    assert code == EXIT[sig], err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert not leftovers(workdir), leftovers(workdir)


SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_render_stopped_while_writing_frames(tmp_path, assets, sig):
    """The video's .part file, the PNG folder's temporary folder and --stats: none left, none published."""
    code, _, err = run_and_signal(tmp_path, "sgvis.outputs.files:VideoSink.write", [
        "render", assets / "clicks.wav", "-o", "out.mp4", "--model", assets / "tiny.safetensors", "--fps", "10",
        "--png-dir", "frames", "--stats", "stats.json", *CAUSAL], sig, seconds=0.2)
    check_stopped(code, err, sig, tmp_path)
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_render_stopped_during_the_analysis_pass(tmp_path, assets, sig):
    """Before any output is opened (whole-track beat tracking): nothing is written at all."""
    code, _, err = run_and_signal(tmp_path, "sgvis.render:scan_audio", [
        "render", assets / "clicks.wav", "-o", "out.mp4", "--model", assets / "tiny.safetensors", "--fps", "10",
        *CAUSAL], sig, seconds=30)
    check_stopped(code, err, sig, tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_render_with_extra_outputs_stopped_while_closing(tmp_path, assets, sig):
    """Stopped as the first of two sinks is being finished: the second's part file goes too."""
    code, _, err = run_and_signal(tmp_path, "sgvis.outputs.files:VideoSink.write", [
        "render", assets / "clicks.wav", "-o", "a.mp4", "--out", "video:b.mkv", "--model",
        assets / "tiny.safetensors", "--fps", "5", "--end", "1", *CAUSAL], sig, seconds=0.05)
    check_stopped(code, err, sig, tmp_path)


def test_demo_stopped_removes_its_track_and_video(tmp_path, assets):
    sig = signal.SIGTERM
    code, _, err = run_and_signal(tmp_path, "sgvis.outputs.files:VideoSink.write", [
        "demo", "demo.mp4", "--model", assets / "tiny.safetensors"], sig, seconds=0.2)
    check_stopped(code, err, sig, tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_convert_stopped_before_the_rename(tmp_path, assets, sig):
    """The converted file is complete under its temporary name; the signal comes before it is renamed."""
    code, _, err = run_and_signal(tmp_path, "stylegan.formats.native:save_file", [
        "convert", assets / "tiny.safetensors", "out.safetensors"], sig, seconds=30)
    check_stopped(code, err, sig, tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("kind", ["zip", "folder"])
def test_dataset_stopped_leaves_no_temporary_build(tmp_path, sig, kind):
    """The .NAME.tmp-PID zip or folder the build writes into is removed (the workers' pool included)."""
    out = "ds.zip" if kind == "zip" else "ds"
    code, _, err = run_and_signal(tmp_path, "sgvis.data.dataset:_Writer.add", [
        "dataset", out, "--procedural", "40", "--resolution", "8", "--quiet", "--workers", "2"], sig, seconds=0.3)
    check_stopped(code, err, sig, tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def dataset16(tmp_path_factory):
    from sgvis.data import dataset as ds
    path = tmp_path_factory.mktemp("fault-data") / "p16.zip"
    ds.build_dataset(path, resolution=16, procedural=8, seed=1, workers=1, progress=False)
    return path


TINY_NET = ["--channel-base", "128", "--channel-max", "16", "--z-dim", "16", "--w-dim", "16", "--map-layers", "2",
            "--batch", "4", "--grid", "2x2", "--quiet", "--threads", "1"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_train_gan_stopped_saves_its_state_and_nothing_else(tmp_path, dataset16, sig):
    code, _, err = run_and_signal(tmp_path, "sgvis.train.gan:Trainer.step", [
        "train-gan", "--data", dataset16, "--outdir", "run", *TINY_NET, "--kimg", "10", "--snap", "0"], sig,
        seconds=0.3)
    check_stopped(code, err, sig, tmp_path)
    assert os.path.exists(tmp_path / "run" / "training-state.pt")
    assert "--resume" in err


def test_train_glo_stopped_saves_its_state_and_nothing_else(tmp_path, dataset16):
    sig = signal.SIGTERM
    code, _, err = run_and_signal(tmp_path, "sgvis.train.glo:synthesize", [
        "train-glo", "--data", dataset16, "--outdir", "run", *TINY_NET, "--epochs", "50"], sig, seconds=0.3)
    check_stopped(code, err, sig, tmp_path)
    assert os.path.exists(tmp_path / "run" / "training-state.pt")


def test_train_encoder_stopped_saves_its_checkpoint_and_nothing_else(tmp_path, assets):
    sig = signal.SIGHUP
    data = tmp_path / "data"
    data.mkdir()
    samples, _ = click_track(2.0, SR)
    write_audio(data / "clicks.wav", samples, SR)
    code, _, err = run_and_signal(tmp_path, "sgvis.train.encoder:EncoderTrainer.step", [
        "train-encoder", "--model", assets / "tiny.safetensors", "--data", data, "--out", "run", "--batch", "2",
        "--clip-frames", "4", "--device", "cpu", "--steps", "500", "--set", "train_encoder.loss_resolution=16",
        "--set", "train_encoder.preview_every=0"], sig, seconds=0.3, env={"SGVIS_CACHE": str(tmp_path / "cache")})
    check_stopped(code, err, sig, tmp_path)
    assert os.path.exists(tmp_path / "run" / "steering.safetensors")


# -- a full disk -----------------------------------------------------------------------------------------------


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["write", "close"])
def test_render_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, assets, monkeypatch, where):
    from sgvis.outputs.files import VideoSink
    calls = {"n": 0}
    original = getattr(VideoSink, where)

    def fills_up(self, *args):
        calls["n"] += 1
        if calls["n"] == 3 or where == "close":
            with open(self.tmp, "ab") as f:          # what a real full disk leaves: a part file, partly written
                f.write(b"\0" * 100)
            _disk_full()
        return original(self, *args)

    monkeypatch.setattr(VideoSink, where, fills_up)
    result = run_cli("render", str(assets / "clicks.wav"), "-o", str(tmp_path / "o.mp4"), "--model",
                     str(assets / "tiny.safetensors"), "--fps", "10", "--png-dir", str(tmp_path / "png"), *CAUSAL)
    _one_clear_line(result, "cannot write", "o.mp4", "no space left")
    assert os.listdir(tmp_path) == []


def test_convert_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, assets, monkeypatch):
    from stylegan.formats import native
    real = native.save_file

    def fills_up(tensors, path, metadata=None):
        real(tensors, path, metadata=metadata)       # a part of it written, then the disk is full
        _disk_full()

    monkeypatch.setattr(native, "save_file", fills_up)
    result = run_cli("convert", str(assets / "tiny.safetensors"), str(tmp_path / "out.safetensors"))
    _one_clear_line(result, "cannot write", "out.safetensors", "no space left")
    assert os.listdir(tmp_path) == []


def test_dataset_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    from sgvis.data import dataset as ds
    monkeypatch.setattr(ds._Writer, "add", lambda self, data: _disk_full())
    result = run_cli("dataset", str(tmp_path / "ds"), "--procedural", "4", "--resolution", "8", "--quiet",
                     "--workers", "1")
    _one_clear_line(result, "no space left")
    assert os.listdir(tmp_path) == []


def test_output_in_an_unwritable_place_is_one_line(tmp_path, assets):
    """/proc takes no new files (whoever runs the test, root included)."""
    result = run_cli("render", str(assets / "clicks.wav"), "-o", "/proc/out.mp4", "--model",
                     str(assets / "tiny.safetensors"), *CAUSAL)
    _one_clear_line(result, "cannot write /proc/out.mp4")
    assert not [p for p in os.listdir("/proc") if p.startswith(".sgvis")]


def test_a_second_signal_does_not_cut_the_cleanup_short(tmp_path, assets):
    """TERM, then HUP at once: the first one stops the run; the second is ignored while it cleans up."""
    marker = tmp_path.parent / f"reached-{tmp_path.name}"
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fault_driver.py"), str(marker),
                             "sgvis.outputs.files:VideoSink.write", "0.2", "render", str(assets / "clicks.wav"),
                             "-o", "o.mp4", "--model", str(assets / "tiny.safetensors"), "--fps", "10", *CAUSAL],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=120)
    # Both may be pending when Python looks: it handles the lower-numbered one (HUP) first.
    assert proc.returncode in (EXIT[signal.SIGTERM], EXIT[signal.SIGHUP]), err[-3000:]
    assert "Traceback" not in err and "race condition" not in err, err[-3000:]
    assert os.listdir(tmp_path) == [] and not leftovers(tmp_path)
