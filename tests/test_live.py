"""`sgvis live`: real audio through a JACK loopback, real OpenGL (EGL offscreen and a glfw window under Xvfb)."""
import json
import os
import threading
import time

import numpy as np
import pytest
import torch

import stylegan
from audio_fixtures import click_track, read_video
from conftest import tiny_generator
from live_servers import loopback, start_jack, start_xvfb
from sgvis.errors import UserError
from test_safety_and_errors import _one_clear_line, run_cli


@pytest.fixture(scope="module")
def jack():
    proc, reason = start_jack()
    if reason:
        pytest.skip(reason)
    # PortAudio lists the JACK server only if it was running when PortAudio started: restart PortAudio now that
    # it is (an earlier test may have started it without one, and an earlier module may have stopped it).
    import sounddevice as sd
    if proc is not None or sd._initialized == 0:
        while sd._initialized > 0:
            sd._terminate()
        sd._initialize()
    yield
    if proc is not None:
        # Detach PortAudio before its server goes away: its exit handler aborts the process if the JACK server
        # it is connected to has vanished.
        import sounddevice as sd
        while sd._initialized > 0:
            sd._terminate()
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    stylegan.save(tiny_generator("stylegan2", resolution=32), path)
    return str(path)


class Player:
    """Plays samples on the JACK 'system' device from this process (to be looped back into the input)."""

    def __init__(self, samples: np.ndarray, rate: int = 44100):
        import sounddevice as sd
        self.samples, self.pos = samples.astype(np.float32), 0
        self.stream = sd.OutputStream(samplerate=rate, channels=1, dtype="float32", blocksize=256,
                                      callback=self._cb)

    def _cb(self, out, frames, t, status):
        n = min(frames, len(self.samples) - self.pos)
        out[:n, 0] = self.samples[self.pos:self.pos + n]
        out[n:] = 0
        self.pos += n

    def __enter__(self):
        self.stream.start()
        return self

    def __exit__(self, *exc):
        self.stream.stop()
        self.stream.close()


def make_show(model, tmp_path, **kw):
    from sgvis.live import LiveJob, LiveShow
    job = LiveJob(device="system", model=model, headless=True, screenshot_dir=str(tmp_path), **kw)
    return LiveShow(job)


def test_headless_show_reacts_to_onsets_and_records(jack, model, tmp_path):
    samples, _ = click_track(8.0, 44100, bpm=100)
    record, stats_path = tmp_path / "show.mp4", tmp_path / "stats.json"
    # Only the audio hits move the image here (no drift, swells or chroma), so the reaction is measurable at
    # any frame rate this machine manages.
    quiet = ["steer.drift.period_s=0", "steer.bass.swell=0", "steer.mid.swell=0", "steer.high.swell=0",
             "steer.chroma.amount=0"]
    threads_before = torch.get_num_threads()
    show = make_show(model, tmp_path, duration=7.0, record=str(record), stats=str(stats_path), fps=30,
                     overrides=quiet)
    with Player(samples):
        loopback()
        stats = show.run()
    assert torch.get_num_threads() == threads_before       # live's generation thread count is restored
    assert stats["frames_shown"] >= 15
    assert stats["latency_ms"]["p50"] is not None and stats["latency_ms"]["p95"] is not None
    assert stats["time_to_first_frame_s"] > 0          # reported (start-up: model, directions, window)
    assert json.loads(stats_path.read_text())["frames_shown"] == stats["frames_shown"]
    # The recording is a valid mp4 with the captured audio.
    frames, vdur, adur, codec = read_video(record)
    assert codec == "aac" and adur is not None and abs(vdur - adur) < 0.5
    # Motion rises on the recorded audio's onsets.
    import librosa
    import av
    with av.open(str(record)) as c:
        audio = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
        rate = c.streams.audio[0].rate
    onsets = librosa.onset.onset_detect(y=audio, sr=rate, units="time")
    assert len(onsets) >= 4, "the loopback delivered no clicks"
    # The recording repeats a frame when generation is slower than its frame rate: compare distinct frames only.
    # A hit moves the image from the frame after the onset on and eases out over ~0.3 s (the release), so a
    # transition ending at t is "near" when an onset happened in the 0.3 s before t.
    fps = len(frames) / vdur
    f = frames.astype(np.float32)
    change = np.abs(np.diff(f, axis=0)).mean(axis=(1, 2, 3))
    new = np.flatnonzero(change > 0) + 1                      # indices of frames that differ from the previous
    times = new / fps
    motion = change[new - 1]
    near = np.array([np.any((t - onsets >= 0.0) & (t - onsets < 0.3)) for t in times])
    assert near.any() and (~near).any()
    assert motion[near].mean() > 1.3 * motion[~near].mean(), (motion[near].mean(), motion[~near].mean())


@pytest.mark.parametrize("input_rate", [44100, 192000])
def test_recording_is_timed_by_the_captured_audio(tmp_path, input_rate):
    """Steps of uneven length (slow frames, a burst of late audio) still give tracks of equal length, and each
    frame appears from the audio position it was generated at until the next one, as on screen.  A rate AAC
    does not take is resampled."""
    from sgvis.outputs.files import LiveRecorder
    fps, path = 30, tmp_path / "rec.mp4"
    steps = [0.05, 0.3, 0.02, 0.5, 0.1, 0.25, 0.033, 0.4, 0.07, 0.6]      # seconds of audio per step
    recorder = LiveRecorder(str(path), fps, (31, 20), input_rate)            # odd sizes are padded
    positions, t = [], 0.0
    for i, seconds in enumerate(steps):
        n = round((t + seconds) * input_rate) - round(t * input_rate)
        t += seconds
        recorder.write_audio(0.1 * np.sin(np.arange(n) * 0.05).astype(np.float32))
        recorder.write(np.full((20, 31, 3), 20 * (i + 1), np.uint8))
        positions.append(t)
    recorder.close()
    frames, vdur, adur, codec = read_video(path)
    assert codec == "aac" and frames.shape[1:] == (20, 32, 3)
    assert abs(adur - sum(steps)) < 0.05 and abs(vdur - adur) < 1.5 / fps
    for k, f in enumerate(frames):
        shown = max([i for i, p in enumerate(positions) if p <= k / fps + 1e-9], default=0)
        assert abs(float(np.median(f[:, :31])) - 20 * (shown + 1)) < 4, (k, np.median(f[:, :31]), shown)


def test_window_under_xvfb(jack, model, tmp_path):
    """A real glfw window on an X server, through the CLI in its own process (a process uses either a window
    or EGL; the headless tests in this process already made an EGL context)."""
    import subprocess
    import sys
    proc, display, reason = start_xvfb()
    if reason:
        pytest.skip(reason)
    try:
        stats = tmp_path / "window.json"
        env = dict(os.environ, DISPLAY=display)
        result = subprocess.run([sys.executable, "-m", "sgvis", "live", "--device", "system", "--model", model,
                                 "--duration", "3", "--stats", str(stats), "--set", "live.window=[320,240]",
                                 "--set", "live.hud=true"], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        s = json.loads(stats.read_text())
        assert s["frames_shown"] > 5 and s["latency_ms"]["p50"] is not None and not s["headless"]
    finally:
        proc.terminate()


def test_key_actions(jack, model, tmp_path):
    import glfw
    from sgvis.features.analysis import Features
    show = make_show(model, tmp_path, duration=0.5)
    show._open_surface()
    try:
        show.ws = show.steering.step(Features(time=0.0))
        show.step()
        before = show.ws.clone()
        show.on_key(glfw.KEY_SPACE, glfw.PRESS)                      # freeze
        assert show.frozen
        for _ in range(3):
            show.step()
        assert np.array_equal(show.ws.numpy(), before.numpy())
        show.act("freeze")
        seed = show.seed
        show.on_key(glfw.KEY_R, glfw.PRESS)
        assert show.seed == seed + 1
        i = show.intensity
        show.on_key(glfw.KEY_UP, glfw.PRESS)
        assert show.intensity > i
        show.on_key(glfw.KEY_DOWN, glfw.PRESS)
        show.on_key(glfw.KEY_DOWN, glfw.PRESS)
        assert show.intensity < i
        show.on_key(glfw.KEY_H, glfw.PRESS)
        assert show.hud_on
        show.step()
        show.on_key(glfw.KEY_S, glfw.PRESS)
        assert show.screenshots and os.path.exists(show.screenshots[0])
        show.on_key(glfw.KEY_1, glfw.PRESS)
        assert show.message.startswith("preset")
        show.on_key(glfw.KEY_ESCAPE, glfw.PRESS)
        assert not show.running
    finally:
        show.input.close()
        show.surface.close()


def test_device_unplugged_keeps_running_and_reconnects(jack, model, tmp_path):
    show = make_show(model, tmp_path, duration=3.0, fps=30)
    seen = {}
    step = show.step

    def step_and_unplug():
        if show.frames_shown == 10:
            seen["frames_at_loss"] = show.frames_shown
            show.input.close()                # the stream goes away as if the device were pulled
        step()

    show.step = step_and_unplug
    stats = show.run()
    assert stats["input_disconnects"] >= 1 and stats["input_reconnects"] >= 1
    assert stats["frames_shown"] > seen["frames_at_loss"] + 5       # the show went on


def test_no_such_device_lists_devices(jack, model):
    _one_clear_line(run_cli("live", "--device", "no-such-interface", "--model", model, "--headless"),
                    "no audio input matches", "system")


def test_devices_command_lists_inputs(jack):
    result = run_cli("devices")
    assert result.returncode == 0 and "system" in result.stdout


def test_bad_model_is_one_line(jack, tmp_path):
    bad = tmp_path / "m.pkl"
    bad.write_bytes(b"nope")
    _one_clear_line(run_cli("live", "--model", str(bad), "--headless", "--duration", "1"), "not a StyleGAN")


def test_generation_threads_setting():
    import os
    from sgvis.live import generation_threads
    assert generation_threads("auto") == max(1, (os.cpu_count() or 2) // 2)
    assert generation_threads(3) == 3
    for bad in (0, -1, "many"):
        with pytest.raises(UserError, match="live.threads"):
            generation_threads(bad)


class NudgeProducer:
    """A throwaway control producer: from its own thread, sets intensity once the show starts it."""

    def __init__(self):
        self.stopped = False

    def start(self, bus):
        import threading
        thread = threading.Thread(target=lambda: bus.send("intensity", 3.0, "nudge"))
        thread.start()
        thread.join()

    def stop(self):
        self.stopped = True


def test_producer_and_sink_added_through_the_registries(jack, model, tmp_path):
    from sgvis.control import PRODUCERS
    PRODUCERS.register("nudge", NudgeProducer)
    try:
        frames_dir = tmp_path / "frames"
        show = make_show(model, tmp_path, duration=1.5, fps=20, controls=["nudge"],
                         outputs=[f"png:{frames_dir}"], stats=str(tmp_path / "s.json"))
        stats = show.run()
    finally:
        PRODUCERS.unregister("nudge")
    (producer,) = show.producers
    assert producer.stopped
    assert stats["controls"]["sources"]["nudge"] == {"received": 1, "rejected": 0}
    assert show.intensity == 3.0 and show.steering.cfg["intensity"] == 3.0       # applied to the steering
    assert len(list(frames_dir.glob("frame_*.png"))) == stats["frames_shown"] > 5


def test_preset_change_cross_fades_instead_of_jumping(jack, model, tmp_path):
    from sgvis.features.analysis import Features
    from sgvis.steer import Crossfade
    show = make_show(model, tmp_path, duration=0.5)
    try:
        steps = []
        for k in range(40):
            before = show.steering.step(Features(time=k / 30)).clone() if k == 0 else ws
            if k == 20:
                show.act("preset", show.presets[-1])
                assert isinstance(show.steering, Crossfade)
            ws = show.steering.step(Features(time=(k + 1) / 30)).clone()
            steps.append(float((ws - before).norm()))
    finally:
        show.input.close()
    calm = np.median(steps[:20])
    assert steps[20] < 5 * calm + 1e-3                   # the switch itself is a small step, not a jump
    assert show.message.startswith("preset")


@pytest.mark.parametrize("fit", ["letterbox", "crop"])
def test_size_and_fit_frame_the_recording(jack, model, tmp_path, fit):
    """--size 96x54 --fit: the recorded frames are 96x54, the square picture letterboxed (black bars) or cropped
    to fill (no bars); the headless framebuffer shows the same."""
    record = tmp_path / "fit.mp4"
    show = make_show(model, tmp_path, duration=1.5, record=str(record), fps=30, size=(96, 54), fit=fit)
    stats = show.run()
    assert stats["resolution"] == [96, 54] and stats["fit"] == fit
    frames, _, _, _ = read_video(record)
    assert frames.shape[1:3] == (54, 96)
    side_bars = frames[:, :, list(range(16)) + list(range(80, 96))].astype(int)
    if fit == "letterbox":                          # 54x54 picture in the middle, 21 px of black either side
        assert side_bars.max() <= 16               # black, up to the codec's noise
        assert frames[:, :, 30:66].mean() > side_bars.mean() + 10
    else:
        assert side_bars.mean() > 20
