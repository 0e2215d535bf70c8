"""Settings: configs/default.yaml, then a preset (configs/<name>.yaml) or a YAML file, then `--set a.b=value`.

configs/ is installed inside the package as `sgvis.configs` (pyproject.toml), so presets work from a wheel;
run from a source tree without installing, the folder beside the package is used."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

from sgvis.errors import UserError



def _config_dir() -> Path:
    try:
        import sgvis.configs
        return Path(sgvis.configs.__file__).resolve().parent
    except ImportError:
        return Path(__file__).resolve().parent.parent / "configs"


CONFIG_DIR = _config_dir()


def read_yaml(path, what: str = "config") -> dict:
    """A YAML mapping from `path` (settings, a MIDI map, a user preset: `what` names it in messages); any
    problem is one UserError line."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise UserError(f"{path}: cannot read {what} ({e.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a YAML {what} (not text)") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a {what} must be a mapping" + (" of sections" if what == "config" else ""))
    return data


def merge(base: dict, update: dict, where: str = "", strict: bool = True) -> dict:
    """Recursively merge `update` into a copy of `base`; with `strict`, unknown keys are errors."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{where}.{key}" if where else str(key)
        if strict and key not in out:
            known = ", ".join(sorted(out)) or "none"
            raise UserError(f"unknown setting {path!r} (known here: {known})")
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, path, strict)
        elif isinstance(out.get(key), dict) and out[key]:
            example = next(iter(out[key]))
            raise UserError(f"{path!r} is a section of settings, not one value; set one of its keys, e.g. "
                            f"{path}.{example}=VALUE")
        elif isinstance(value, dict) and key in out and out[key] is not None:
            raise UserError(f"{path!r} is one setting, not a section (got {len(value)} keys under it); "
                            f"set it with {path}=VALUE")
        else:
            out[key] = value
    return out


def presets() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if p.stem != "default")


def load_config(preset: str | None = None, config_path: str | None = None, overrides=(),
                defaults: dict | None = None) -> dict:
    """`defaults` (built into the code) < configs/default.yaml < preset < config file < overrides."""
    config = copy.deepcopy(defaults or {})
    default_file = CONFIG_DIR / "default.yaml"
    if default_file.exists():
        config = merge(config, read_yaml(default_file), strict=False)
    if preset:
        path = CONFIG_DIR / f"{preset}.yaml"
        if not path.exists():
            raise UserError(f"unknown preset {preset!r}; available: {', '.join(presets()) or 'none'}")
        config = merge(config, read_yaml(path))
    if config_path:
        if not os.path.isfile(config_path):
            raise UserError(f"{config_path}: no such config file")
        config = merge(config, read_yaml(Path(config_path)))
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set expects KEY=VALUE (e.g. steer.intensity=1.5), got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        nested: dict = {}
        cursor = nested
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = value
        config = merge(config, nested)
    return config
