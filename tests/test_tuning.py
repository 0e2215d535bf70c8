"""The generator's CPU precision is chosen by measurement (sgvis.backends.tuning): the faster candidate wins, never
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


def test_tune_precision_measures_once_and_caches_per_batch(tmp_path, monkeypatch):
    from stylegan.fast import FastSynthesis
    G = tiny_generator("stylegan2", resolution=32)
    synth = FastSynthesis(G, precision="auto")
    path = str(tmp_path / "tuning.json")
    calls = []
    real_choose = tuning.choose

    def counting(*a, **k):
        calls.append(1)
        r = real_choose(*a, **k)
        # as if the model were big and bf16 much faster and passed the tests
        r["seconds"].update(fp32=1.0, bf16=0.1)
        r["choice"] = "bf16"
        r["rejected"] = []
        return r

    monkeypatch.setattr(tuning, "choose", counting)
    first = tuning.tune_precision(synth, G, 4, path=path)
    assert calls == [1] and first["choice"] == "bf16" and synth.precision == "bf16"
    assert first["error"]["bf16"] < tuning.TOLERANCE and first["error"]["fp32"] == 0.0
    synth.precision = "fp32"
    again = tuning.tune_precision(synth, G, 4, path=path)
    assert calls == [1] and again["choice"] == "bf16" and synth.precision == "bf16"      # from the cache
    tuning.tune_precision(synth, G, 1, path=path)
    assert calls == [1, 1]                                                                   # another batch size
    assert len(json.loads(open(path).read())) == 2


def test_a_model_too_fast_to_time_keeps_the_cpu_flag_default(tmp_path, monkeypatch):
    from stylegan.fast import FastSynthesis, cpu_bf16_support
    G = tiny_generator("stylegan2", resolution=32)
    synth = FastSynthesis(G, precision="auto")
    monkeypatch.setattr(tuning, "choose", lambda *a, **k: {"choice": "bf16", "seconds": {"fp32": 0.001, "bf16": 0.0005},
                                                           "error": {"fp32": 0.0, "bf16": 0.001}, "shimmer": {},
                                                           "rejected": []})
    r = tuning.tune_precision(synth, G, 2, path=str(tmp_path / "t.json"))
    assert r["basis"] == "too fast to measure: CPU flags"
    assert r["choice"] == synth.precision == ("bf16" if cpu_bf16_support()["amx"] else "fp32")
    assert "too fast to measure" in tuning.describe(r)


def test_render_reports_the_measured_choice_and_a_forced_precision_skips_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SGVIS_CACHE", str(tmp_path / "cache"))
    from sgvis.backends.stylegan import StyleGANBackend
    G = tiny_generator("stylegan2", resolution=32)
    ws = G.mapping(torch.randn(2, G.z_dim), None)
    auto = StyleGANBackend(G, torch.device("cpu"), precision="auto")
    auto.frames(ws)
    assert auto.tuning["choice"] in ("fp32", "bf16") and set(auto.tuning["seconds"]) == {"fp32", "bf16"}
    assert tuning.describe(auto.tuning) in auto.description
    assert (tmp_path / "cache" / tuning.CACHE_NAME).exists()
    forced = StyleGANBackend(tiny_generator("stylegan2", resolution=32), torch.device("cpu"), precision="fp32")
    forced.frames(ws)
    assert forced.tuning is None and forced.synthesize.precision == "fp32"

    from audio_fixtures import click_track, write_audio
    from sgvis.render import RenderJob, render
    samples, _ = click_track(1.0, 22050)
    write_audio(tmp_path / "c.wav", samples, 22050)
    stylegan.save(G, tmp_path / "tiny.safetensors")
    stats = render(RenderJob(audio=str(tmp_path / "c.wav"), output=str(tmp_path / "o.mp4"),
                             model=str(tmp_path / "tiny.safetensors"), fps=10.0))
    assert stats["generator_tuning"]["choice"] in ("fp32", "bf16")
    assert set(stats["generator_tuning"]["seconds"]) == {"fp32", "bf16"}
