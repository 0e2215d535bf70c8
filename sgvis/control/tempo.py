"""Tempo: tap tempo (key T, /sgvis/tap, a MIDI note or MIDI clock) and a set BPM (/sgvis/tempo) as a beat clock
that replaces the audio beat tracker's tempo and beat phase in the features the steering sees, so drift, swells
and pulses breathe to the shared tempo.  Tempo 0 hands the beat back to the audio tracker.

    clock = TempoClock()
    clock.tap(0.0); clock.tap(0.5); clock.tap(1.0)     # 120 BPM, beat at 1.0
    features = clock.features(features, now)          # tempo, beat_phase and beat from the clock
"""
from __future__ import annotations

import dataclasses

MIN_BPM, MAX_BPM = 30.0, 300.0
TAP_RESET_S = 2.0          # a pause longer than this starts a new run of taps
TAPS_KEPT = 8              # the tempo is the mean interval of the last taps


class TempoClock:
    """A beat clock set by taps or a BPM; `bpm` 0 means none (the audio tracker's beat is used)."""

    def __init__(self):
        self.bpm = 0.0
        self.anchor = 0.0                 # a time (perf_counter seconds) where a beat fell
        self.taps: list[float] = []
        self._last_beat_index = None

    def tap(self, now: float) -> float:
        """One tap at `now`; returns the tempo (0 until two taps of one run)."""
        if self.taps and now - self.taps[-1] > TAP_RESET_S:
            self.taps = []
        self.taps = (self.taps + [now])[-TAPS_KEPT:]
        if len(self.taps) >= 2:
            interval = (self.taps[-1] - self.taps[0]) / (len(self.taps) - 1)
            if interval > 0:
                self.bpm = min(max(60.0 / interval, MIN_BPM), MAX_BPM)
        self.anchor = now                 # the tap is a beat: the phase follows the hand
        self._last_beat_index = None
        return self.bpm

    def set_bpm(self, bpm: float, now: float) -> None:
        """A tempo from outside (OSC /sgvis/tempo, MIDI clock); below MIN_BPM: none (follow the audio)."""
        bpm = float(bpm)
        if bpm < MIN_BPM:
            self.bpm = 0.0
            return
        if self.bpm <= 0:
            self.anchor = now
        self.bpm = min(bpm, MAX_BPM)

    def phase(self, now: float) -> float:
        beats = (now - self.anchor) * self.bpm / 60.0
        return beats - int(beats // 1)

    def features(self, features, now: float):
        """`features` with tempo, beat phase and beat from this clock (unchanged when it has no tempo)."""
        if self.bpm <= 0:
            return features
        beats = (now - self.anchor) * self.bpm / 60.0
        index = int(beats // 1)
        beat = self._last_beat_index is not None and index != self._last_beat_index
        self._last_beat_index = index
        return dataclasses.replace(features, tempo=self.bpm, beat_phase=beats - index, beat=beat)
