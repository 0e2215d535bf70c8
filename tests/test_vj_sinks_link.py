"""VJ integration, part two: Spout (Windows) and Syphon (macOS) video out, Ableton Link tempo.

None of the three can run here (Linux, and Link multicasts on the network), so each is tested at its OS
boundary: the sinks with `make_sender` replaced, Link with `make_link` replaced; and the boundary classes
themselves against stand-in modules (SpoutGL, syphon, aalink) that record the calls they get.  No real Link
object is ever made."""
import asyncio
import json
import sys
import threading
import time
import types

import numpy as np
import pytest

from audio_fixtures import click_track, write_audio
from test_live import jack, make_show, model  # noqa: F401  (fixtures)
from test_safety_and_errors import _one_clear_line, run_cli
from test_vj import FakeSender  # (keeps (time, frame) of every send; `fail` makes the next sends raise)


@pytest.fixture
def fake_senders(monkeypatch):
    """Every stream sender replaced: (name -> list of the FakeSenders made for that output)."""
    import sgvis.outputs.ndi as ndi
    import sgvis.outputs.spout as spout
    import sgvis.outputs.syphon as syphon_out
    made = {"spout": [], "syphon": [], "ndi": []}
    for name, module in (("spout", spout), ("syphon", syphon_out), ("ndi", ndi)):
        def factory(*args, _made=made[name]):
            sender = FakeSender(*args)
            _made.append(sender)
            return sender
        monkeypatch.setattr(module, "make_sender", factory)
    return made


def random_frames(n, height, width, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]


# -- the sinks, their sender replaced ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["spout", "syphon"])
def test_sink_sends_every_frame_as_rgba_of_the_right_size(fake_senders, name):
    from sgvis.outputs import SinkContext, open_sink
    sink = open_sink(f"{name}:stage left", SinkContext(fps=30, size=(48, 32), live_audio_rate=48000))
    (sender,) = fake_senders[name]
    assert sender.args == ("stage left", 48, 32)                   # the name as given, width, height
    frames = random_frames(12, 32, 48)
    for frame in frames:
        sink.write(frame)
    sink.close()
    assert sender.closed and len(sender.frames) == 12 and sink.frames_sent == 12
    for (_, got), want in zip(sender.frames, frames):
        assert got.shape == (32, 48, 4) and got.dtype == np.uint8 and got.flags["C_CONTIGUOUS"]
        assert np.array_equal(got[..., :3], want) and np.all(got[..., 3] == 255)     # RGBA, opaque
    with pytest.raises(ValueError, match="expected 48x32 RGB uint8"):
        sink.write(np.zeros((48, 32, 3), np.uint8))


@pytest.mark.parametrize("name, what", [("spout", "Spout"), ("syphon", "Syphon")])
def test_sink_lost_mid_show_is_shown_and_reopened(fake_senders, monkeypatch, name, what):
    from sgvis.outputs import SinkContext, open_sink
    monkeypatch.setattr("sgvis.outputs.stream.RETRY_S", 0.0)
    sink = open_sink(f"{name}:stage", SinkContext(fps=30, size=(16, 16), live_audio_rate=48000))
    frame = np.zeros((16, 16, 3), np.uint8)
    sink.write(frame)
    fake_senders[name][0].fail = True
    sink.write(frame)
    assert sink.status.startswith(f"{what} stage lost (device went away)") and fake_senders[name][0].closed
    sink.write(frame)                                              # opened again, and the frame goes out
    assert len(fake_senders[name]) == 2 and len(fake_senders[name][1].frames) == 1 and sink.status == ""
    assert sink.frames_sent == 2 and sink.frames_dropped == 1
    sink.close()


@pytest.mark.parametrize("name, module, platform, needs", [
    ("spout", "SpoutGL", "win32", "needs pip install 'sgvis[vj]' (SpoutGL)"),
    ("spout", "SpoutGL", "linux", "needs Windows (Spout is Windows only) and pip install 'sgvis[vj]' (SpoutGL)"),
    ("syphon", "syphon", "darwin", "needs pip install 'sgvis[vj]' (syphon-python)"),
    ("syphon", "syphon", "linux",
     "needs macOS (Syphon is macOS only) and pip install 'sgvis[vj]' (syphon-python)"),
])
def test_unavailable_output_is_one_line_naming_what_to_install(monkeypatch, name, module, platform, needs):
    import sgvis.outputs.spout  # noqa: F401  (imported before sys.platform is changed)
    import sgvis.outputs.syphon  # noqa: F401
    from sgvis.outputs import OutputUnavailable, SinkContext, open_sink
    monkeypatch.setitem(sys.modules, module, None)                 # the package is not installed
    monkeypatch.setattr(sys, "platform", platform)
    with pytest.raises(OutputUnavailable) as e:
        open_sink(f"{name}:stage", SinkContext(fps=30, size=(32, 32)))
    assert str(e.value) == f"--out {name}:stage {needs}"


@pytest.mark.parametrize("name, what", [("spout", "Spout sender"), ("syphon", "Syphon server")])
def test_sender_that_cannot_open_is_one_line_with_the_reason(monkeypatch, name, what):
    import importlib
    from sgvis.outputs import OutputUnavailable, SinkContext, open_sink

    def broken(*args):
        raise RuntimeError("no GPU device\nmore detail")
    monkeypatch.setattr(importlib.import_module(f"sgvis.outputs.{name}"), "make_sender", broken)
    with pytest.raises(OutputUnavailable) as e:
        open_sink(f"{name}:stage", SinkContext(fps=30, size=(32, 32)))
    assert str(e.value).startswith(f"--out {name}:stage: no {what} (no GPU device); needs ")
    assert "\n" not in str(e.value)


# -- the boundary classes against stand-in modules ----------------------------------------------------------------
class SpoutGLStandIn:
    """A stand-in SpoutGL module: its SpoutSender records each call with the thread it came from."""
    GL_RGBA = 0x1908

    def __init__(self):
        self.calls = []
        stand_in = self

        class SpoutSender:
            def setSenderName(self, name):
                stand_in.calls.append(("setSenderName", threading.get_ident(), name))

            def sendImage(self, pixels, width, height, gl_format, invert, host_fbo):
                stand_in.calls.append(("sendImage", threading.get_ident(),
                                       (np.array(pixels, copy=True), width, height, gl_format, invert, host_fbo)))
                return True

            def releaseSender(self):
                stand_in.calls.append(("releaseSender", threading.get_ident(), None))

        self.module = types.ModuleType("SpoutGL")
        self.module.SpoutSender = SpoutSender
        self.enums = types.ModuleType("SpoutGL.enums")
        self.enums.GL_RGBA = self.GL_RGBA
        self.module.enums = self.enums


def test_spout_boundary_calls_spoutgl_on_one_thread_of_its_own(monkeypatch):
    from sgvis.outputs import SinkContext
    from sgvis.outputs.spout import open_spout_sink
    stand_in = SpoutGLStandIn()
    monkeypatch.setitem(sys.modules, "SpoutGL", stand_in.module)
    monkeypatch.setitem(sys.modules, "SpoutGL.enums", stand_in.enums)
    sink = open_spout_sink("sgvis", SinkContext(fps=30, size=(40, 24), live_audio_rate=48000))
    frames = random_frames(3, 24, 40)
    for frame in frames:
        sink.write(frame)
    sink.close()
    names = [c[0] for c in stand_in.calls]
    assert names == ["setSenderName", "sendImage", "sendImage", "sendImage", "releaseSender"]
    assert stand_in.calls[0][2] == "sgvis"
    threads = {c[1] for c in stand_in.calls}
    assert len(threads) == 1 and threading.get_ident() not in threads     # one thread, not the caller's
    for (_, _, (pixels, width, height, gl_format, invert, fbo)), want in zip(stand_in.calls[1:4], frames):
        assert (width, height, gl_format, invert, fbo) == (40, 24, SpoutGLStandIn.GL_RGBA, False, 0)
        assert pixels.shape == (24, 40, 4) and np.array_equal(pixels[..., :3], want)
    assert not any(t.name.startswith("sgvis-spout") for t in threading.enumerate())   # its thread ended


def test_spout_boundary_refused_frame_is_a_lost_sender(monkeypatch):
    from sgvis.outputs import SinkContext
    from sgvis.outputs.spout import open_spout_sink
    stand_in = SpoutGLStandIn()
    monkeypatch.setitem(sys.modules, "SpoutGL", stand_in.module)
    monkeypatch.setitem(sys.modules, "SpoutGL.enums", stand_in.enums)
    stand_in.module.SpoutSender.sendImage = lambda self, *args: False
    sink = open_spout_sink("sgvis", SinkContext(fps=30, size=(16, 16), live_audio_rate=48000))
    sink.write(np.zeros((16, 16, 3), np.uint8))
    assert sink.status.startswith("Spout sgvis lost (Spout refused the frame") and sink.frames_dropped == 1
    sink.close()


class SyphonStandIn:
    """Stand-in syphon and syphon.utils.raw modules: a Metal server and texture helpers that record calls."""

    def __init__(self):
        self.calls = []
        stand_in = self

        class SyphonMetalServer:
            def __init__(self, name):
                self.device = "metal-device"
                stand_in.calls.append(("server", name))

            def publish_frame_texture(self, texture, is_flipped=False):
                stand_in.calls.append(("publish", texture["id"], is_flipped))

            def stop(self):
                stand_in.calls.append(("stop",))

        def create_mtl_texture(device, width, height):
            stand_in.calls.append(("texture", device, width, height))
            return {"id": 7, "size": (width, height), "data": None}

        def copy_bytes_to_mtl_texture(data, texture):
            assert isinstance(data, memoryview) and data.format == "B" and data.ndim == 1
            texture["data"] = bytes(data)
            stand_in.calls.append(("copy", texture["id"], bytes(data)))

        self.syphon = types.ModuleType("syphon")
        self.syphon.SyphonMetalServer = SyphonMetalServer
        self.utils = types.ModuleType("syphon.utils")
        self.raw = types.ModuleType("syphon.utils.raw")
        self.raw.create_mtl_texture = create_mtl_texture
        self.raw.copy_bytes_to_mtl_texture = copy_bytes_to_mtl_texture
        self.syphon.utils, self.utils.raw = self.utils, self.raw

    def install(self, monkeypatch):
        for name, module in (("syphon", self.syphon), ("syphon.utils", self.utils), ("syphon.utils.raw", self.raw)):
            monkeypatch.setitem(sys.modules, name, module)


def test_syphon_boundary_copies_each_frame_into_one_metal_texture_and_publishes_it(monkeypatch):
    from sgvis.outputs import SinkContext
    from sgvis.outputs.syphon import open_syphon_sink
    stand_in = SyphonStandIn()
    stand_in.install(monkeypatch)
    sink = open_syphon_sink("sgvis", SinkContext(fps=30, size=(40, 24), live_audio_rate=48000))
    frames = random_frames(3, 24, 40)
    for frame in frames:
        sink.write(frame)
    sink.close()
    calls = stand_in.calls
    assert calls[:2] == [("server", "sgvis"), ("texture", "metal-device", 40, 24)]
    assert [c[0] for c in calls[2:]] == ["copy", "publish"] * 3 + ["stop"]
    for copy, publish, want in zip(calls[2::2], calls[3::2], frames):
        rgba = np.frombuffer(copy[2], np.uint8).reshape(24, 40, 4)        # rows top to bottom, RGBA
        assert np.array_equal(rgba[..., :3], want) and np.all(rgba[..., 3] == 255)
        assert publish == ("publish", 7, False)


# -- several outputs at once -------------------------------------------------------------------------------------
def test_live_show_sends_to_spout_and_ndi_while_an_unavailable_syphon_is_one_line(jack, model, tmp_path,
                                                                                     fake_senders, monkeypatch, capfd):
    """`--out spout:stage --out ndi:foh --out syphon:mac` on Linux: Syphon is one warning line at start, and
    Spout and NDI get every frame the show draws, the same picture (RGBA and RGBX)."""
    import sgvis.outputs.syphon as syphon_out
    monkeypatch.setattr(syphon_out, "make_sender", syphon_out.SyphonSender)     # the real boundary...
    monkeypatch.setitem(sys.modules, "syphon", None)                          # ...without syphon-python
    show = make_show(model, tmp_path, duration=1.5, fps=20, outputs=["spout:stage", "ndi:foh", "syphon:mac"],
                     size=(40, 24))
    stats = show.run()
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert err == ["sgvis: warning: --out syphon:mac needs macOS (Syphon is macOS only) and pip install "
                   "'sgvis[vj]' (syphon-python)"]
    assert stats["unavailable_outputs"] == ["syphon:mac"] and stats["frames_shown"] > 5
    (spout,), (ndi,) = fake_senders["spout"], fake_senders["ndi"]
    assert spout.args == ("stage", 40, 24) and ndi.args[:3] == ("foh", 40, 24)
    assert spout.closed and ndi.closed
    assert len(spout.frames) == len(ndi.frames) == stats["frames_shown"]
    for (_, a), (_, b) in zip(spout.frames, ndi.frames):
        assert a.shape == b.shape == (24, 40, 4) and np.array_equal(a, b)


@pytest.fixture(scope="module")
def track(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "clicks.wav"
    write_audio(path, click_track(1.5, 22050)[0], 22050)
    return str(path)


def test_render_sends_to_spout_and_ndi_and_stops_at_an_unavailable_syphon(model, track, tmp_path, fake_senders,
                                                                          monkeypatch):
    """`sgvis render --out spout:X --out ndi:Y`: both get every frame at the video frame rate; an output this
    machine lacks stops a render (it was asked for) with one line, exit 2, and leaves no file."""
    out = tmp_path / "take.mp4"
    result = run_cli("render", track, "-o", str(out), "--model", model, "--fps", "10",
                     "--out", "spout:stage", "--out", "ndi:foh")
    assert result.returncode == 0, result.stderr
    (spout,), (ndi,) = fake_senders["spout"], fake_senders["ndi"]
    assert len(spout.frames) == len(ndi.frames) == 15 and out.exists()
    assert spout.frames[0][1].shape == (32, 32, 4)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(spout.frames, ndi.frames))
    gaps = np.diff([t for t, _ in spout.frames])
    assert np.median(gaps) == pytest.approx(0.1, abs=0.02)           # real time, as the receiver plays it
    import sgvis.outputs.syphon as syphon_out
    monkeypatch.setattr(syphon_out, "make_sender", syphon_out.SyphonSender)
    monkeypatch.setitem(sys.modules, "syphon", None)
    again = tmp_path / "again.mp4"
    _one_clear_line(run_cli("render", track, "-o", str(again), "--model", model, "--fps", "10",
                            "--out", "spout:stage", "--out", "syphon:mac"),
                    "--out syphon:mac needs macOS", "syphon-python")
    assert not again.exists()
    assert fake_senders["spout"][-1].closed                       # the Spout sender opened first was closed


# -- Ableton Link ------------------------------------------------------------------------------------------------
class FakeLink:
    """Stands in for the Link boundary (sgvis.control.link.AbletonLink): a session at `tempo` whose beat runs
    with the clock from `first_beat`; every read is kept as (beats, peers)."""
    made = []

    def __init__(self, bpm, quantum, tempo=128.0, peers=2, first_beat=3.9):
        self.args, self.tempo, self.peers = (bpm, quantum), tempo, peers
        self.start, self.first_beat = time.perf_counter(), first_beat
        self.reads, self.closed = [], False
        FakeLink.made.append(self)

    def read(self):
        beats = self.first_beat + (time.perf_counter() - self.start) * self.tempo / 60.0
        self.reads.append((beats, self.peers))
        return self.tempo, beats, self.peers

    def close(self):
        self.closed = True


@pytest.fixture
def fake_link(monkeypatch):
    """aalink "installed" (an empty stand-in module: nothing may make a real Link) and make_link replaced."""
    import sgvis.control.link as link
    FakeLink.made = []
    monkeypatch.setitem(sys.modules, "aalink", types.ModuleType("aalink"))
    monkeypatch.setattr(link, "make_link", FakeLink)
    return FakeLink.made


def test_link_drives_the_tempo_clock_tempo_phase_and_beats(fake_link):
    from sgvis.control.link import NO_PEERS, LinkTempo
    from sgvis.control.tempo import TempoClock
    from sgvis.features.analysis import Features
    producer = LinkTempo()
    clock = TempoClock()
    clock.follow(producer)
    audio = Features(time=0.0, tempo=97.0, beat_phase=0.9)
    assert clock.features(audio, 1.0) is audio                   # not started: nothing to follow yet
    producer.start(bus=None)
    (link,) = fake_link
    assert link.args == (120.0, 4.0)                             # offers 120 BPM until it meets the session
    link.read = lambda: (link.tempo, link.beat, link.peers)
    for beat, phase, fell in ((7.25, 0.25, False), (7.75, 0.75, False), (8.02, 0.02, True), (8.5, 0.5, False),
                              (-0.25, 0.75, True)):
        link.beat = beat
        f = clock.features(audio, 5.0)
        assert f.tempo == 128.0 and f.beat_phase == pytest.approx(phase) and f.beat is fell, beat
    # Taps while the session has peers: the session's beat still wins.
    for t in (10.0, 10.5, 11.0):
        clock.tap(t)
    link.beat = 9.5
    assert clock.features(audio, 11.25).tempo == 128.0 and producer.status == ""
    # Alone in the session: the tapped tempo (120 BPM, a beat at 11.0), and the HUD says why.
    link.peers = 0
    f = clock.features(audio, 11.25)
    assert f.tempo == pytest.approx(120.0) and f.beat_phase == pytest.approx(0.5) and producer.status == NO_PEERS
    clock.set_bpm(0, 12.0)                                       # no taps either: the audio tracker's beat
    assert clock.features(audio, 12.5) is audio
    link.peers, link.tempo, link.beat = 3, 90.0, 2.5             # peers again, at the session's new tempo
    assert clock.features(audio, 13.0).tempo == 90.0
    assert producer.report() == {"peers": 3, "most_peers": 3, "tempo": 90.0, "frames_followed": 7}
    producer.stop()
    assert link.closed and clock.features(audio, 14.0) is audio


def test_link_boundary_makes_one_enabled_link_inside_a_loop_and_reads_it(monkeypatch):
    """AbletonLink against a stand-in aalink module: the Link is made in a running asyncio loop (aalink 0.2
    takes the running loop), given the quantum and enabled; read() maps its properties; close() disables it."""
    from sgvis.control.link import AbletonLink
    made = []

    class StandInLink:
        def __init__(self, bpm):
            self.loop = asyncio.get_running_loop()              # raises outside a running loop, as aalink does
            self.bpm, self.quantum, self.enabled = bpm, 1.0, False
            self.tempo, self.beat, self.num_peers = 133.0, 17.5, 1
            made.append(self)

    stand_in = types.ModuleType("aalink")
    stand_in.Link = StandInLink
    monkeypatch.setitem(sys.modules, "aalink", stand_in)
    boundary = AbletonLink(120.0, 4.0)
    (link,) = made
    assert link.bpm == 120.0 and link.quantum == 4.0 and link.enabled is True
    assert boundary.read() == (133.0, 17.5, 1)
    boundary.close()
    assert link.enabled is False and boundary.link is None and link.loop.is_closed()
    assert AbletonLink.available()


def test_link_in_a_show_locks_the_steering_to_the_session_beat(jack, model, tmp_path, fake_link):
    """A show with the Link producer: every frame's features carry the session's tempo and beat phase (and a
    beat where the session's beat number changed) until the session has no other peer, then the audio's."""
    show = make_show(model, tmp_path, duration=1.5, fps=20, controls=["link"], stats=str(tmp_path / "s.json"))
    seen = []
    step = show.steering.step
    show.steering.step = lambda f: (seen.append(f), step(f))[1]
    show_step = show.step

    def step_and_leave():
        if show.frames_shown == 12:
            fake_link[0].peers = 0                               # the other peers left the session
        show_step()
    show.step = step_and_leave
    stats = show.run()
    (link,) = fake_link
    assert link.closed
    followed = seen[1:]                                          # the first step is the show's start (time 0)
    assert len(followed) == len(link.reads) == stats["frames_shown"] > 15
    previous = None
    for f, (beats, peers) in zip(followed, link.reads):
        if peers:
            assert f.tempo == 128.0 and f.beat_phase == pytest.approx(beats % 1.0)
            assert f.beat == (previous is not None and int(beats // 1) != int(previous // 1))
            previous = beats
        else:
            assert f.tempo != 128.0
    assert sum(f.beat for f in followed[:12]) >= 1                # 128 BPM from beat 3.9: a beat in the first 12
    report = json.loads((tmp_path / "s.json").read_text())["producers"]["link"]
    assert report == {"peers": 0, "most_peers": 2, "tempo": 128.0, "frames_followed": 12}


def test_link_flag_on_the_command_line(jack, model, tmp_path, fake_link):
    stats_path = tmp_path / "stats.json"
    result = run_cli("live", "--device", "system", "--model", model, "--headless", "--duration", "1", "--fps", "20",
                     "--link", "--stats", str(stats_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(stats_path.read_text())["producers"]["link"]
    assert report["most_peers"] == 2 and report["frames_followed"] > 5
    assert fake_link[0].closed


def test_missing_aalink_is_one_line_and_exit_2(model, monkeypatch):
    from sgvis.control.link import LinkTempo
    from sgvis.errors import UserError
    monkeypatch.setitem(sys.modules, "aalink", None)              # not installed
    with pytest.raises(UserError, match=r"^--link \(Ableton Link\) needs aalink: pip install aalink$"):
        LinkTempo()
    _one_clear_line(run_cli("live", "--model", model, "--headless", "--link"), "needs aalink: pip install aalink")
