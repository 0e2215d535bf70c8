"""Inputs that are legal but hostile: non-finite or huge audio, truncated files whose header claims more, hour-long
tracks (bounded memory of the offline beat tracker), numpy allocation bombs in pickles, and how warnings reach
users."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

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


def _warnings(stderr):
    return [line for line in stderr.splitlines() if line.startswith("sgvis: warning:")]


# -- non-finite and huge samples -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["all-inf", "few-inf", "nan", "huge"])
def test_non_finite_or_huge_audio_renders_with_one_warning(tmp_path, model, kind):
    x, _ = click_track(2.0, SR)
    x = x.astype(np.float32)
    if kind == "all-inf":
        x[:] = np.inf
    elif kind == "few-inf":
        x[[1000, 5000, 20000]] = [np.inf, -np.inf, np.inf]
    elif kind == "nan":
        x[::7] = np.nan
    else:
        x = x * np.float32(1e30)
    src = tmp_path / "in.wav"
    write_audio(src, x, SR, codec="pcm_f32le")
    out = tmp_path / "o.mp4"
    result = run_cli("render", str(src), "-o", str(out), "--model", model, "--fps", "10")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warnings = _warnings(result.stderr)
    assert len(warnings) == 1, result.stderr           # once, although the file is decoded several times
    assert ("non-finite" if kind != "huge" else "clipped") in warnings[0]
    frames, vdur, adur, _ = read_video(out)
    assert len(frames) == 20 and abs(adur - 2.0) < 0.1
    with __import__("av").open(str(out)) as c:         # the muxed sound is finite too
        sound = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    assert np.isfinite(sound).all() and np.abs(sound).max() <= 20


def test_decoded_blocks_are_sanitized(tmp_path):
    from sgvis.audio.decode import MAX_AMPLITUDE, decode_blocks
    x = np.zeros(4000, np.float32)
    x[10], x[20], x[30] = np.inf, np.nan, 1e30
    src = tmp_path / "in.mka"
    write_audio(src, x, SR)
    y = np.concatenate([b[0] for b in decode_blocks(str(src), SR, "mono")])
    assert np.isfinite(y).all() and np.abs(y).max() <= MAX_AMPLITUDE


# -- truncated files -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def truncated_mp3(tmp_path_factory):
    """An mp3 whose header (Xing frame count) says 10 s; the file holds the first ~3 s."""
    d = tmp_path_factory.mktemp("trunc")
    x, _ = click_track(10.0, SR)
    full = d / "full.mp3"
    write_audio(full, x, SR)
    data = full.read_bytes()
    path = d / "truncated.mp3"
    path.write_bytes(data[:len(data) * 3 // 10])
    from sgvis.audio import decode as audio_in
    held = sum(b.shape[1] for b in audio_in.decode_blocks(str(path), SR, "mono")) / SR
    assert audio_in.probe(str(path)).duration == pytest.approx(10.0, abs=0.1) and 2 < held < 4
    return str(path), held


def test_truncated_file_renders_what_it_holds_and_says_so(tmp_path, model, truncated_mp3):
    src, held = truncated_mp3
    out = tmp_path / "o.mp4"
    result = run_cli("render", src, "-o", str(out), "--model", model, "--fps", "10")
    assert result.returncode == 0, result.stderr
    warnings = _warnings(result.stderr)
    assert len(warnings) == 1 and "header says 10.00s" in warnings[0], result.stderr
    frames, vdur, adur, _ = read_video(out)
    assert len(frames) == round(held * 10)
    assert abs(adur - vdur) < 0.15, (adur, vdur)         # the video does not run on past its sound
    assert f"{held:.1f}s of audio" in result.stdout, result.stdout


def test_start_past_what_a_truncated_file_holds_is_one_line(tmp_path, model, truncated_mp3):
    src, held = truncated_mp3
    out = tmp_path / "o.mp4"
    result = run_cli("render", src, "-o", str(out), "--model", model, "--start", "6")
    _one_clear_line(result, "no audio could be decoded from 6s", "truncated")
    assert not out.exists()


def test_a_video_whose_sound_ends_early_is_never_silent(tmp_path):
    """The sink itself says so when its source runs out before the frames do (one line, the file is kept)."""
    from sgvis.outputs.files import VideoSink
    x, _ = click_track(1.0, SR)
    src = tmp_path / "short.wav"
    write_audio(src, x, SR)
    sink = VideoSink(str(tmp_path / "o.mp4"), 10, 16, 16, audio_path=str(src), audio_end=3.0, audio_rate=SR,
                     audio_channels=1)
    for _ in range(30):
        sink.write(np.zeros((16, 16, 3), np.uint8))
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        sink.close()
    assert "sound ends at 1.00s, before the video (3.00s)" in err.getvalue()


# -- bounded memory: the offline beat tracker ------------------------------------------------------------------

def _onsets(seconds, bpm=128.0):
    from sgvis.features.analysis import FeatureExtractor, MelConfig
    x, clicks = click_track(seconds, SR, bpm=bpm)
    extractor = FeatureExtractor(MelConfig(), record_onsets=True)
    extractor.push(x)
    return np.asarray(extractor.onsets), clicks


def _hits(beats, clicks, tol=0.07):
    precision = (np.abs(beats[:, None] - clicks[None]).min(1) < tol).mean()
    recall = (np.abs(clicks[:, None] - beats[None]).min(1) < tol).mean()
    return precision, recall


def test_windowed_beat_tracking_matches_the_whole_track_in_bounded_memory():
    """Small windows (so that the test is quick) over 100 s: the same beats as one whole-track pass, no beat
    doubled or lost at the seams, and the envelope held never exceeds a window and its overlap."""
    from sgvis.features.analysis import MelConfig, OfflineBeatTracker, offline_beat_times
    mel = MelConfig()
    env, clicks = _onsets(100.0)
    whole = offline_beat_times(env, mel)
    tracker = OfflineBeatTracker(mel, window_s=20.0, overlap_s=5.0)
    held = 0
    for i in range(0, len(env), 41):
        tracker.push(env[i:i + 41])
        held = max(held, len(tracker._env))
    windowed = tracker.finish()
    assert held < tracker.window + tracker.overlap
    assert _hits(windowed, clicks)[0] >= _hits(whole, clicks)[0] - 0.01
    assert _hits(windowed, clicks)[1] >= _hits(whole, clicks)[1] - 0.01
    assert abs(len(windowed) - len(whole)) <= 2
    period = 60.0 / 128
    assert np.diff(windowed).min() > 0.6 * period and np.diff(windowed).max() < 1.4 * period


def test_a_track_within_one_window_is_tracked_exactly_as_before():
    from sgvis.features.analysis import MelConfig, OfflineBeatTracker, offline_beat_times
    mel = MelConfig()
    env, _ = _onsets(12.0)
    tracker = OfflineBeatTracker(mel)
    tracker.push(env)
    np.testing.assert_array_equal(tracker.finish(), offline_beat_times(env, mel))


# -- allocation bombs in pickles -------------------------------------------------------------------------------

class _Bomb:
    def __init__(self, how):
        self.how = how

    def __reduce__(self):
        if self.how == "ndarray":
            return np.ndarray, ((10 ** 6, 10 ** 6),)
        try:
            from numpy._core.multiarray import _reconstruct
        except ImportError:
            from numpy.core.multiarray import _reconstruct
        return _reconstruct, (np.ndarray, (10 ** 6, 10 ** 6), "f8")


@pytest.mark.parametrize("how", ["ndarray", "reconstruct"])
def test_a_tiny_pickle_cannot_make_numpy_allocate(tmp_path, how):
    path = tmp_path / "bomb.pkl"
    with open(path, "wb") as f:
        pickle.dump({"G_ema": _Bomb(how)}, f, protocol=4)
    assert os.path.getsize(path) < 200
    result = run_cli("info", str(path))
    _one_clear_line(result, "refused", "more than the whole file")


def test_real_arrays_in_pickles_still_load():
    """Arrays filled from the file's own bytes (how every real pickle stores them) pass the size bound."""
    import io

    from stylegan.safe_pickle import safe_load
    arrays = {"a": np.arange(10000, dtype=np.float32).reshape(100, 100), "b": np.zeros(0), "c": np.float64(3.5)}
    blob = pickle.dumps(arrays, protocol=4)
    out = safe_load(io.BytesIO(blob))
    np.testing.assert_array_equal(out["a"], arrays["a"])
    assert out["c"] == 3.5


# -- warnings reach users as one line --------------------------------------------------------------------------

@pytest.mark.slow
def test_unreadable_training_audio_is_one_clean_warning_line(tmp_path, model):
    """A real process (pytest records warnings itself): no 'UserWarning', no source line, one line."""
    data = tmp_path / "data"
    data.mkdir()
    x, _ = click_track(2.0, SR)
    write_audio(data / "good.wav", x, SR)
    (data / "broken.mp3").write_bytes(b"ID3" + os.urandom(2000))
    env = dict(os.environ, PYTHONPATH=ROOT, SGVIS_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "sgvis", "train-encoder", "--model", model, "--data", str(data),
                             "--out", str(tmp_path / "run"), "--batch", "2", "--clip-frames", "4", "--device", "cpu",
                             "--steps", "1", "--set", "train_encoder.loss_resolution=16",
                             "--set", "train_encoder.preview_every=0"],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "broken.mp3" in line]
    assert len(lines) == 1 and lines[0].startswith("sgvis: warning: skipped 1 unreadable file"), result.stderr
    assert "UserWarning" not in result.stderr and "warnings.warn" not in result.stderr
    assert "[Errno" not in result.stderr
