"""The generator's CPU settings (precision, layout, modulation, threads, batch) are chosen by measurement (sgvis.backends.tuning): the faster candidate wins, never
one outside the fidelity tolerance, and the choice is cached, reported and skipped when a precision is forced."""
import json

import pytest
import torch

import stylegan
from conftest import tiny_generator
from sgvis.backends import tuning


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def candidate(clock, cost, offset=0.0):
    """A 'generator' that takes `cost` seconds of the fake clock and is `offset` away from the reference image."""
    def run(ws):
        clock.now += cost
        return torch.zeros(2, 3, 4, 4) + offset
    return run


def test_the_faster_candidate_wins_and_a_slow_reference_loses():
    clock = FakeClock()
    r = tuning.choose({"fp32": candidate(clock, 0.30), "bf16": candidate(clock, 0.10, offset=0.005)},
                      torch.zeros(1), timer=clock)
    assert r["choice"] == "bf16" and r["rejected"] == []
    assert r["seconds"]["fp32"] == pytest.approx(0.30) and r["seconds"]["bf16"] == pytest.approx(0.10)
    clock = FakeClock()
    r = tuning.choose({"fp32": candidate(clock, 0.10), "bf16": candidate(clock, 0.30, offset=0.005)},
                      torch.zeros(1), timer=clock)
    assert r["choice"] == "fp32"


def test_a_far_slower_candidate_costs_one_call_and_a_slower_one_is_still_timed():
    clock = FakeClock()
    calls = {"fp32": 0, "bf16": 0, "2 threads": 0}

    def counted(name, cost):
        run = candidate(clock, cost)

        def call(ws):
            calls[name] += 1
            return run(ws)
        return call
    r = tuning.choose({"fp32": counted("fp32", 0.1), "bf16": counted("bf16", 1.1),
                       "2 threads": counted("2 threads", 0.25)}, torch.zeros(1), torch.ones(1), timer=clock)
    assert calls["bf16"] == 1 and r["seconds"]["bf16"] == pytest.approx(1.1)   # given up after its first call
    assert calls["2 threads"] > 2 and r["seconds"]["2 threads"] == pytest.approx(0.25)
    assert r["choice"] == "fp32"


def test_never_a_candidate_outside_tolerance_and_not_for_a_few_percent():
    clock = FakeClock()
    r = tuning.choose({"fp32": candidate(clock, 0.30), "bf16": candidate(clock, 0.01, offset=0.5)},
                      torch.zeros(1), timer=clock)
    assert r["choice"] == "fp32" and r["rejected"] == ["bf16"] and r["error"]["bf16"] == 0.5
    clock = FakeClock()
    r = tuning.choose({"fp32": candidate(clock, 0.30), "bf16": candidate(clock, 0.28)}, torch.zeros(1), timer=clock)
    assert r["choice"] == "fp32"            # 7% faster is within the noise: the exact one stays


def test_a_candidate_whose_rounding_does_not_follow_the_latents_is_rejected():
    """Shimmer: over a small step of the latents, a candidate must change as the reference does."""
    clock = FakeClock()
    ws, ws_next = torch.zeros(1, 4, 4), torch.full((1, 4, 4), 0.01)

    def reference(w):
        clock.now += 0.3
        return w.clone()

    def noisy(w):                      # right on average, fast, but its error jumps with every input
        clock.now += 0.1
        return w + 0.005 * torch.sin(1e4 * w + torch.arange(16.0).reshape(1, 4, 4))

    def faithful(w):
        clock.now += 0.1
        return w + 0.001
    r = tuning.choose({"fp32": reference, "bf16": noisy}, ws, ws_next, timer=clock)
    assert r["choice"] == "fp32" and r["rejected"] == ["bf16"] and r["shimmer"]["bf16"] > tuning.SHIMMER_TOLERANCE
    assert r["error"]["bf16"] < tuning.TOLERANCE                   # close in value: only the shimmer test catches it
    clock = FakeClock()
    r = tuning.choose({"fp32": reference, "bf16": faithful}, ws, ws_next, timer=clock)
    assert r["choice"] == "bf16" and r["shimmer"]["bf16"] == pytest.approx(0.0, abs=1e-6)


def test_tune_generator_measures_once_and_caches_per_batch(tmp_path, monkeypatch):
    from stylegan.fast import FastSynthesis
    G = tiny_generator("stylegan2", resolution=32)
    synth = FastSynthesis(G, precision="auto")
    path = str(tmp_path / "tuning.json")
    calls = []
    real_choose = tuning.choose

    def counting(candidates, *a, **k):
        calls.append(list(candidates))
        r = real_choose(candidates, *a, **k)
        if "bf16" in candidates:     # as if the model were big and bf16 much faster and passed the tests
            r["seconds"].update(fp32=1.0, bf16=0.1)
            r["choice"] = "bf16"
            r["rejected"] = []
        return r

    monkeypatch.setattr(tuning, "choose", counting)
    first = tuning.tune_generator(synth, G, 4, path=path)
    assert calls[0] == ["fp32", "bf16"] and first["choice"] == "bf16" and synth.precision == "bf16"
    assert [t["axis"] for t in first["trials"]] == ["precision", "channels_last", "fused_modconv"]
    assert first["error"]["bf16"] < tuning.TOLERANCE and first["error"]["fp32"] == 0.0
    n = len(calls)
    synth.configure(precision="fp32")
    again = tuning.tune_generator(synth, G, 4, path=path)
    assert len(calls) == n and again["choice"] == "bf16" and synth.precision == "bf16"      # from the cache
    tuning.tune_generator(synth, G, 1, path=path)
    assert len(calls) > n                                                                     # another batch size
    assert len(json.loads(open(path).read())) == 2


class SlowSetting:
    """A FastSynthesis stand-in on a fake clock: every setting costs time, one of them is made slow."""
    def __init__(self, clock, slow: dict, per_frame=0.01, wrong: dict | None = None):
        self.clock, self.slow, self.per_frame, self.wrong = clock, slow, per_frame, wrong or {}
        self.precision, self.channels_last, self.fused_modconv = "fp32", True, "auto"

    def configure(self, precision=None, channels_last=None, fused_modconv=None):
        self.precision = precision or self.precision
        self.channels_last = self.channels_last if channels_last is None else channels_last
        self.fused_modconv = self.fused_modconv if fused_modconv is None else fused_modconv

    def __call__(self, ws):
        state = {"precision": self.precision, "channels_last": self.channels_last,
                 "fused_modconv": self.fused_modconv, "threads": torch.get_num_threads(), "batch": len(ws)}
        cost = self.per_frame * len(ws)
        for k, v in self.slow.items():
            if state[k] == v:
                cost *= 3
        self.clock.now += cost
        off = sum(0.5 for k, v in self.wrong.items() if state[k] == v)
        return ws.mean(dim=(1, 2)).reshape(-1, 1, 1, 1).expand(-1, 3, 4, 4) + off


@pytest.mark.parametrize("slow, expect", [
    ({"channels_last": True}, {"channels_last": False}),
    ({"fused_modconv": "auto"}, {"fused_modconv": False}),
    ({"threads": 2}, {"threads": 1}),
    ({"threads": 1}, {"threads": 2}),
    ({"batch": 4}, {"batch": 8}),
])
def test_every_axis_takes_the_faster_candidate_when_one_is_made_slow(slow, expect):
    clock = FakeClock()
    synth = SlowSetting(clock, slow)
    ws = torch.rand(8, 3, 2)
    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(slow.get("threads", 2))      # the slow one is where the trial starts
        r = tuning.measure_settings(synth, ws, ws + 0.001, 4, ("fp32",), threads=[1, 2], batches=[4, 8],
                                    timer=clock)
    finally:
        torch.set_num_threads(threads_before)
    for k, v in expect.items():
        assert r["settings"][k] == v, (k, r)
    defaults = {"precision": "fp32", "channels_last": True, "fused_modconv": "auto", "batch": 4}
    for k, v in defaults.items():             # the other axes stay at their defaults: nothing there was faster
        if k not in expect:
            assert r["settings"][k] == v, (k, r)


def test_a_faster_setting_outside_tolerance_is_never_taken():
    clock = FakeClock()
    # contiguous is 3x faster (channels_last made slow) but its pictures are wrong: the exact axis rejects it too
    synth = SlowSetting(clock, {"channels_last": True}, wrong={"channels_last": False})
    ws = torch.rand(4, 3, 2)
    r = tuning.measure_settings(synth, ws, ws + 0.001, 4, ("fp32",))
    assert r["settings"]["channels_last"] is True and "contiguous" in r["rejected"]
    assert synth.channels_last is True                       # and the synthesis is left at the choice


def test_render_reports_the_measured_choice_and_a_forced_precision_skips_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SGVIS_CACHE", str(tmp_path / "cache"))
    from sgvis.backends.stylegan import StyleGANBackend
    G = tiny_generator("stylegan2", resolution=32)
    ws = G.mapping(torch.randn(2, G.z_dim), None)
    auto = StyleGANBackend(G, torch.device("cpu"), precision="auto")
    auto.frames(ws)
    assert auto.tuning["choice"] in ("fp32", "bf16") and {"fp32", "bf16", "contiguous"} <= set(auto.tuning["seconds"])
    assert tuning.describe(auto.tuning) in auto.description
    assert (tmp_path / "cache" / tuning.CACHE_NAME).exists()
    forced = StyleGANBackend(tiny_generator("stylegan2", resolution=32), torch.device("cpu"), precision="fp32")
    forced.frames(ws)                           # a forced precision: the other axes are still measured
    assert forced.synthesize.precision == "fp32" and forced.tuning["settings"]["precision"] == "fp32"
    assert "bf16" not in forced.tuning["seconds"]

    from audio_fixtures import click_track, write_audio
    from sgvis import render as render_module
    from sgvis.render import RenderJob, render
    threads_before = torch.get_num_threads()
    samples, _ = click_track(1.0, 22050)
    write_audio(tmp_path / "c.wav", samples, 22050)
    stylegan.save(G, tmp_path / "tiny.safetensors")
    stats = render(RenderJob(audio=str(tmp_path / "c.wav"), output=str(tmp_path / "o.mp4"),
                             model=str(tmp_path / "tiny.safetensors"), fps=10.0))
    assert stats["generator_tuning"]["choice"] in ("fp32", "bf16")
    settings = stats["generator_tuning"]["settings"]
    assert settings["batch"] in render_module.BATCH_CANDIDATES       # render.batch auto: measured
    threads = [t for t in stats["generator_tuning"]["trials"] if t["axis"] == "threads"]
    assert threads and "1 thread" in threads[0]["candidates"]       # render.threads auto: measured
    assert torch.get_num_threads() == threads_before               # and given back after the render


def test_a_trial_slower_than_the_work_it_chose_for_counts_as_measured_under_load(tmp_path):
    record = {"basis": "measured", "chosen_seconds": 0.1, "key": "k"}
    assert tuning.measured_under_load(record, 0.05)              # the render generated twice as fast as the trial
    assert not tuning.measured_under_load(record, 0.07)          # within what the look and the warp add
    assert not tuning.measured_under_load(record, 0.3)           # a busy render proves nothing against the trial
    assert not tuning.measured_under_load({"basis": "measured", "key": "k"}, 0.01)        # an older record
    assert not tuning.measured_under_load(dict(record, basis="too fast to measure: the defaults"), 0.01)
    path = str(tmp_path / "tuning.json")
    with open(path, "w") as f:
        json.dump({"k": record, "other": {"settings": {}}}, f)
    assert tuning.forget(record, path) and set(tuning.load_choices(path)) == {"other"}
    assert not tuning.forget(record, path)                        # already gone


def test_a_render_faster_than_its_cached_trial_has_it_measured_again(tmp_path, monkeypatch):
    """A trial that ran on a busy machine (here: a cached record claiming 10 s per frame) must not hold its choice
    forever: the render that shows it wrong drops it, says so, and the next render measures again."""
    monkeypatch.setenv("SGVIS_CACHE", str(tmp_path / "cache"))
    from audio_fixtures import click_track, write_audio
    from sgvis.render import JUDGE_MIN_FRAMES, RenderJob, render
    G = tiny_generator("stylegan2", resolution=32)
    stylegan.save(G, tmp_path / "tiny.safetensors")
    samples, _ = click_track(4.0, 22050)
    write_audio(tmp_path / "c.wav", samples, 22050)

    def job(name):
        return RenderJob(audio=str(tmp_path / "c.wav"), output=str(tmp_path / name),
                         model=str(tmp_path / "tiny.safetensors"), fps=20.0)
    first = render(job("a.mp4"))                                  # measures and caches
    assert first["frames"] >= JUDGE_MIN_FRAMES and not first["generator_settings_remeasured_next_run"]
    path = tmp_path / "cache" / tuning.CACHE_NAME
    key = first["generator_tuning"]["key"]
    data = json.loads(path.read_text())
    data[key].update(chosen_seconds=10.0, basis="measured")      # as if measured while the machine was busy
    path.write_text(json.dumps(data))
    busy = render(job("b.mp4"))
    assert busy["generator_settings_remeasured_next_run"]
    assert key not in json.loads(path.read_text())
    again = render(job("c.mp4"))                                  # measured again, and believed
    assert again["generator_tuning"]["measured"] and not again["generator_settings_remeasured_next_run"]
    assert key in json.loads(path.read_text())
