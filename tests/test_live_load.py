"""Bounded latency under load: the draft synthesis (stop at an earlier block) and the governor that chooses it."""
import os

import pytest
import torch

from conftest import inputs, tiny_generator
from sgvis.live_load import CLIMB_AFTER_S, LoadGovernor, draft_levels


def test_draft_synthesis_is_the_picture_as_it_stands_at_that_block():
    from stylegan.fast import FastSynthesis
    G = tiny_generator("stylegan2", resolution=64)
    fast = FastSynthesis(G, precision="fp32")
    z, c = inputs(G, 2)
    ws = G.mapping(z, c)
    seen = {}

    def hook(resolution, x, img):
        seen[resolution] = img.clone()
        return x, img

    full = fast(ws, block_hook=hook)
    assert full.shape[-1] == 64
    for res in (32, 16):
        draft = fast(ws, max_resolution=res)
        assert draft.shape[-2:] == (res, res)
        assert torch.equal(draft, seen[res])              # exactly the skip image the full run had there
    assert torch.equal(fast(ws, max_resolution=64), full)   # at (or above) the native size: the full synthesis


def test_backend_draft_frames_keep_the_output_size_and_resemble_the_full_ones():
    from sgvis.backends.stylegan import StyleGANBackend
    G = tiny_generator("stylegan2", resolution=64)
    backend = StyleGANBackend(G, torch.device("cpu"), precision="fp32")
    assert backend.supports_draft
    ws = G.mapping(*inputs(G, 2))
    full = backend.frames(ws).float()
    backend.draft_resolution = 32
    draft = backend.frames(ws).float()
    backend.draft_resolution = 16
    rough = backend.frames(ws).float()
    assert full.shape == draft.shape == rough.shape == (2, 64, 64, 3)
    err, rough_err = (draft - full).abs().mean(), (rough - full).abs().mean()
    spread = (full - full.mean()).abs().mean()
    assert 0 < err < rough_err < spread                   # a softer picture of the same image, coarser lower
    motion = torch.zeros([2, 8])
    motion[:, 0] = 0.1                                    # the bend still applies at a draft resolution
    assert not torch.equal(backend.frames(ws, motion=motion), backend.frames(ws).to(torch.uint8))


def test_draft_levels():
    assert draft_levels(256) == (128, 64)
    assert draft_levels(1024) == (512, 256, 128)
    assert draft_levels(64) == ()


class Machine:
    """Frame work as a function of the level and the load: each level halves the resolution and costs ~0.45x."""

    def __init__(self, full_s=0.030):
        self.full_s, self.load = full_s, 1.0

    def work(self, governor):
        return self.full_s * self.load * 0.45 ** governor.index


def run(governor, machine, seconds):
    levels, t = [], 0.0
    while t < seconds:
        w = machine.work(governor)
        governor.update(w, max(w, 1 / 60))
        t += max(w, 1 / 60)
        levels.append(governor.draft)
    return levels


def test_governor_drops_under_load_and_climbs_back_when_it_passes():
    g, m = LoadGovernor(256, budget_ms=50), Machine(0.030)
    assert run(g, m, 3.0)[-1] is None and g.changes == 0             # quiet: 30 ms fits in 50, full resolution
    m.load = 3.0                                                     # another program takes the CPU: 90 ms
    levels = run(g, m, 4.0)
    assert levels[0] is None and levels[1] == 128                    # the second slow frame drops a level
    assert levels[-1] == 128 and g.message.startswith("CPU busy")    # 40 ms at 128^2 fits; no flapping:
    assert g.changes == 1                                            #   90 ms would not fit at full size
    m.load = 6.0                                                     # heavier: 81 ms at 128, 36 ms at 64
    assert run(g, m, 3.0)[-1] == 64
    m.load = 1.0                                                     # the load is gone
    levels = run(g, m, 3 * CLIMB_AFTER_S + 2)
    assert levels[-1] is None and g.message == ""
    assert levels.index(None) * (1 / 60) >= 2 * CLIMB_AFTER_S * 0.9  # one level at a time, each after a calm
    report = g.report()
    assert report["changes"] == 4 and set(report["frames_at"]) == {"full", "128", "64"}


def test_one_slow_frame_is_a_hiccup_not_a_load():
    g = LoadGovernor(256, budget_ms=50)
    for k in range(200):
        g.update(0.2 if k % 40 == 20 else 0.03)
    assert g.draft is None and g.changes == 0


def test_governor_never_climbs_into_a_level_that_would_not_fit():
    g, m = LoadGovernor(256, budget_ms=50), Machine(0.030)
    m.load = 2.5                                                     # 75 ms full, 34 ms at 128: 34 * 2.2 > 35
    run(g, m, 10.0)
    assert g.draft == 128 and g.changes == 1


@pytest.mark.parametrize("native", [64, 32])
def test_a_model_too_small_to_draft_never_changes(native):
    g = LoadGovernor(native, budget_ms=10)
    assert all(g.update(1.0) is None for _ in range(20)) and g.changes == 0


# -- in a show -------------------------------------------------------------------------------------------------
from test_live import Player, jack, make_show  # noqa: E402,F401  (the JACK loopback fixture and helpers)


def cpu_hog():
    """Another program busy on one core, as Resolume, OBS or a browser would be on a VJ's laptop."""
    import subprocess
    import sys
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def play_show(tmp_path, **kw):
    from audio_fixtures import click_track
    from live_servers import loopback
    samples, _ = click_track(9.0, 44100, bpm=120)
    show = make_show(None, tmp_path, duration=8.0, **kw)          # the built-in model, 256x256
    with Player(samples):
        loopback()
        return show, show.run()


def test_live_keeps_its_latency_bounded_beside_a_cpu_hog(jack, tmp_path):
    hog = cpu_hog()
    try:
        show, stats = play_show(tmp_path)
    finally:
        hog.kill()
        hog.wait()
    assert stats["frames_shown"] >= 100, stats["frames_per_second"]
    assert stats["latency_ms"]["p95"] < 100, (stats["latency_ms"], stats["adapt"], stats["stage_ms"])
    assert set(stats["stage_ms"]) == {"analysis", "steering", "generation", "display"}


def test_live_drafts_when_frames_run_over_the_budget_and_says_so(jack, tmp_path):
    # A budget no frame meets: the show draws at its lowest draft resolution, and the HUD and --stats say so.
    show, stats = play_show(tmp_path, overrides=["live.latency_budget_ms=5"], fps=30)
    adapt = stats["adapt"]
    assert adapt["changes"] >= 2 and adapt["frames_at"]["64"] > 0.8 * stats["frames_shown"]
    assert any(line.startswith("CPU busy: drawing at 64^2") for line in show.hud_lines(0.0))
    assert stats["resolution"] == [256, 256]                      # the output size never changes
    # adapt off: the full resolution whatever the lag
    show, stats = play_show(tmp_path, overrides=["live.latency_budget_ms=5", "live.adapt=false"], fps=30)
    assert stats["adapt"] is None and not any(line.startswith("CPU busy") for line in show.hud_lines(0.0))


# -- generator threads (live.threads auto) --------------------------------------------------------------------
class FakeProc:
    """/proc on a fake clock: `others` cores busy with other programs, `own` with this one (ticks at 100 Hz)."""
    def __init__(self):
        self.busy = self.own_ticks = 0.0
        self.others, self.own = 0.0, 1.0

    def advance(self, seconds):
        self.busy += 100 * seconds * (self.others + self.own)
        self.own_ticks += 100 * seconds * self.own

    def __call__(self):
        return self.busy, self.own_ticks


def run_governor(governor, proc, seconds, now, frame_s=0.03):
    end = now + seconds
    while now < end:
        proc.advance(frame_s)
        now += frame_s
        governor.update(now)
    return now


def test_thread_governor_leaves_a_core_to_another_program_at_once_and_takes_it_back_later():
    from sgvis.live_load import THREAD_CLIMB_AFTER_S, ThreadGovernor
    proc = FakeProc()
    g = ThreadGovernor(max_threads=2, cores=2, reader=proc, ticks_per_s=100)
    now = run_governor(g, proc, 2.0, 0.0)
    assert g.threads == 2 and g.message == ""                       # our own use (2 cores' worth) is not load
    proc.others = 1.0                                                # a CPU hog starts
    now = run_governor(g, proc, 1.2, now)
    assert g.threads == 1 and "CPU shared: 1 generator thread" in g.message
    proc.others = 0.05                                               # it stops (an audio server stays)
    now = run_governor(g, proc, THREAD_CLIMB_AFTER_S * 0.5, now)
    assert g.threads == 1                                            # not back at the first quiet reading
    now = run_governor(g, proc, THREAD_CLIMB_AFTER_S + 1.0, now)
    assert g.threads == 2 and g.changes == 2
    proc.others = 2.0                                                # both cores busy: still one thread
    run_governor(g, proc, 1.2, now)
    assert g.threads == 1
    assert g.report()["frames_at"]["1"] > 0 and g.report()["frames_at"]["2"] > 0


def test_thread_governor_on_many_cores_keeps_what_is_free_and_without_proc_keeps_its_maximum():
    from sgvis.live_load import ThreadGovernor
    proc = FakeProc()
    g = ThreadGovernor(max_threads=8, cores=8, reader=proc, ticks_per_s=100)
    proc.others = 3.0
    run_governor(g, proc, 1.5, 0.0)
    assert g.threads == 5
    blind = ThreadGovernor(max_threads=4, cores=4, reader=lambda: None)
    assert not blind.available and blind.update(10.0) == 4


def test_live_spins_openmp_briefly_unless_the_user_chose_how_it_waits(tmp_path):
    import subprocess
    import sys
    code = ("import sys, sgvis.cli as c; c.build_parser('live'); import sgvis.live as l; ok = l.prepare_openmp(); "
            "import os, torch; print(ok, os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))")
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.split()
    if sys.platform.startswith("linux"):
        from sgvis.live import LIVE_SPIN_COUNT
        assert out == ["True", str(LIVE_SPIN_COUNT), "PASSIVE"]
    else:
        assert out == ["False", "None", "PASSIVE"]
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, OMP_WAIT_POLICY="ACTIVE"), capture_output=True,
                         text=True).stdout.split()
    assert out == ["False", "None", "ACTIVE"]                       # the user's choice stands


def test_live_command_beside_a_cpu_hog_gives_the_core_back_and_keeps_its_latency(jack, tmp_path):
    """The live command as a user runs it (OpenMP spinning, threads auto) with another program busy on a core:
    a generator thread sharing that core would stall every step (p95 ~150 ms measured), so the show must drop
    to the free core and keep its latency bounded."""
    import json
    import subprocess
    import sys

    from audio_fixtures import click_track, write_audio
    samples, _ = click_track(10.0, 44100, bpm=120)
    write_audio(tmp_path / "track.wav", samples, 44100)
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    hog = cpu_hog()
    try:
        r = subprocess.run([sys.executable, "-m", "sgvis", "live", "--device", f"file:{tmp_path / 'track.wav'}",
                            "--headless", "--duration", "8", "--fps", "0", "--stats", str(tmp_path / "s.json")],
                           capture_output=True, text=True, env=dict(env, JACK_NO_START_SERVER="1"), timeout=120)
    finally:
        hog.kill()
        hog.wait()
    assert r.returncode == 0, r.stderr
    stats = json.loads((tmp_path / "s.json").read_text())
    if sys.platform.startswith("linux") and (os.cpu_count() or 1) >= 2:
        threads = stats["threads"]
        assert threads["max_threads"] >= 2 and threads["frames_at"].get(str(threads["max_threads"] - 1), 0) > 0
    assert stats["latency_ms"]["p95"] < 100, (stats["latency_ms"], stats["threads"], stats["adapt"])
