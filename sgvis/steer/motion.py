"""Motion: spatial moves driven by the music, that optical flow (and the eye) reads as motion.

Latent steering changes *what* is in the picture; on real music that mostly reads as colour and texture
changing in place.  This stage moves *where* things are, with two sources, each a live control:

* bend (``motion.bend``): a transform of the generator's feature maps after the block of resolution
  ``bend.resolution`` ("network bending"): the layout built so far shifts, turns and zooms, and the finer
  layers render detail at the new place, so structure travels while texture stays sharp.  It needs a backend
  that can transform its layers (the fast StyleGAN2 path); elsewhere it is added to the camera.
* camera (``motion.camera``): the same kind of transform of the whole picture: a push on the hit, and a slow
  pan and roll between hits while the music plays.

Each hit (an onset above ``hit.threshold``, stronger on the beat) gives the bend a velocity in a new direction
(the golden angle on from the last) and the camera a push in; both ease out over ``release_s`` and drift back
to rest (``return_s``).  So the motion peaks on the hit and flows between hits.  Between hits the camera pans
and rolls at a speed that follows the loudness, which falls to nothing in silence: quiet passages are calm.

    motion = MotionDriver(settings.get("motion"), seed)
    params = motion.step(features)      # {"bend": [4], "camera": [4]}: sgvis.backends.warp transforms
"""
from __future__ import annotations

import math

import numpy as np

from sgvis.errors import UserError
from sgvis.steer import finite

GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
REF_FPS = 30.0
HIT_GAP_MAX_S = 2.0      # a longer pause between hits counts as this long in the running mean of the gaps
HIT_GAP_WEIGHT = 0.3     # weight of the newest gap in that running mean

# The `motion:` section of configs/default.yaml, key for key.
DEFAULTS = {
    "amount": 1.0,                 # scales every move below (live control motion.amount); 0 = still picture
    "hit": {"picked": 1.0, "threshold": 0.1, "adapt_s": 3.0, "sensitivity": 1.0, "gamma": 0.7, "beat_accent": 1.5,
            "release_s": 0.15, "min_interval_s": 0.1, "release_share": 0.0, "release_max_s": 0.4},
    "bend": {"amount": 1.0, "resolution": 16, "travel": 0.15, "turn_deg": 6.0, "zoom": 0.06, "return_s": 1.6,
             "limit": 0.45},
    "camera": {"amount": 1.0, "push": 0.035, "return_s": 1.2, "pan": 0.05, "roll_deg": 1.5, "cycle_s": 11.0,
               "loudness_s": 0.6},
}


def resolve_motion(cfg: dict | None) -> dict:
    """The motion: section merged over DEFAULTS; an unknown key or a value that is not a number >= 0 is one
    UserError naming the key."""
    from sgvis.config import merge
    out = merge(DEFAULTS, cfg or {}, "motion")

    def check(section: dict, defaults: dict, path: str) -> None:
        for k, v in section.items():
            if isinstance(defaults[k], dict):
                if not isinstance(v, dict):
                    raise UserError(f"{path}.{k} is a section ({', '.join(defaults[k])}), got {v!r}")
                check(v, defaults[k], f"{path}.{k}")
                continue
            try:
                section[k] = float(v)
            except (TypeError, ValueError):
                raise UserError(f"{path}.{k} must be a number, got {v!r}") from None
            if not math.isfinite(section[k]) or section[k] < 0:
                raise UserError(f"{path}.{k} must be a finite number >= 0, got {v!r}")
    check(out, DEFAULTS, "motion")
    return out



class MotionDriver:
    """Features per video frame -> bend and camera transforms (zoom, rotation, pan x, pan y) per frame.
    Deterministic for a seed and a feature sequence."""

    def __init__(self, cfg: dict | None = None, seed: int = 0):
        self.cfg = resolve_motion(cfg)
        self.amount = float(self.cfg["amount"])
        self.bend_amount = float(self.cfg["bend"]["amount"])
        self.camera_amount = float(self.cfg["camera"]["amount"])
        self.reset(seed)

    def reset(self, seed: int) -> None:
        rng = np.random.default_rng(int(seed) + 7919)
        self.angle = float(rng.uniform(0, 2 * math.pi))     # direction of the next bend kick
        self.spin = 1.0 if rng.random() < 0.5 else -1.0     # sign of the next turn
        self.bend = np.zeros(4)                             # zoom, rotation, pan x, pan y
        self.bend_velocity = np.zeros(4)
        self.push = 0.0
        self.push_velocity = 0.0
        self.cycle = float(rng.uniform(0, 1))               # phase of the camera's slow pan / roll loop
        self.loudness = 0.0
        self.prev_time = None
        self.last_hit = -1e9
        self.hit_gap = None         # running mean of the time between hits (s), for hit.release_share
        self.hits = 0
        self.onset_mean = 0.0
        self.onset_var = 0.0

    def apply_control(self, name: str, value) -> bool:
        if name == "motion.amount":
            self.amount = max(float(value), 0.0)
        elif name == "motion.bend":
            self.bend_amount = max(float(value), 0.0)
        elif name == "motion.camera":
            self.camera_amount = max(float(value), 0.0)
        else:
            return False
        return True

    def _hit_strength(self, f, t: float, dt: float) -> float:
        """An onset is a hit when it stands out of the recent onset level (adaptive: a dense mix's constant
        onset activity is not a stream of hits) and of the fixed floor `threshold`."""
        c = self.cfg["hit"]
        onset = min(max(finite(f.onset), 0.0), 1.0)
        if c["picked"]:
            # The features stage picked the onsets (Features.onset_peak): a hit lands on each, exactly on its frame.
            level = c["threshold"]
            if not getattr(f, "onset_peak", False):
                onset = 0.0
        else:
            k = 1.0 - math.exp(-dt / max(c["adapt_s"], 1e-3))
            level = max(c["threshold"], self.onset_mean + c["sensitivity"] * math.sqrt(max(self.onset_var, 0.0)))
            self.onset_mean += k * (onset - self.onset_mean)
            self.onset_var += k * ((onset - self.onset_mean) ** 2 - self.onset_var)
        if onset < level or t - self.last_hit < c["min_interval_s"]:
            return 0.0
        strength = ((onset - level) / max(1.0 - level, 1e-6)) ** c["gamma"] + 0.25
        if getattr(f, "beat", False) or (f.tempo and min(f.beat_phase, 1 - f.beat_phase) * 60 / f.tempo < 0.06):
            strength *= c["beat_accent"]
        self.last_hit = t
        return float(min(strength, 2.0))

    def step(self, f, scale: float = 1.0, release_share: float | None = None) -> dict[str, np.ndarray]:
        """One video frame's transforms.  A steering may ask for its own style (Steering.motion_style): `scale`
        multiplies every move, `release_share` replaces hit.release_share."""
        c = self.cfg
        t = finite(f.time, 0.0)
        dt = 1.0 / REF_FPS if self.prev_time is None else min(max(t - self.prev_time, 1e-3), 0.5)
        self.prev_time = t
        last = self.last_hit
        hit = self._hit_strength(f, t, dt)
        if hit > 0 and last > -1e8:
            gap = min(t - last, HIT_GAP_MAX_S)
            self.hit_gap = gap if self.hit_gap is None else self.hit_gap + HIT_GAP_WEIGHT * (gap - self.hit_gap)
        release = max(c["hit"]["release_s"], 1e-3)
        share = c["hit"]["release_share"] if release_share is None else max(float(release_share), 0.0)
        if share > 0 and self.hit_gap is not None:
            # Sparse hits ease out for longer (motion flows on to the next one), dense hits stay short (each one
            # still a peak of its own).
            release = min(max(share * self.hit_gap, release), max(c["hit"]["release_max_s"], release))
        ease = math.exp(-dt / release)
        b = c["bend"]
        if hit > 0:
            self.hits += 1
            self.angle += GOLDEN_ANGLE
            self.spin = -self.spin
            # A kick's velocity decays with `release`, so it travels (velocity * release) in all.
            kick = min(hit, 1.5) / release
            self.bend_velocity += kick * np.array([b["zoom"] * (1 if self.hits % 2 else -0.6),
                                                   math.radians(b["turn_deg"]) * self.spin,
                                                   b["travel"] * math.cos(self.angle),
                                                   b["travel"] * math.sin(self.angle)])
            self.push_velocity += kick * c["camera"]["push"]
        # Ease out the kicks, and spring back toward rest (slowly: a drift between hits, not a snap).
        self.bend += self.bend_velocity * dt
        self.bend_velocity *= ease
        self.bend *= math.exp(-dt / max(b["return_s"], 1e-3))
        limit = np.array([b["limit"] * 0.5, math.radians(4 * b["turn_deg"]), b["limit"], b["limit"]])
        self.bend = limit * np.tanh(self.bend / limit)
        self.push += self.push_velocity * dt
        self.push_velocity *= ease
        self.push *= math.exp(-dt / max(c["camera"]["return_s"], 1e-3))
        push_limit = 3.0 * c["camera"]["push"]
        self.push = push_limit * math.tanh(self.push / push_limit) if push_limit > 0 else 0.0

        # Between hits: the camera pans and rolls on a slow loop, as fast as the music is loud.
        cam = c["camera"]
        k = 1.0 - math.exp(-dt / max(cam["loudness_s"], 1e-3))
        self.loudness += k * (min(max(finite(f.rms), 0.0), 1.0) - self.loudness)
        self.cycle += dt / max(cam["cycle_s"], 1e-3) * self.loudness * 2.0
        phi = 2 * math.pi * self.cycle
        camera = np.array([self.push + cam["pan"] * 0.3 * (1 - math.cos(phi)),    # never zoomed out: no edges
                           math.radians(cam["roll_deg"]) * math.sin(phi * 0.5),
                           cam["pan"] * math.sin(phi), cam["pan"] * math.sin(2 * phi) * 0.5])
        scale = max(finite(scale, 1.0), 0.0)
        return {"bend": scale * self.amount * self.bend_amount * self.bend,
                "camera": scale * self.amount * self.camera_amount * camera}
