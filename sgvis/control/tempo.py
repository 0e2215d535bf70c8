"""Tempo: tap tempo (key T, /sgvis/tap, a MIDI note or MIDI clock) and a set BPM (/sgvis/tempo) as a beat clock
that replaces the audio beat tracker's tempo and beat phase in the features the steering sees, so drift, swells
and pulses breathe to the shared tempo.  Tempo 0 hands the beat back to the audio tracker.

    clock = TempoClock()
    clock.tap(0.0); clock.tap(0.5); clock.tap(1.0)     # 120 BPM, beat at 1.0
    features = clock.features(features, now)          # tempo, beat_phase and beat from the clock

A shared beat (Ableton Link, `--link`: sgvis.control.link) goes first: `clock.follow(source)` takes tempo and
beat from `source.tempo_and_beat()` whenever it has them, and the clock's own taps or BPM otherwise.
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
        self.source = None                # a shared beat followed first (follow())
        self._last_beat_index = None
        self._last_from_source = False

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

    def follow(self, source) -> None:
        """Take tempo and beat from `source` first: its tempo_and_beat() gives (BPM, beats on its timeline), or
        None while it has none (Ableton Link without other peers); None stops following."""
        self.source = source

    def features(self, features, now: float):
        """`features` with tempo, beat phase and beat from the followed source, else from this clock's taps or
        BPM (unchanged when neither has a tempo)."""
        shared = self.source.tempo_and_beat() if self.source is not None else None
        if shared is not None:
            bpm, beats = float(shared[0]), float(shared[1])
        elif self.bpm > 0:
            bpm, beats = self.bpm, (now - self.anchor) * self.bpm / 60.0
        else:
            return features
        if (shared is not None) != self._last_from_source:     # another timeline: its beat numbers are not ours
            self._last_beat_index = None
            self._last_from_source = shared is not None
        index = int(beats // 1)
        beat = self._last_beat_index is not None and index != self._last_beat_index
        self._last_beat_index = index
        return dataclasses.replace(features, tempo=bpm, beat_phase=beats - index, beat=beat)
