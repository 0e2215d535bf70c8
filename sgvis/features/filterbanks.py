"""Mel and chroma filter banks in plain numpy, equal to librosa's (`librosa.filters.mel` with Slaney's mel scale
and area normalisation, `librosa.filters.chroma` with its defaults) to float32 rounding.

librosa builds the same matrices, but loading its filter and conversion modules compiles numba kernels: about 20 s
the first time after an install and 1-2 s in every later process, all before the first frame.  These are the
published formulas (Slaney's Auditory Toolbox mel scale; Ellis' chroma weighting), computed with numpy alone.
"""
from __future__ import annotations

import math

import numpy as np

# Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above (27 steps per factor 6.4).
_F_SP = 200.0 / 3.0
_BREAK_HZ = 1000.0
_BREAK_MEL = _BREAK_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(hz) -> np.ndarray:
    hz = np.asarray(hz, np.float64)
    linear = hz / _F_SP
    with np.errstate(divide="ignore"):
        log = _BREAK_MEL + np.log(np.maximum(hz, 1e-300) / _BREAK_HZ) / _LOG_STEP
    return np.where(hz >= _BREAK_HZ, log, linear)


def mel_to_hz(mel) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    return np.where(mel >= _BREAK_MEL, _BREAK_HZ * np.exp(_LOG_STEP * (mel - _BREAK_MEL)), _F_SP * mel)


def mel_frequencies(n: int, fmin: float, fmax: float) -> np.ndarray:
    """`n` frequencies (Hz) evenly spaced on the mel scale from `fmin` to `fmax`."""
    return mel_to_hz(np.linspace(float(hz_to_mel(fmin)), float(hz_to_mel(fmax)), int(n)))


def mel_filterbank(sample_rate: float, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters between neighbouring mel frequencies, each scaled to unit
    area (2 / bandwidth in Hz); float32."""
    bins = np.fft.rfftfreq(int(n_fft), 1.0 / float(sample_rate))
    edges = mel_frequencies(n_mels + 2, fmin, fmax)
    width = np.diff(edges)
    offset = edges[:, None] - bins[None, :]              # edge frequency minus bin frequency
    rising = -offset[:-2] / width[:-1, None]
    falling = offset[2:] / width[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def chroma_filterbank(sample_rate: float, n_fft: int, n_chroma: int = 12, centre_octave: float = 5.0,
                      octave_width: float = 2.0) -> np.ndarray:
    """[n_chroma, n_fft // 2 + 1] pitch-class weights of the FFT bins, starting at C: a Gaussian bump per bin
    around its (fractional) pitch class, each bin's column scaled to unit L2 norm, then weighted by a Gaussian over
    octaves centred on `centre_octave` (octaves above A440 / 16); float32."""
    n_fft = int(n_fft)
    freqs = np.linspace(0.0, float(sample_rate), n_fft, endpoint=False)[1:]
    pitch = n_chroma * np.log2(freqs / (440.0 / 16.0))             # in chroma bins above A0
    pitch = np.concatenate(([pitch[0] - 1.5 * n_chroma], pitch))   # the DC bin, placed an octave and a half below
    width = np.concatenate((np.maximum(np.diff(pitch), 1.0), [1.0]))
    half = float(np.round(n_chroma / 2.0))
    distance = pitch[None, :] - np.arange(n_chroma, dtype=np.float64)[:, None]
    distance = np.remainder(distance + half + 10 * n_chroma, n_chroma) - half
    weights = np.exp(-0.5 * (2.0 * distance / width[None, :]) ** 2)
    norm = np.sqrt(np.sum(weights ** 2, axis=0, keepdims=True))
    weights = weights / np.where(norm < np.finfo(np.float64).tiny, 1.0, norm)
    weights *= np.exp(-0.5 * ((pitch / n_chroma - centre_octave) / octave_width) ** 2)[None, :]
    weights = np.roll(weights, -3 * (n_chroma // 12), axis=0)     # start the classes at C, not A
    return np.ascontiguousarray(weights[:, : n_fft // 2 + 1], dtype=np.float32)
