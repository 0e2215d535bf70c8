"""Control: the live parameters of a show as named, typed, range-checked controls on one thread-safe bus.

Producers (keys, and later OSC, MIDI, tempo) send values or triggers from any thread; the show drains the
bus once per frame, between two steering steps, so nothing changes under a running step:

    bus = ControlBus(standard_controls(presets=["calm", "energetic"]))
    bus.send("intensity", 1.5, source="osc")      # True: accepted (clamped into range)
    bus.send("intensity", "loud", source="osc")   # False: rejected, counted per source
    for event in bus.drain():                      # the show, once per frame
        ...

A producer is anything with `start(bus)` and `stop()`; `PRODUCERS` names them (`--control NAME` on live).
"""
from __future__ import annotations

import math
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from sgvis.registry import Registry

KINDS = ("float", "int", "bool", "choice", "trigger")


class ControlError(ValueError):
    """A value a control does not take (one line: what, and what it takes)."""


@dataclass
class Control:
    """One live parameter: `kind` float | int | bool | choice | trigger, with its range or choices."""
    name: str
    kind: str
    default: Any = None
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""
    pattern: str = ""          # choice without choices: a name must match this (regular expression)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"control {self.name}: kind must be one of {KINDS}, got {self.kind!r}")

    def describe(self) -> str:
        if self.kind in ("float", "int"):
            return f"{self.kind} in [{self.lo:g}, {self.hi:g}]"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices) if self.choices else "a name"
        return self.kind

    def coerce(self, value: Any) -> Any:
        """The value in this control's type, clamped into its range; ControlError when it cannot be one."""
        if self.kind == "trigger":
            return None
        if self.kind == "bool":
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "on", "yes"):
                    return True
                if low in ("0", "false", "off", "no"):
                    return False
                raise ControlError(f"{self.name} takes a bool (0/1, on/off), got {value!r}")
            if isinstance(value, (bool, int, float)) and math.isfinite(float(value)):
                return bool(value)
            raise ControlError(f"{self.name} takes a bool (0/1, on/off), got {value!r}")
        if self.kind == "choice":
            text = str(value)
            if self.choices and text not in self.choices:
                raise ControlError(f"{self.name} takes one of {', '.join(self.choices)}, got {value!r}")
            if self.pattern and not re.fullmatch(self.pattern, text):
                raise ControlError(f"{self.name} takes a name of letters, digits, '-' and '_', got {value!r}")
            return text
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ControlError(f"{self.name} takes a number ({self.describe()}), got {value!r}") from None
        if isinstance(value, bool) or not math.isfinite(number):
            raise ControlError(f"{self.name} takes a number ({self.describe()}), got {value!r}")
        number = min(max(number, self.lo), self.hi)
        return int(round(number)) if self.kind == "int" else number


@dataclass
class ControlEvent:
    name: str
    value: Any
    source: str


@dataclass
class SourceCounts:
    received: int = 0
    rejected: int = 0
    last_error: str = ""


class ControlBus:
    """Thread-safe holder of the current control values and the queue of changes for the show."""

    def __init__(self, controls: list[Control]):
        self.controls = {c.name: c for c in controls}
        self._values = {c.name: c.default for c in controls if c.kind != "trigger"}
        self._events: deque[ControlEvent] = deque()
        self._lock = threading.Lock()
        self.counts: dict[str, SourceCounts] = {}

    def names(self) -> list[str]:
        return list(self.controls)

    def get(self, name: str) -> Any:
        with self._lock:
            return self._values[name]

    def values(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._values)

    def send(self, name: str, value: Any = None, source: str = "api") -> bool:
        """Set a control (or fire a trigger).  False, counted as rejected for `source`, when the name or the
        value is wrong; the reason is in counts[source].last_error."""
        return self._apply(name, source, lambda control, current: control.coerce(value))

    def scale(self, name: str, factor: float, source: str = "api") -> bool:
        """Multiply a numeric control by `factor` atomically (keys: intensity up/down)."""
        return self._apply(name, source, lambda control, current: control.coerce(float(current) * factor))

    def toggle(self, name: str, source: str = "api") -> bool:
        """Flip a bool control atomically (keys: freeze)."""
        return self._apply(name, source, lambda control, current: not bool(current))

    def _apply(self, name, source, compute) -> bool:
        with self._lock:
            counts = self.counts.setdefault(source, SourceCounts())
            counts.received += 1
            control = self.controls.get(name)
            try:
                if control is None:
                    raise ControlError(f"unknown control {name!r}")
                value = compute(control, self._values.get(name))
            except ControlError as e:
                counts.rejected += 1
                counts.last_error = str(e)
                return False
            if control.kind != "trigger":
                self._values[name] = value
            self._events.append(ControlEvent(name, value, source))
            return True

    def set_quietly(self, name: str, value: Any, source: str | None = None) -> bool:
        """Set a control's value without queuing an event (the show applies it itself: a preset's settings);
        counted for `source` when one is given.  False when the value does not fit."""
        control = self.controls[name]
        try:
            value = control.coerce(value)
        except ControlError:
            return False
        with self._lock:
            if source is not None:
                self.counts.setdefault(source, SourceCounts()).received += 1
            if control.kind != "trigger":
                self._values[name] = value
        return True

    def reject(self, source: str, reason: str) -> None:
        """Count a message from `source` that never became a control value (unreadable, wrong address)."""
        with self._lock:
            counts = self.counts.setdefault(source, SourceCounts())
            counts.received += 1
            counts.rejected += 1
            counts.last_error = reason

    def add_choice(self, name: str, choice: str) -> None:
        """Let a choice control take one more value (a preset saved during the show)."""
        with self._lock:
            control = self.controls[name]
            if choice not in control.choices:
                control.choices = control.choices + (choice,)

    def drain(self) -> list[ControlEvent]:
        """The changes since the last drain, oldest first (the show calls this once per frame)."""
        with self._lock:
            events = list(self._events)
            self._events.clear()
        return events

    def report(self) -> dict:
        """For --stats: messages per source and the final value of every control."""
        with self._lock:
            return {"sources": {s: {"received": c.received, "rejected": c.rejected,
                                    **({"last_error": c.last_error} if c.last_error else {})}
                                for s, c in self.counts.items()},
                    "values": dict(self._values)}


def standard_controls(presets: list[str] = (), intensity: float = 1.0, truncation: float = 1.0,
                      crossfade_s: float = 1.0, hud: bool = False, look_contours: float = 0.0) -> list[Control]:
    """The controls every show has (steering modes read the ones they support; see Steering.apply_control)."""
    return [
        Control("intensity", "float", intensity, 0.0, 8.0, help="scales all audio-driven motion"),
        Control("speed", "float", 1.0, 0.0, 8.0, help="speed of the slow motions (drift, swells, chroma)"),
        Control("truncation", "float", truncation, 0.0, 2.0, help="pull toward the average image (1 = none)"),
        Control("groups.coarse", "float", 1.0, 0.0, 4.0, help="amount of motion in the coarse layers (layout)"),
        Control("groups.mid", "float", 1.0, 0.0, 4.0, help="amount of motion in the middle layers (shapes)"),
        Control("groups.fine", "float", 1.0, 0.0, 4.0, help="amount of motion in the fine layers (colour)"),
        Control("motion.amount", "float", 1.0, 0.0, 4.0, help="scales all spatial motion (bend and camera)"),
        Control("motion.bend", "float", 1.0, 0.0, 4.0, help="layout moves on hits (0 = off)"),
        Control("motion.camera", "float", 1.0, 0.0, 4.0, help="camera push on hits and pan between (0 = off)"),
        Control("look.contours", "float", look_contours, 0.0, 1.0,
                help="isolines over the picture, so motion in soft colour fields shows (0 = off)"),
        Control("preset", "choice", None, choices=tuple(presets), help="settings preset, cross-faded"),
        Control("preset.save", "choice", "", pattern=r"[A-Za-z0-9_-]{0,64}",
                help="save the current controls as a user preset of this name (empty: the next free userN)"),
        Control("crossfade", "float", crossfade_s, 0.0, 30.0, help="seconds a preset change or reseed blends"),
        Control("freeze", "bool", False, help="hold the current picture"),
        Control("reseed", "trigger", help="move to a new seed (cross-faded)"),
        Control("tap", "trigger", help="tap tempo: taps set the beat the slow motions breathe to"),
        Control("tempo", "float", 0.0, 0.0, 300.0, help="beats per minute (0: follow the audio's beat tracker)"),
        Control("screenshot", "trigger", help="save the current frame as PNG"),
        Control("hud", "bool", bool(hud), help="show the heads-up display"),
        Control("fullscreen", "trigger", help="toggle fullscreen (window only)"),
        Control("quit", "trigger", help="end the show"),
    ]


@runtime_checkable
class ControlProducer(Protocol):
    """Sends control events to a bus from its own thread or callback (keys, OSC, MIDI, tempo...)."""

    def start(self, bus: ControlBus) -> None: ...

    def stop(self) -> None: ...


# Producers by name, for `sgvis live --control NAME` (keys are always on in a window).
PRODUCERS = Registry("control producer", {
    "osc": "sgvis.control.osc:OscControls",       # --osc-port / --osc-out
    "midi": "sgvis.control.midi:MidiControls",    # --midi / --midi-map
    "link": "sgvis.control.link:LinkTempo",       # --link: Ableton Link tempo and beat (aalink)
})
