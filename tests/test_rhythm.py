"""The numpy onset picking, tempo, beat tracking and filter banks (sgvis.features.rhythm, .filterbanks) give what
librosa gives, and a render no longer loads librosa or numba (whose compilation held up the first frame)."""
import subprocess
import sys

import numpy as np
import pytest

from audio_fixtures import click_track, write_audio
from sgvis.features import filterbanks, rhythm
from sgvis.features.analysis import FeatureExtractor, MelConfig

librosa = pytest.importorskip("librosa")
SR, HOP = 22050, 512


def envelopes():
    rng = np.random.default_rng(7)
    out = []
    for k in range(14):
        n = int(rng.integers(60, 2600))
        env = np.abs(rng.standard_normal(n)) ** 3
        if k % 2:                                            # a pulse train over the noise
            env += 4 * (np.arange(n) % int(rng.integers(9, 40)) == 0)
        out.append(env)
    # the features stage's own onset strength of a click track at 128 BPM
    samples, _ = click_track(12.0, SR, bpm=128.0)
    ex = FeatureExtractor(MelConfig(), record_onsets=True)
    ex.push(samples.astype(np.float32))
    out.append(np.asarray(ex.onsets, np.float64))
    return out


@pytest.mark.slow
def test_onsets_tempo_and_beats_equal_librosas():
    for env in envelopes():
        np.testing.assert_array_equal(rhythm.onset_frames(env, SR, HOP),
                                      librosa.onset.onset_detect(onset_envelope=env.copy(), sr=SR, hop_length=HOP))
        bpm, beats = librosa.beat.beat_track(onset_envelope=env.copy(), sr=SR, hop_length=HOP)
        assert rhythm.tempo_bpm(env, SR, HOP) == pytest.approx(float(np.atleast_1d(bpm)[0]), rel=1e-12)
        np.testing.assert_array_equal(rhythm.beat_frames(env, SR, HOP), beats)


def test_click_track_beats_and_onsets_land_on_the_clicks():
    samples, times = click_track(12.0, SR, bpm=128.0)
    ex = FeatureExtractor(MelConfig(), record_onsets=True)
    ex.push(samples.astype(np.float32))
    env = np.asarray(ex.onsets, np.float64)
    beat_s = rhythm.beat_frames(env, SR, HOP) * HOP / SR
    onset_s = (rhythm.onset_frames(env, SR, HOP) + 1) * HOP / SR
    assert rhythm.tempo_bpm(env, SR, HOP) == pytest.approx(128.0, rel=0.03)
    for picked in (beat_s, onset_s):
        err = np.abs(picked[:, None] - times[None, :]).min(axis=1)
        assert len(picked) >= len(times) - 3 and np.median(err) < 0.03, (len(picked), len(times), err)


def brute_force_peaks(x, pre_max, post_max, pre_avg, post_avg, delta, wait):
    """The three rules, frame by frame."""
    picks = []
    for n in range(len(x)):
        window = x[max(0, n - pre_max):min(len(x), n + post_max)]
        around = x[max(0, n - pre_avg):min(len(x), n + post_avg)]
        if x[n] == window.max() and x[n] >= around.mean() + delta and (not picks or n - picks[-1] > wait):
            picks.append(n)
    return picks


def test_pick_peaks_follows_its_three_rules():
    rng = np.random.default_rng(3)
    for _ in range(40):
        x = np.round(rng.random(int(rng.integers(1, 300))) * 8) / 8       # coarse values: many ties
        params = dict(pre_max=int(rng.integers(0, 5)), post_max=int(rng.integers(1, 5)),
                      pre_avg=int(rng.integers(0, 8)), post_avg=int(rng.integers(1, 8)),
                      delta=float(rng.choice([0.0, 0.05, 0.3])), wait=int(rng.integers(0, 6)))
        assert rhythm.pick_peaks(x, **params).tolist() == brute_force_peaks(x, **params), params
    assert rhythm.onset_frames(np.zeros(50), SR, HOP).size == 0
    assert rhythm.beat_frames(np.zeros(50), SR, HOP).size == 0


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [(22050, 2048, 80, 20.0, 11025.0), (16000, 512, 40, 0.0, 8000.0),
                                                       (44100, 4096, 128, 30.0, 16000.0)])
def test_filter_banks_equal_librosas(sr, n_fft, n_mels, fmin, fmax):
    mel = filterbanks.mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert mel.dtype == np.float32 and mel.shape == ref.shape
    np.testing.assert_allclose(mel, ref, rtol=0, atol=1e-7)
    np.testing.assert_allclose(filterbanks.mel_frequencies(n_mels, fmin, fmax),
                               librosa.mel_frequencies(n_mels, fmin=fmin, fmax=fmax), rtol=1e-12)
    chroma = filterbanks.chroma_filterbank(sr, n_fft)
    np.testing.assert_allclose(chroma, librosa.filters.chroma(sr=sr, n_fft=n_fft), rtol=0, atol=1e-7)


def test_a_render_loads_none_of_the_slow_imports(tmp_path):
    # librosa's numba kernels compiled for ~30 s on a first run; scipy.signal and torch._dynamo take about a second
    # each to import (a render used neither)
    samples, _ = click_track(2.0, SR)
    write_audio(tmp_path / "clicks.wav", samples, SR)
    import stylegan
    from conftest import tiny_generator
    stylegan.save(tiny_generator("stylegan2", resolution=32), tmp_path / "tiny.safetensors")
    code = ("import sys\n"
            "from sgvis.render import RenderJob, render\n"
            f"render(RenderJob(audio={str(tmp_path / 'clicks.wav')!r}, output={str(tmp_path / 'o.mp4')!r}, "
            f"model={str(tmp_path / 'tiny.safetensors')!r}, fps=10.0))\n"
            "print(sorted(m for m in ('librosa', 'numba', 'scipy.signal', 'scipy.fft', 'torch._dynamo') "
            "if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "o.mp4").exists()
