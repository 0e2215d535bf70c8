"""Whole-track onset picking and beat tracking in plain numpy, giving the same frames as librosa's
`onset.onset_detect` and `beat.beat_track` with their defaults (the picks AV-Align takes from the music, and
Ellis' dynamic-programming beat tracker with librosa's tempo estimate).

librosa's versions run numba kernels: compiling them took about 30 s the first time after an install, and loading
them (one is never cached) 4 s in every later render, all before the first frame.  The algorithms are the
published ones (peak picking after Boeck et al. 2012; D. Ellis, "Beat tracking by dynamic programming", 2007);
this module writes them with numpy, vectorised where the recurrences allow.
"""
from __future__ import annotations

import numpy as np

TINY = np.finfo(np.float64).tiny


# -- onsets ------------------------------------------------------------------------------------------------
def pick_peaks(x: np.ndarray, pre_max: int, post_max: int, pre_avg: int, post_avg: int, delta: float,
               wait: int) -> np.ndarray:
    """Indices n where x[n] is the maximum of x[n - pre_max : n + post_max], is at least the mean of
    x[n - pre_avg : n + post_avg] plus `delta` (windows clipped to the array), and comes more than `wait` frames
    after the previous pick."""
    x = np.asarray(x, np.float64)
    n = len(x)
    if n == 0:
        return np.zeros(0, np.int64)
    idx = np.arange(n)
    # running maxima over the clipped windows: a max-filter of width pre_max + post_max
    padded = np.concatenate([np.full(pre_max, -np.inf), x, np.full(post_max, -np.inf)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, pre_max + post_max)[:n]
    is_max = x == windows.max(axis=1)
    lo, hi = np.maximum(idx - pre_avg, 0), np.minimum(idx + post_avg, n)
    csum = np.concatenate([[0.0], np.cumsum(x)])
    mean = (csum[hi] - csum[lo]) / (hi - lo)
    candidates = np.flatnonzero(is_max & (x >= mean + delta))
    picks = []
    last = -np.inf
    for c in candidates:
        if c - last > wait:
            picks.append(c)
            last = c
    return np.asarray(picks, np.int64)


def onset_frames(envelope: np.ndarray, sample_rate: float, hop: int) -> np.ndarray:
    """librosa.onset.onset_detect(onset_envelope=envelope, sr=sample_rate, hop_length=hop): the envelope scaled
    to 0..1, then peaks over the last 30 ms that clear the mean of 100 ms either side by 0.07, 30 ms apart."""
    env = np.asarray(envelope, np.float64)
    env = env - env.min()
    env = env / (env.max() + TINY)
    if not env.any() or not np.all(np.isfinite(env)):
        return np.zeros(0, np.int64)

    def frames(seconds: float) -> int:
        return int(np.ceil(seconds * float(sample_rate) // hop))

    return pick_peaks(env, pre_max=frames(0.03), post_max=frames(0.0) + 1, pre_avg=frames(0.10),
                      post_avg=frames(0.10) + 1, delta=0.07, wait=frames(0.03))


# -- tempo -------------------------------------------------------------------------------------------------
def tempo_bpm(envelope: np.ndarray, sample_rate: float, hop: int, start_bpm: float = 120.0,
              ac_seconds: float = 8.0, max_bpm: float = 320.0) -> float:
    """The tempo whose lag is strongest in the mean autocorrelation tempogram (Hann-windowed 8 s frames of the
    envelope, each autocorrelation scaled to its maximum), weighted by a log-normal prior around `start_bpm` (one
    octave standard deviation): librosa.feature.tempo with its defaults."""
    env = np.asarray(envelope, np.float64)
    n = len(env)
    win = int(int(ac_seconds * float(sample_rate)) // hop)
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win) / win)          # periodic Hann
    half = win // 2
    padded = np.pad(env, half, mode="linear_ramp", end_values=0.0)         # linear ramps to 0 at both ends
    frames = np.lib.stride_tricks.sliding_window_view(padded, win)[:n] * hann[None, :]
    n_pad = 1 << (2 * win - 2).bit_length()    # >= 2 win - 1: no wrap-around (numpy FFT: scipy.fft imports slowly)
    spectrum = np.fft.rfft(frames, n=n_pad, axis=1)
    ac = np.fft.irfft(spectrum.real ** 2 + spectrum.imag ** 2, n=n_pad, axis=1)[:, :win]
    peak = np.abs(ac).max(axis=1, keepdims=True)
    ac = ac / np.where(peak < TINY, 1.0, peak)
    mean_ac = ac.mean(axis=0)
    lags = np.arange(win, dtype=np.float64)
    with np.errstate(divide="ignore"):
        bpms = np.where(lags > 0, 60.0 * float(sample_rate) / (hop * np.maximum(lags, 1.0)), np.inf)
        log_prior = -0.5 * ((np.log2(bpms) - np.log2(start_bpm)) / 1.0) ** 2
    log_prior[: int(np.argmax(bpms < max_bpm))] = -np.inf
    return float(bpms[int(np.argmax(np.log1p(1e6 * mean_ac) + log_prior))])


# -- beats -------------------------------------------------------------------------------------------------
def beat_frames(envelope: np.ndarray, sample_rate: float, hop: int, start_bpm: float = 120.0,
                tightness: float = 100.0) -> np.ndarray:
    """librosa.beat.beat_track(onset_envelope=envelope, sr=sample_rate, hop_length=hop) frames: the best path of
    beats through the envelope (smoothed at the tempo's scale) whose spacing stays near the tempo's period, ends
    trimmed where the envelope is weak."""
    env = np.asarray(envelope, np.float64)
    if not env.any():
        return np.zeros(0, np.int64)
    bpm = tempo_bpm(env, sample_rate, hop, start_bpm)
    period = float(np.round(float(sample_rate) / hop * 60.0 / bpm))
    local = _local_score(env / (env.std(ddof=1) + TINY), period)
    backlink, cumulative = _best_paths(local, period, tightness)
    beats = np.zeros(len(env), bool)
    n = _last_beat(cumulative)
    while n >= 0:
        beats[n] = True
        n = backlink[n]
    return np.flatnonzero(_trim(local, beats))


def _local_score(env: np.ndarray, period: float) -> np.ndarray:
    """The envelope smoothed by a Gaussian of width period / 32 (kernel spanning +-period).  As in librosa, the
    envelope's first frame takes no part (its sum stops one term short of it), which decides near-ties."""
    p = int(period)
    kernel = np.exp(-0.5 * (np.arange(-p, p + 1) * 32.0 / period) ** 2)
    env = env.copy()
    env[0] = 0.0
    return np.convolve(env, kernel, mode="full")[p: p + len(env)]


def _best_paths(local: np.ndarray, period: float, tightness: float) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic programming: cumulative[i] = local[i] + the best cumulative[j] over predecessors j from 2 periods
    to half a period back, less tightness * log(gap / period)^2; backlink[i] = that j (-1 before the first beat,
    i.e. while the local score stays under 1% of its maximum, and where no predecessor exists)."""
    n = len(local)
    near = int(np.round(period / 2))
    far = int(2 * period)
    # predecessor gaps near..far, nearest first (ties go to the nearest, as the tracker scans them)
    gaps = np.arange(near, far + 1)
    penalty = tightness * (np.log(gaps) - np.log(period)) ** 2
    backlink = np.full(n, -1, np.int64)
    cumulative = np.zeros(n)
    threshold = 0.01 * local.max()
    started = False
    for i in range(n):
        j = i - gaps
        ok = j >= 0
        best_j = -1
        if ok[0]:
            k = int(np.count_nonzero(ok))                # j decreases along gaps: the valid ones come first
            scores = cumulative[j[:k]] - penalty[:k]
            m = int(np.argmax(scores))
            best_j = int(j[m])
            cumulative[i] = local[i] + scores[m]
        else:
            cumulative[i] = local[i]
        if not started and local[i] < threshold:
            backlink[i] = -1
        else:
            backlink[i] = best_j
            started = True
    return backlink, cumulative


def _last_beat(cumulative: np.ndarray) -> int:
    """The last local maximum of the cumulative score that reaches half the median of all its local maxima."""
    c = cumulative
    n = len(c)
    peak = np.zeros(n, bool)
    if n >= 3:
        peak[1:-1] = (c[1:-1] > c[:-2]) & (c[1:-1] >= c[2:])
    if n >= 2:
        peak[-1] = c[-1] > c[-2]
    if not peak.any():
        return n - 1
    threshold = 0.5 * float(np.median(c[peak]))
    good = np.flatnonzero(peak & (c >= threshold))
    return int(good[-1]) if len(good) else n - 1


def _trim(local: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """Drop the beats before the first and after the last frame whose local score beats half the RMS of the
    Hann-smoothed local scores at the beats."""
    out = beats.copy()
    w = np.hanning(5)
    at_beats = local[beats]
    smooth = np.convolve(at_beats, w)[len(w) // 2: len(local) + len(w) // 2]
    threshold = 0.5 * float(np.sqrt(np.mean(smooth ** 2))) if len(smooth) else 0.0
    strong = np.flatnonzero(local > threshold)
    if not len(strong):
        out[:] = False
        return out
    out[: strong[0]] = False
    out[strong[-1] + 1:] = False
    return out
