"""Keys: the live window's keyboard as a producer of control events.

Key names are backend-neutral ("SPACE", "R", "UP", "1"); the window turns its own key codes into them.
"""
from __future__ import annotations

from sgvis.control import ControlBus

INTENSITY_STEP = 1.25

# key -> (operation, control[, argument]); preset keys 1-9 pick the n-th preset of the bus's preset control.
KEY_MAP = {
    "SPACE": ("toggle", "freeze"),
    "R": ("send", "reseed"),
    "UP": ("scale", "intensity", INTENSITY_STEP),
    "RIGHT": ("scale", "intensity", INTENSITY_STEP),
    "DOWN": ("scale", "intensity", 1 / INTENSITY_STEP),
    "LEFT": ("scale", "intensity", 1 / INTENSITY_STEP),
    "S": ("send", "screenshot"),
    "T": ("send", "tap"),
    "P": ("set", "preset.save", ""),       # save the current controls as the next free user preset (userN)
    "H": ("toggle", "hud"),
    "F": ("send", "fullscreen"),
    "ESCAPE": ("send", "quit"),
    "Q": ("send", "quit"),
    **{str(i): ("preset", "preset", i - 1) for i in range(1, 10)},
}


class KeyControls:
    """Turns key names into bus events (source "keys").  `press` returns whether the key meant anything."""

    source = "keys"

    def __init__(self, key_map: dict | None = None):
        self.key_map = dict(KEY_MAP if key_map is None else key_map)
        self.bus: ControlBus | None = None

    def start(self, bus: ControlBus) -> None:
        self.bus = bus

    def stop(self) -> None:
        self.bus = None

    def press(self, key: str) -> bool:
        entry = self.key_map.get(key.upper())
        if entry is None or self.bus is None:
            return False
        op, name, *arg = entry
        if op == "toggle":
            return self.bus.toggle(name, self.source)
        if op == "scale":
            return self.bus.scale(name, arg[0], self.source)
        if op == "set":
            return self.bus.send(name, arg[0], self.source)
        if op == "preset":
            choices = self.bus.controls[name].choices
            return arg[0] < len(choices) and self.bus.send(name, choices[arg[0]], self.source)
        return self.bus.send(name, None, self.source)
