"""Silence, as every steering mode sees it: how much sound a frame's Features carry, as a gate from 0 (silence)
to 1 (sound), so that a picture holds still while nothing plays.

The level is the largest of Features.rms / low / mid / high (each 0..1 of its recent peak); it rises at once and
falls over RELEASE_S, so the short gaps between notes do not read as silence. The gate is that level over
SILENCE_LEVEL, capped at 1, and 0 below STILL_GATE.
"""
from __future__ import annotations

import math

from sgvis.steer import finite

# Level below which a frame is (partly) silence: the gate is level / SILENCE_LEVEL there.
SILENCE_LEVEL = 0.03
RELEASE_S = 0.1
STILL_GATE = 0.01           # a gate below this is 0: silence holds exactly still


def sound_level(features) -> float:
    """The largest band level of one Features, 0..1 (non-finite or missing levels count as 0)."""
    return min(max(0.0, *(finite(getattr(features, name, None)) for name in ("rms", "low", "mid", "high"))), 1.0)


class SilenceGate:
    """Per frame: 1 while there is sound, falling to 0 over RELEASE_S once it stops."""

    def __init__(self, release_s: float = RELEASE_S, level: float = SILENCE_LEVEL):
        self.release_s, self.level = float(release_s), float(level)
        self.value = 0.0

    def reset(self) -> None:
        self.value = 0.0

    def __call__(self, features, dt: float) -> float:
        x = sound_level(features)
        if x >= self.value or self.release_s <= 0:
            self.value = x
        else:
            self.value += (1.0 - math.exp(-dt / self.release_s)) * (x - self.value)
        if self.level <= 0:
            return 1.0
        gate = min(self.value / self.level, 1.0)
        return gate if gate >= STILL_GATE else 0.0         # a spent release stops exactly (no endless creep)
