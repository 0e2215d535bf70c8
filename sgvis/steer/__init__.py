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

from sgvis.errors import UserError
from sgvis.registry import Registry

# name -> factory(G, cfg, seed, checkpoint=None, cache_dir=None) -> Steering
STEERINGS = Registry("steering mode", {
    "reactive": "sgvis.steer.reactive:ReactiveSteering.from_settings",
    "learned": "sgvis.steer.learned:LearnedSteering.from_settings",
})


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

    def apply_control(self, name: str, value) -> bool:
        """Apply a live control (sgvis.control.standard_controls: intensity, speed, truncation, groups.*)
        without resetting the motion; False where this mode has no such control."""
        return False


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
