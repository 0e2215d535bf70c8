"""Causal audio features, computed from a rolling window so that live and offline runs give the same values.

Audio (mono float32 at `sample_rate`) is pushed in blocks of any size.  Analysis frames of `n_fft` samples
(Hann window) are taken every `hop` samples; each yields a log-mel spectrum, an onset strength, band
energies, spectral flux and centroid, and chroma.  `at(sample_pos)` summarises everything analysed up to
that sample into one `Features` for a video frame (onsets are max-pooled between video frames so none is
missed at low frame rates).  Levels are normalised by slowly decaying running peaks (automatic gain), so
any recording level steers the same way.  Filter banks (sgvis.features.filterbanks) and the whole-track onset
and beat picking (sgvis.features.rhythm) are librosa's, written in numpy: librosa's own run numba kernels whose
compilation held up the first frame.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from sgvis.features.filterbanks import chroma_filterbank, mel_filterbank, mel_frequencies
from sgvis.features.rhythm import beat_frames, onset_frames

BANDS_HZ = {"low": (20.0, 250.0), "mid": (250.0, 2000.0), "high": (2000.0, 20000.0)}
ONSET_BANDS = ("bass", "mid", "high")     # Features.band_onsets keys (bass: the "low" band)
BAND_ONSET_FLOOR_DB = 1.5
MEL_FLOOR = 1e-6                          # added to mel power before the log
SILENT_LOG_MEL = float(np.log(MEL_FLOOR))  # a log-mel row of digital silence (the mel window before any audio)


@dataclass(frozen=True)
class MelConfig:
    """Analysis parameters; the learned steering's encoder is trained on exactly these."""
    sample_rate: int = 22050
    n_fft: int = 2048
    hop: int = 512
    n_mels: int = 80
    fmin: float = 20.0
    fmax: float = 11025.0
    window_frames: int = 43          # mel frames given to the encoder (~1 s)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    def to_dict(self) -> dict:
        return dict(sample_rate=self.sample_rate, n_fft=self.n_fft, hop=self.hop, n_mels=self.n_mels,
                    fmin=self.fmin, fmax=self.fmax, window_frames=self.window_frames)


@dataclass
class Features:
    """What the steering sees for one video frame.  Scalars are normalised to about [0, 1]."""
    time: float                       # seconds since the start of the audio
    rms: float = 0.0
    low: float = 0.0
    mid: float = 0.0
    high: float = 0.0
    onset: float = 0.0                # onset strength (max since the previous video frame)
    flux: float = 0.0
    centroid: float = 0.0             # spectral centroid / Nyquist
    chroma: np.ndarray = field(default_factory=lambda: np.full(12, 1 / 12, np.float32))
    beat: bool = False                # a beat fell since the previous video frame
    beat_phase: float = 0.0           # 0 at a beat, rising to 1 just before the next
    tempo: float = 0.0                # beats per minute (0 while unknown)
    band_onsets: dict | None = None   # onset strength per band {"bass", "mid", "high"} (max since the previous
                                      #   video frame), as Features.onset but over that band's mel bins only
    onset_peak: bool = False          # a picked onset (a peak of the onset strength, librosa's peak picking)
                                      #   fell since the previous video frame: the moment a hit should land
    mel: np.ndarray | None = None     # [n_mels, window_frames] log-mel window ending now (learned steering)


class _PeakNormaliser:
    """x / running peak, where the peak decays slowly (half-life `half_life_s`) and never below `floor`."""

    def __init__(self, rate_hz: float, half_life_s: float = 8.0, floor: float = 1e-4):
        self.decay = 0.5 ** (1.0 / (rate_hz * half_life_s))
        self.peak = floor
        self.floor = floor

    def __call__(self, x: float) -> float:
        self.peak = max(x, self.peak * self.decay, self.floor)
        return float(min(x / self.peak, 1.0))


class CausalBeatTracker:
    """Tempo from the autocorrelation of the recent onset envelope; beat phase from a phase-locked
    oscillator nudged toward onsets.  Uses only past audio."""

    def __init__(self, frame_rate: float, history_s: float = 8.0, bpm_range=(70.0, 180.0)):
        self.frame_rate = frame_rate
        self.env = deque(maxlen=int(history_s * frame_rate))
        self.min_lag = int(frame_rate * 60 / bpm_range[1])
        self.max_lag = int(frame_rate * 60 / bpm_range[0])
        self.period = 0.0                 # frames per beat (0 = unknown)
        self.phase = 0.0                  # in beats
        self._since_estimate = 0

    def _estimate(self) -> None:
        env = np.asarray(self.env, np.float64)
        env = env - env.mean()
        if len(env) < 2 * self.max_lag or not np.any(env):
            return
        ac = np.correlate(env, env, mode="full")[len(env) - 1:]
        lags = np.arange(self.min_lag, self.max_lag + 1)
        # Prefer tempi near 120 BPM a little, as humans do (log-Gaussian weighting).
        bpm = 60 * self.frame_rate / lags
        weights = np.exp(-0.5 * (np.log2(bpm / 120.0) / 1.0) ** 2)
        score = ac[lags] * weights
        best = lags[int(np.argmax(score))]
        if ac[best] > 0:
            self.period = float(best)

    def step(self, onset: float) -> bool:
        """Advance one analysis frame; True when a beat falls on this frame."""
        self.env.append(onset)
        self._since_estimate += 1
        if self._since_estimate >= self.frame_rate / 2:   # re-estimate the tempo twice a second
            self._since_estimate = 0
            self._estimate()
        if self.period <= 0:
            return False
        self.phase += 1.0 / self.period
        # Pull the phase toward strong onsets near a predicted beat.
        recent = np.asarray(self.env, np.float64)
        if len(recent) > 4 and onset > recent.mean() + 2 * recent.std():
            error = self.phase - round(self.phase)
            if abs(error) < 0.25:
                self.phase -= 0.5 * error
        if self.phase >= 1.0:
            self.phase -= np.floor(self.phase)
            return True
        return False

    @property
    def tempo(self) -> float:
        return 60 * self.frame_rate / self.period if self.period > 0 else 0.0


class CausalOnsetPicker:
    """librosa's onset peak picking (onset_detect's defaults: a maximum over the last 30 ms that clears the
    mean of the last 100 ms by 0.07, at least 30 ms after the previous pick) using only past frames: librosa's
    mean also looks 100 ms ahead, and its envelope is scaled by the whole track's range, here by the running peak
    that halves in 8 s (the features stage's normalised onset strength, which `step` takes).  Live analysis picks
    its hits with this; offline renders use offline_onset_times."""

    def __init__(self, frame_rate: float, delta: float = 0.07):
        self.pre_max = max(1, int(0.03 * frame_rate))
        self.pre_avg = max(1, int(0.10 * frame_rate))
        self.wait = max(1, int(0.03 * frame_rate))
        self.delta = delta
        self.history = deque(maxlen=self.pre_avg + 1)
        self.since_pick = self.wait + 1

    def step(self, x: float) -> bool:
        """x: this analysis frame's onset strength, normalised to its running peak (0..1)."""
        self.history.append(x)
        self.since_pick += 1
        recent = list(self.history)
        if (len(recent) > self.pre_max and x >= max(recent[-self.pre_max - 1:])
                and x >= float(np.mean(recent)) + self.delta and self.since_pick > self.wait):
            self.since_pick = 0
            return True
        return False


def offline_onset_times(onset_env: np.ndarray, config: MelConfig) -> np.ndarray:
    """Whole-track onset picking (librosa.onset.onset_detect with its defaults, as AV-Align picks its audio
    peaks; sgvis.features.rhythm) on an onset envelope sampled at the analysis frame rate; seconds."""
    env = np.array(onset_env, np.float64)
    # librosa's envelope starts with lag + n_fft // (2 hop) zeros (its first windows reach before the audio); ours
    # is one frame ahead of it (below), so its first n_fft // (2 hop) frames are those zeros.  Left in, the first
    # window's rise out of the zero padding (14.5 against a track maximum of 8 on a clip cut from a song) sets the
    # normalisation and hides a third of the onsets.
    env[:config.n_fft // (2 * config.hop)] = 0.0
    if len(env) < 4 or not np.any(env):
        return np.zeros(0)
    frames = onset_frames(env, config.sample_rate, config.hop)
    # + 1: this envelope's frame k compares the windows ending at samples (k + 1) * hop and k * hop, which librosa
    # (centred frames, its envelope padded to match) reports one frame later.
    return (frames + 1) * config.hop / float(config.sample_rate)


class FeatureExtractor:
    def __init__(self, config: MelConfig = MelConfig(), beat_times: np.ndarray | None = None,
                 record_onsets: bool = False, onset_times: np.ndarray | None = None):
        """`beat_times` (seconds), when known in advance (offline, whole-track tracking), replace the causal
        beat tracker; `onset_times` (offline_onset_times) likewise replace the causal onset picker.  With
        `record_onsets`, the raw onset strength of every analysis frame is kept in `self.onsets` (for whole-track
        beat and onset picking)."""
        self.cfg = c = config
        self.window = np.hanning(c.n_fft + 1)[:-1].astype(np.float32)
        self.mel_fb = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.fmin, min(c.fmax, c.sample_rate / 2))
        self.chroma_fb = chroma_filterbank(c.sample_rate, c.n_fft)
        freqs = np.fft.rfftfreq(c.n_fft, 1.0 / c.sample_rate)
        self.freqs = freqs.astype(np.float32)
        self.band_masks = {k: (freqs >= lo) & (freqs < hi) for k, (lo, hi) in BANDS_HZ.items()}
        self.mel_band_masks = self._mel_band_masks()
        # Band onsets: the mean dB rise over a band's mel bins, over a running peak that halves in 8 s and
        # never falls below 1.5 dB (a band that is quiet does not read its noise as hits).
        self.band_peaks = {b: BAND_ONSET_FLOOR_DB for b in ONSET_BANDS}
        self.band_decay = 0.5 ** (1.0 / (c.frame_rate * 8.0))
        self._band_since = {b: 0.0 for b in ONSET_BANDS}
        self.buffer = np.zeros(c.n_fft, np.float32)     # the last n_fft samples (zeros before the start)
        self.pending = np.zeros(0, np.float32)
        self.samples_seen = 0
        self.frames_done = 0
        self.mel_history = deque([np.full(c.n_mels, SILENT_LOG_MEL, np.float32)] * c.window_frames,
                                 maxlen=c.window_frames)
        self.prev_db = None
        self.prev_mag = None
        rate = c.frame_rate
        self.norm = {k: _PeakNormaliser(rate) for k in ("rms", "low", "mid", "high", "onset", "flux")}
        self.beats = CausalBeatTracker(rate)
        self.beat_times = None if beat_times is None else np.sort(np.asarray(beat_times, np.float64))
        self.onsets: list[float] | None = [] if record_onsets else None
        self.onset_times = None if onset_times is None else np.sort(np.asarray(onset_times, np.float64))
        self.picker = CausalOnsetPicker(c.frame_rate)
        self._peak_since = False
        self._prev_at = None
        self._recent_onsets = deque(maxlen=4)        # normalised onset strengths of the last 4 analysis frames
        self._recent_bands = {b: deque(maxlen=4) for b in ONSET_BANDS}      # and per band
        self.last = Features(time=0.0)
        self._onset_since = 0.0
        self._beat_since = False
        self._last_step_time = -1.0

    def _mel_band_masks(self) -> dict:
        c = self.cfg
        f = mel_frequencies(c.n_mels + 2, c.fmin, min(c.fmax, c.sample_rate / 2))[1:-1]
        masks = {}
        for band, key in zip(ONSET_BANDS, ("low", "mid", "high")):
            lo, hi = BANDS_HZ[key]
            m = (f >= lo) & (f < hi)
            if not m.any():                          # tiny mel configs: the nearest bin
                m[int(np.argmin(np.abs(f - (lo * hi) ** 0.5)))] = True
            masks[band] = m
        return masks

    # -- streaming -------------------------------------------------------------------------------
    def push(self, samples: np.ndarray) -> None:
        """Add mono samples and analyse every complete hop."""
        samples = np.nan_to_num(np.asarray(samples, np.float32).reshape(-1), nan=0.0, posinf=1.0, neginf=-1.0)
        self.pending = np.concatenate([self.pending, samples])
        hop = self.cfg.hop
        while len(self.pending) >= hop:
            chunk, self.pending = self.pending[:hop], self.pending[hop:]
            self.buffer = np.concatenate([self.buffer[hop:], chunk])
            self.samples_seen += hop
            self._analyse_frame()

    def _analyse_frame(self) -> None:
        c = self.cfg
        x = self.buffer - self.buffer.mean()               # remove DC so offsets do not read as bass
        spec = np.fft.rfft(x * self.window)
        power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32) / (self.window ** 2).sum()
        mag = np.sqrt(power)
        mel = self.mel_fb @ power
        log_mel = np.log(mel + MEL_FLOOR).astype(np.float32)
        self.mel_history.append(log_mel)
        db = 10 * np.log10(mel + 1e-10)
        rise = None if self.prev_db is None else np.maximum(db - self.prev_db, 0)
        onset = 0.0 if rise is None else float(rise.mean())
        for b, m in self.mel_band_masks.items():
            x = 0.0 if rise is None else float(rise[m].mean())
            self.band_peaks[b] = max(x, self.band_peaks[b] * self.band_decay, BAND_ONSET_FLOOR_DB)
            level = min(x / self.band_peaks[b], 1.0)
            self._band_since[b] = max(self._band_since[b], level)
            self._recent_bands[b].append(level)
        flux = 0.0 if self.prev_mag is None else float(np.maximum(mag - self.prev_mag, 0).sum() / (mag.sum() + 1e-8))
        self.prev_db, self.prev_mag = db, mag
        if self.onsets is not None:
            self.onsets.append(onset)
        total = float(power.sum())
        bands = {k: float(np.sqrt(power[m].sum() / c.n_fft * 2)) for k, m in self.band_masks.items()}
        rms = float(np.sqrt(np.mean(x ** 2)))
        centroid = float((self.freqs * power).sum() / (total + 1e-12)) / (c.sample_rate / 2) if total > 1e-12 else 0.0
        chroma = self.chroma_fb @ power
        chroma = chroma / chroma.sum() if chroma.sum() > 1e-12 else np.full(12, 1 / 12, np.float32)
        t = self.samples_seen / c.sample_rate
        if self.beat_times is None:
            beat = self.beats.step(onset)
            phase, tempo = float(self.beats.phase % 1.0), self.beats.tempo
        else:
            beat, phase, tempo = self._known_beat(t)
        n = self.norm
        normalised = n["onset"](onset)
        self._onset_since = max(self._onset_since, normalised)
        self._recent_onsets.append(normalised)
        self._beat_since = self._beat_since or beat
        if self.onset_times is None:
            self._peak_since = self.picker.step(normalised) or self._peak_since
        self.last = Features(time=t, rms=n["rms"](rms), low=n["low"](bands["low"]), mid=n["mid"](bands["mid"]),
                             high=n["high"](bands["high"]), onset=self._onset_since, flux=n["flux"](flux),
                             centroid=min(centroid, 1.0), chroma=chroma.astype(np.float32), beat=self._beat_since,
                             beat_phase=phase, tempo=tempo)
        self.frames_done += 1

    def _onset_peak_until(self, time_s: float) -> bool:
        """Whether a picked onset fell since the previous video frame: with known onset times, one in
        (previous frame's time, time_s]; otherwise what the causal picker found since then."""
        if self.onset_times is None:
            peak, self._peak_since = self._peak_since, False
            return peak
        prev, self._prev_at = self._prev_at, time_s
        lo = -np.inf if prev is None else prev
        i = np.searchsorted(self.onset_times, lo, side="right")
        return bool(i < len(self.onset_times) and self.onset_times[i] <= time_s)

    def _known_beat(self, t: float):
        bt = self.beat_times
        hop_s = self.cfg.hop / self.cfg.sample_rate
        i = int(np.searchsorted(bt, t, side="right"))     # beats at or before t
        beat = i > 0 and bt[i - 1] > t - hop_s
        if 0 < i < len(bt):
            period = bt[i] - bt[i - 1]
            return beat, float((t - bt[i - 1]) / period), 60.0 / period
        return beat, 0.0, 0.0

    # -- per video frame -------------------------------------------------------------------------
    def at(self, time_s: float) -> Features:
        """Features for a video frame at `time_s` (audio up to that time must have been pushed)."""
        f = self.last
        peak = self._onset_peak_until(time_s)
        onset = self._onset_since
        bands = dict(self._band_since)
        if peak:
            bands = {b: max(v, max(self._recent_bands[b], default=0.0)) for b, v in bands.items()}
            # The picked onset's own strength: the analysis runs ahead of the frame, so the frame before may have
            # taken it as its "since" maximum; the last 4 analysis frames (93 ms) still hold it.
            onset = max(onset, max(self._recent_onsets, default=0.0))
        out = Features(time=time_s, rms=f.rms, low=f.low, mid=f.mid, high=f.high, onset=onset,
                       flux=f.flux, centroid=f.centroid, chroma=f.chroma, beat=self._beat_since,
                       beat_phase=f.beat_phase, tempo=f.tempo, band_onsets=bands,
                       mel=np.stack(self.mel_history, axis=1), onset_peak=peak)
        self._band_since = {b: 0.0 for b in ONSET_BANDS}
        self._onset_since = 0.0
        self._beat_since = False
        return out


def frame_features(extractor: FeatureExtractor, blocks, n_frames: int, fps: float, lookahead: float = 0.0):
    """Yield the Features of video frames 0..n_frames-1 at `fps` from mono audio `blocks` (arrays [n] or [1, n],
    e.g. audio_in.decode_blocks(..., "mono")).  Audio is pushed exactly up to each frame's time plus
    `lookahead` seconds, so the analysis never runs further ahead; past the end of the audio it analyses silence.
    Render and the steering trainers share this, so a trained model sees the features it will be driven by."""
    sr = extractor.cfg.sample_rate
    blocks = iter(blocks)
    pushed = 0
    leftover = np.zeros(0, np.float32)
    for k in range(n_frames):
        need = int(round((k / fps + lookahead) * sr)) + 1
        while pushed < need:
            if not len(leftover):
                block = next(blocks, None)
                if block is None:
                    break
                leftover = np.asarray(block, np.float32).reshape(-1)
            take = min(len(leftover), need - pushed)
            extractor.push(leftover[:take])
            leftover = leftover[take:]
            pushed += take
        if pushed < need:
            extractor.push(np.zeros(need - pushed, np.float32))
            pushed = need
        yield extractor.at(k / fps)


def offline_beat_times(onset_env: np.ndarray, config: MelConfig) -> np.ndarray:
    """Whole-track beat tracking (librosa.beat.beat_track's tracker; sgvis.features.rhythm) on an onset envelope
    sampled at the analysis frame rate; seconds."""
    if len(onset_env) < 4 or not np.any(onset_env):
        return np.zeros(0)
    frames = beat_frames(np.asarray(onset_env, np.float64), config.sample_rate, config.hop)
    return frames * config.hop / float(config.sample_rate)


class OfflineBeatTracker:
    """Whole-track beat tracking in bounded memory: librosa's tracker runs on overlapping windows of the onset
    envelope (`window_s` long, each starting `window_s - overlap_s` after the previous one), and each window
    contributes the beats up to the middle of its overlap with the next, far from the window edges where the
    tracker knows least.  A track no longer than one window is tracked in one piece, exactly as
    offline_beat_times does; librosa's tempogram over a whole hour-long envelope alone took ~0.5 GB.

        tracker = OfflineBeatTracker(mel)
        tracker.push(onsets)          # onset strengths of consecutive analysis frames, any number at a time
        beat_times = tracker.finish()
    """

    def __init__(self, config: MelConfig = MelConfig(), window_s: float = 60.0, overlap_s: float = 10.0):
        if not 0 < overlap_s < window_s:
            raise ValueError("overlap_s must be between 0 and window_s")
        self.cfg = config
        self.window = int(round(window_s * config.frame_rate))
        self.overlap = int(round(overlap_s * config.frame_rate))
        self._env = np.zeros(0, np.float32)     # onset strengths from frame self._offset on
        self._offset = 0                        # analysis frame index of self._env[0]
        self._keep_from = 0.0                   # seconds: beats before this came from earlier windows
        self._beats: list[np.ndarray] = []

    def push(self, onsets) -> None:
        values = np.asarray(onsets, np.float32).reshape(-1)
        if not len(values):
            return
        self._env = np.concatenate([self._env, values])
        while len(self._env) >= self.window + self.overlap:
            # Only once the next window's start is known to have more after it: the last window is finish()'s.
            self._track(self._env[:self.window], last=False)
            step = self.window - self.overlap
            self._env = self._env[step:]
            self._offset += step

    def finish(self) -> np.ndarray:
        if len(self._env):
            self._track(self._env, last=True)
            self._env = np.zeros(0, np.float32)
        return np.concatenate(self._beats) if self._beats else np.zeros(0)

    def _track(self, env: np.ndarray, last: bool) -> None:
        frame_s = 1.0 / self.cfg.frame_rate
        times = offline_beat_times(env, self.cfg) + self._offset * frame_s
        seam = np.inf if last else (self._offset + len(env) - self.overlap / 2) * frame_s
        times = times[(times >= self._keep_from) & (times < seam)]
        previous = self._beats[-1] if self._beats and len(self._beats[-1]) else None
        if previous is not None and len(times):
            # Two windows may put the beat next to the seam at slightly different places: drop a beat that comes
            # less than half a beat period after the last one kept.
            period = float(np.median(np.diff(previous))) if len(previous) > 1 else 0.0
            while len(times) and times[0] - previous[-1] < 0.5 * period:
                times = times[1:]
        self._beats.append(times)
        self._keep_from = seam
