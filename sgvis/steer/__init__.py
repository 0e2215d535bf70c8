"""Steering: audio Features in, the backend's latent state out, one video frame at a time.

    steering = make_steering(backend, settings["steer"], seed=7)   # the mode named by steer.mode
    for features in frames:                                        # sgvis.features.analysis.Features
        state = steering.step(features)                            # StyleGAN: W+ [num_ws, w_dim]
    frames = backend.frames(torch.stack(states))

Modes are registered by name in STEERINGS ("reactive": no training, any StyleGAN; "learned": the paper's sound
inversion encoder + recurrent blocks, from a checkpoint).  A mode is a Steering subclass with a factory
`(G, cfg, seed, checkpoint=None, cache_dir=None)`; adding one is a new module plus one registry line.
"""
from __future__ import annotations

import math

from sgvis.errors import UserError
from sgvis.registry import Registry

# name -> factory(G, cfg, seed, checkpoint=None, cache_dir=None) -> Steering
STEERINGS = Registry("steering mode", {
    "reactive": "sgvis.steer.reactive:ReactiveSteering.from_settings",
    "learned": "sgvis.steer.learned:LearnedSteering.from_settings",
})


def finite(x, default: float = 0.0) -> float:
    """x as a float, or `default` where it is missing, not a number, NaN or infinite (a Features field that a
    feature source left out or could not compute)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return default
    return x if math.isfinite(x) else default


class Steering:
    """Maps one `Features` per video frame to the backend's latent state (StyleGAN: W+ [num_ws, w_dim],
    float32 on the generator's device).  The same seed and the same features give the same states."""

    name = "steering"
    mel_config = None          # the MelConfig features must be computed with (None: any)
    needs_checkpoint = False   # whether the mode is built from a trained file (steer.mode auto picks it then)

    def reset(self, seed: int) -> None:
        raise NotImplementedError

    def step(self, features):
        raise NotImplementedError

    def steps(self, features: list) -> list:
        """step() for consecutive frames, in order (an offline render hands over a batch at a time): the same
        states; a mode may batch the work that does not depend on the previous frame."""
        return [self.step(f) for f in features]

    def apply_control(self, name: str, value) -> bool:
        """Apply a live control (sgvis.control.standard_controls: intensity, speed, truncation, groups.*)
        without resetting the motion; False where this mode has no such control."""
        return False

    def motion_style(self) -> dict:
        """How the motion stage should move beside this steering: keyword arguments of
        sgvis.steer.motion.MotionDriver.step (scale, release_share); {} leaves the motion: settings as they are."""
        return {}


def motion_style_of(steering) -> dict:
    """steering.motion_style(), or {} for a steering that does not subclass Steering."""
    style = getattr(steering, "motion_style", None)
    return dict(style()) if callable(style) else {}


def resolve_mode(mode: str, checkpoint: str | None) -> str:
    """steer.mode as a registered mode name: auto is learned with a checkpoint, else reactive."""
    if mode == "auto":
        return "learned" if checkpoint else "reactive"
    if mode not in STEERINGS:
        raise UserError(f"steer.mode must be auto or one of {', '.join(STEERINGS.names())}; got {mode!r}")
    return mode


def make_steering(target, cfg: dict | None, seed: int, learned_path: str | None = None,
                  cache_dir: str | None = None) -> Steering:
    """The steering that `cfg` (the steer: section) names, for `target`: a backend with a W+ latent model, or a
    StyleGAN generator itself.  `learned_path` is the checkpoint of a trained mode."""
    from sgvis.steer.reactive import resolve_config
    c = resolve_config(cfg)
    G = getattr(target, "latent_model", target)
    if G is None:
        raise UserError(f"steering needs a backend with a W+ latent space; backend "
                        f"{getattr(target, 'name', '?')!r} has none")
    mode = resolve_mode(c["mode"], learned_path)
    factory = STEERINGS.get(mode)
    return factory(G, c, seed, checkpoint=learned_path, cache_dir=cache_dir)


def choose_steering(flag: str | None, checkpoint: str | None, settings: dict, model: str | None) \
        -> tuple[str, str | None]:
    """The one steering switch of render, live and demo: `--steer` if given, else the settings' steer.mode;
    auto means learned with a --steering checkpoint, else reactive.  Returns (mode, checkpoint path or None);
    a --steering file with a mode that does not use it is one UserError, never silently ignored."""
    if flag and flag != "auto" and flag not in STEERINGS:
        raise UserError(f"--steer must be auto or one of {', '.join(STEERINGS.names())}; got {flag!r}")
    mode = flag or settings.get("steer", {}).get("mode", "auto")
    mode = resolve_mode(mode, checkpoint)
    factory = STEERINGS.get(mode)
    needs_checkpoint = getattr(getattr(factory, "__self__", None), "needs_checkpoint", False)
    if needs_checkpoint:
        from sgvis.steer.learned import steering_checkpoint_for
        checkpoint = steering_checkpoint_for(None if model == "default" else model, checkpoint)
    elif checkpoint:
        raise UserError(f"--steering {checkpoint} is a learned-steering checkpoint, but the steering mode is "
                        f"{mode}; drop --steering, or use --steer learned")
    settings.setdefault("steer", {})["mode"] = mode
    return mode, checkpoint


class Crossfade(Steering):
    """Blends from one steering to another over `seconds` of feature time (a live preset change or reseed),
    stepping both meanwhile, so the motion carries on instead of jumping or restarting.  `done` tells the show
    when it can keep `target` alone."""

    name = "crossfade"

    def __init__(self, source: Steering, target: Steering, seconds: float):
        self.source, self.target = source, target
        self.seconds = max(float(seconds), 0.0)
        self.mel_config = target.mel_config
        self._start = None
        self.mix = 0.0 if self.seconds > 0 else 1.0

    @property
    def done(self) -> bool:
        return self.mix >= 1.0

    def reset(self, seed: int) -> None:
        self.target.reset(seed)
        self.mix = 1.0

    def step(self, features):
        if self._start is None:
            self._start = features.time
        if self.seconds > 0:
            t = min(max((features.time - self._start) / self.seconds, 0.0), 1.0)
            self.mix = t * t * (3 - 2 * t)            # smoothstep: no kink at either end
        new = self.target.step(features)
        if self.mix >= 1.0:
            self.mix = 1.0
            return new
        old = self.source.step(features)
        return old + (new - old) * self.mix

    def motion_style(self) -> dict:
        return self.target.motion_style()

    def apply_control(self, name: str, value) -> bool:
        applied = self.target.apply_control(name, value)
        self.source.apply_control(name, value)
        return applied
