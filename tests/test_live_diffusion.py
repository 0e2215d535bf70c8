"""`sgvis live --backend tempotokens`: causal mapper windows, and a headless show on the JACK loopback with the tiny
random diffusion models, whose cost (seconds per window, latency) is reported, not hidden."""
import os

import pytest
import torch

pytest.importorskip("diffusers")

from audio_fixtures import click_track, read_video                      # noqa: E402
from test_diffusion_render import files                                 # noqa: E402,F401  (the tiny model set)
from test_live import Player, jack                                       # noqa: E402,F401
from test_safety_and_errors import run_cli                              # noqa: E402


def test_causal_local_windows_only_look_back():
    from sgvis.diffusion.mapper import WINDOWS, TempoMapper, moving_average
    x = torch.randn(1, 24, 5)
    for half in WINDOWS:
        causal = moving_average(x, half, causal=True)
        for i in (0, 5, 23):
            assert torch.allclose(causal[0, i], x[0, max(0, i - 2 * half):i + 1].mean(0), atol=1e-6)
        later = x.clone()
        later[:, 12:] += 10                                   # a change from frame 12 on
        assert torch.equal(moving_average(later, half, causal=True)[:, :12], causal[:, :12])
        if half > 1:                                          # TempoTokens' centred windows see ahead
            assert not torch.allclose(moving_average(later, half)[:, 11], moving_average(x, half)[:, 11])
    torch.manual_seed(0)
    mapper = TempoMapper(8, 16, 4).eval()
    feats = torch.randn(1, 48, 8)
    offline = mapper(feats)
    mapper.causal = True
    live = mapper(feats)
    assert torch.equal(live[0], offline[0])                   # the temporal tokens are the same
    assert not torch.allclose(live[1], offline[1])            # local windows differ (past frames only)


def test_live_tempotokens_shows_windows_and_reports_their_cost(jack, files, tmp_path):
    from live_servers import loopback
    from sgvis.live import LiveJob
    from sgvis.live_diffusion import DiffusionShow
    samples, _ = click_track(10.0, 44100, bpm=120)
    record = tmp_path / "show.mp4"
    job = LiveJob(device="system", headless=True, duration=7.0, record=str(record), size=(16, 16),
                  screenshot_dir=str(tmp_path), backend="tempotokens",
                  backend_options={"t2v": files["t2v"], "beats": files["beats"], "mapper": files["mapper"],
                                   "steps": 2, "guidance": 1.0})
    show = DiffusionShow(job)
    assert show.backend.mapper.causal
    with Player(samples):
        loopback()
        stats = show.run()
    assert stats["windows_generated"] >= 2 and stats["windows_shown"] >= 2
    assert stats["frames_shown"] >= 24                         # at the native 12 fps once the first window is in
    assert stats["native_fps"] == 12 and stats["seconds_per_window"] > 0
    assert stats["generated_frames_per_second"] == pytest.approx(24 / stats["seconds_per_window"])
    # A window's sound is at least 2 s old when its first frame shows: the latency says so.
    assert stats["latency_ms"]["p50"] > 1000
    assert any("s per 2s window" in line for line in show.hud_lines())
    frames, vdur, adur, codec = read_video(record)           # timed by the recorded sound, at 12 fps
    assert frames.shape[1:] == (16, 16, 3) and codec == "aac" and abs(vdur - adur) < 0.5
    assert abs(len(frames) - 12 * adur) <= 2 and frames.std() > 1


def test_live_tempotokens_flags_are_checked(files):
    r = run_cli("live", "--backend", "tempotokens", "--headless", "--duration", "1")
    assert r.returncode == 2 and "needs --t2v DIR, --beats BEATS.pt, --mapper MAPPER.pth" in r.stderr
    r = run_cli("live", "--t2v", files["t2v"], "--headless", "--duration", "1")
    assert r.returncode == 2 and "are for --backend tempotokens" in r.stderr
    r = run_cli("live", "--backend", "tempotokens", "--t2v", files["t2v"], "--beats", files["beats"], "--mapper",
                files["mapper"], "--osc-port", "0", "--headless", "--duration", "1")
    assert r.returncode == 2 and "stylegan backend only" in r.stderr


def test_ctrl_c_ends_the_show_and_keeps_the_recording(jack, files, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from audio_fixtures import write_audio
    samples, _ = click_track(20.0, 44100, bpm=120)
    write_audio(tmp_path / "track.wav", samples, 44100)
    record = tmp_path / "set.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sgvis", "live", "--device", f"file:{tmp_path / 'track.wav'}", "--backend", "tempotokens",
         "--t2v", files["t2v"], "--beats", files["beats"], "--mapper", files["mapper"], "--size", "16x16",
         "--steps", "2", "--guidance", "1", "--headless", "--record", str(record), "--compute", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, JACK_NO_START_SERVER="1"))
    time.sleep(16)                                            # start-up (~8 s here), then several windows
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "shown" in out
    frames, vdur, adur, codec = read_video(record)            # finished, with its sound: nothing lost
    assert len(frames) > 12 and codec == "aac" and abs(vdur - adur) < 0.5
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part") or p.startswith(".sgvis")]
