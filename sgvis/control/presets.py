"""User presets: the live controls a VJ saved (key P, /sgvis/preset/save NAME), one YAML file per preset in a
folder beside the shipped presets: $SGVIS_PRESETS, else $XDG_CONFIG_HOME/sgvis/presets (~/.config/sgvis/presets).

A file holds the shipped preset its settings come from and the control values:

    # sgvis user preset
    base: energetic
    controls: {intensity: 2.5, speed: 1.0, truncation: 0.8, groups.coarse: 1.5, ...}

Recalling it (/sgvis/preset NAME, keys 1-9) loads `base`, then sets the controls, cross-faded like a shipped
preset.  A user preset never replaces a shipped one of the same name.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from sgvis.errors import UserError

# The controls a preset keeps (the rest are actions or show state: freeze, hud, reseed...).
SAVED_CONTROLS = ("intensity", "speed", "truncation", "groups.coarse", "groups.mid", "groups.fine",
                  "motion.amount", "motion.bend", "motion.camera", "look.contours", "crossfade", "tempo")


def preset_dir() -> Path:
    env = os.environ.get("SGVIS_PRESETS")
    if env:
        return Path(env)
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "sgvis" / "presets"


def user_presets(shipped: list[str] = ()) -> list[str]:
    folder = preset_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml") if p.stem not in shipped)


def next_free_name(taken: list[str]) -> str:
    n = 1
    while f"user{n}" in taken:
        n += 1
    return f"user{n}"


def save_preset(name: str, base: str | None, values: dict) -> Path:
    """Write `values` (the bus's) as user preset `name`; returns its path.  Atomic: a crash leaves the old file."""
    folder = preset_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the preset folder {folder} ({e.strerror})") from None
    data = {"base": base, "controls": {k: values[k] for k in SAVED_CONTROLS if k in values}}
    path = folder / f"{name}.yaml"
    tmp = path.with_suffix(".yaml.tmp")
    try:
        with open(tmp, "w") as f:
            f.write("# sgvis user preset (saved by sgvis live; recall with /sgvis/preset or keys 1-9)\n")
            yaml.safe_dump(data, f, sort_keys=False)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write preset {path} ({e.strerror})") from None
    return path


def load_preset(name: str) -> tuple[str | None, dict]:
    """(base preset or None, control values) of user preset `name`."""
    from sgvis.config import read_yaml
    path = preset_dir() / f"{name}.yaml"
    data = read_yaml(path, "user preset")
    if not isinstance(data.get("controls", {}), dict):
        raise UserError(f"{path}: a user preset is a mapping with 'base' and 'controls'")
    base = data.get("base")
    return (str(base) if base else None), dict(data.get("controls") or {})
