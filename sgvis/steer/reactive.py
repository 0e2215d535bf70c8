"""Steering: audio features in, W+ latents out, one video frame at a time.

    steer = make_steering(G, cfg["steer"], seed=7)            # reactive (any checkpoint) or learned
    for f in features:                                        # sgvis.features.analysis.Features, one per frame
        ws = steer.step(f)                                    # [G.num_ws, G.w_dim] float32 on G.device
        img = G.synthesis(ws[None], noise_mode="const")

Every steering has `name`, `reset(seed)` and `step(features)`; the same seed and the same features give the
same latents.  `mel_config` is the MelConfig the steering needs the features computed with (None: any).

Reactive steering (no training, works with any StyleGAN2/3 checkpoint)
---------------------------------------------------------------------
* Directions: the principal directions of W (sgvis.steer.directions, cached per model).  Distances are in units of
  W's standard deviation along the directions used ("std units"), so the same settings suit any model.
* Base latent: a slow, seeded walk through W.  Keyframes are mapped z's (so the walk stays in the model's
  distribution); the path is a uniform cubic B-spline through them (C2: no kinks), renormalised so its spread
  about the mean of W matches the keyframes'.  It advances one keyframe per `drift.period_s`, faster when loud
  (`drift.motion_gain`).  With a tempo, the slow motions (drift, swells, chroma) "breathe": they glide once
  every `drift.breath_beats` beats, easing out to a stop after `drift.glide` of that cycle, and hold still for
  the rest (`drift.breath` = 1; lower values keep some continuous motion), so quiet passages still move, with
  the groove.  With `drift.glide_on_onsets` (off by default) a cycle glides only where its beat sounds (a picked
  onset within 0.1 s of the tick): on sparse music a glide on a silent beat is a video peak no sound explains.
  In silence (sgvis.steer.silence: every level far below its recent peak) the slow motions slow down to
  `drift.silence_pace` of their pace (0 by default: the picture holds still while nothing plays) and take it up
  again with the sound.  A drift through z does not move W at an even pace (a model may map long stretches of
  z to one image and then lurch), so a drift that ran on in a break made the picture jolt where nothing plays.
* Hits: onsets per band (bass < 250 Hz, mid, high >= 2 kHz; Features.band_onsets from the features stage),
  all onsets, and beat accents (onsets on the beat grid) each feed a `Pulse` envelope (peak hold,
  release `release_s`, optional glide `attack_s`; seconds, so any frame rate looks the same).  The envelopes
  drive the *speed* of each layer group (coarse / mid / fine rows of W+) around its own loop ("orbit",
  radius `orbit.radius` std units, in a plane of principal directions that turns slowly with the drift).  So a
  hit makes the image move off at once and ease out, and it never snaps back: motion peaks on the hit and
  decays until the next one.  A full-strength hit travels `pulse` std units times `route[group]`.
  Defaults: bass hits and beat accents swing the coarse rows (big moves), mids the middle rows, highs and
  all onsets the fine rows (detail shimmer).
* Swells: the band levels (Features.low / mid / high), smoothed over `swell_s`, displace their groups by up to
  `swell` std units: louder bass leans the coarse layout, brighter highs the fine detail.
* Chroma: the 12 pitch classes weight 12 principal directions (pitch class j -> component first+j, sign fixed
  per seed), applied to the middle rows: the same chord returns to the same place.
* Output: truncation toward w_avg (`truncation_psi`), then a soft limit on the per-frame change of the whole
  W+ (`max_step`, in units of W's spread, per 1/30 s) so nothing can strobe.
* Space (`space`): the drift moves through W (`w`), or, for models with a latent bank (sgvis train-glo, the
  built-in model), through z (`z`; `auto` picks it for them).  A bank model's learned images sit at scattered
  points of W, and a spline through W keyframes runs between them, through blends of several images, murky and
  grey.  In z the keyframes are raw z and the spline point is mapped every frame, so the base is always a learned
  image or a blend of two near ones.  Hits, swells and chroma move along W's principal directions in both.

Offline renderers should compute each frame's Features a little ahead of the frame time (see
OFFLINE_LOOKAHEAD_S): the causal analysis window registers an onset a hop or two after it happens, and a
video peak counts as aligned only within one frame of the onset.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch

from sgvis.errors import UserError
from sgvis.steer import STEERINGS, Steering, finite
from sgvis.steer.silence import SilenceGate

__all__ = ["ReactiveSteering", "resolve_config", "resolve_groups", "DEFAULTS", "SOURCES", "GROUPS",
           "OFFLINE_LOOKAHEAD_S"]

GROUPS = ("coarse", "mid", "fine")
SOURCES = ("bass", "mid", "high", "onset", "beat")
BANDS = ("bass", "mid", "high")           # sources with a level (Features.low / mid / high) and a band onset

# The `steer:` section of configs/default.yaml, key for key (tests check that they agree).
DEFAULTS: dict[str, Any] = {
    "mode": "auto",
    "intensity": 1.0,
    "truncation_psi": "auto",
    "space": "auto",
    "class_idx": None,
    "max_step": 0.25,
    "groups": {"coarse": [0, 3], "mid": [3, 6], "fine": [6, None]},
    "directions": {"num_samples": 4096, "num_components": 32, "seed": 0},
    "drift": {"period_s": 8.0, "motion_gain": 1.0, "loudness_smoothing_s": 1.0, "breath": 1.0, "breath_beats": 2,
              "glide": 0.6, "glide_on_onsets": False, "silence_pace": 0.0, "even_pace": True},
    "orbit": {"radius": 1.5},
    "bass": {"pulse": 1.5, "attack_s": 0.0, "release_s": 0.20, "swell": 0.4, "swell_s": 1.5,
             "route": {"coarse": 1.0, "mid": 0.3, "fine": 0.0}},
    "mid": {"pulse": 0.8, "attack_s": 0.0, "release_s": 0.20, "swell": 0.4, "swell_s": 1.5,
            "route": {"coarse": 0.0, "mid": 1.0, "fine": 0.2}},
    "high": {"pulse": 0.8, "attack_s": 0.0, "release_s": 0.20, "swell": 0.3, "swell_s": 1.5,
             "route": {"coarse": 0.0, "mid": 0.0, "fine": 1.0}},
    "onset": {"pulse": 0.8, "attack_s": 0.0, "release_s": 0.25, "threshold": 0.1, "gamma": 0.5, "picked": True,
              "route": {"coarse": 0.0, "mid": 0.7, "fine": 1.0}},
    "beat": {"pulse": 1.0, "attack_s": 0.0, "release_s": 0.25, "window_s": 0.06,
             "route": {"coarse": 1.0, "mid": 0.5, "fine": 0.0}},
    "chroma": {"amount": 0.8, "smoothing_s": 1.0, "first_component": 0,
               "route": {"coarse": 0.0, "mid": 1.0, "fine": 0.0}},
    "learned": {"intensity": 1.0, "hold_in_silence": True, "drift": True, "ease_s": 0.2, "motion": 1.5,
                "hit_release_share": 0.9},
}

# Recommended feature lookahead for offline rendering (seconds): the frame at time t gets the Features of the
# audio up to t + OFFLINE_LOOKAHEAD_S (half the analysis window: the window is centred on the frame).
# bench/bench_av_align.py: AV-Align 0.62 with it, 0.60 with 0.03, 0.2-0.3 without (as live).
OFFLINE_LOOKAHEAD_S = 0.046


SPACES = ("auto", "w", "z")
REF_FPS = 30.0


# -- configuration --------------------------------------------------------------------------------------------
def _merge(base: dict, over: dict, path: str) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if k not in base:
            known = ", ".join(sorted(base))
            raise UserError(f"unknown config key {path}{k!r} (known: {known})")
        if isinstance(base[k], dict):
            if not isinstance(v, dict):
                raise UserError(f"config key {path}{k} must be a mapping, got {v!r}")
            out[k] = _merge(base[k], v, f"{path}{k}.")
        else:
            out[k] = v
    return out


def resolve_config(cfg: dict | None) -> dict:
    """The `steer:` section merged over DEFAULTS.  Accepts the section itself or a whole config holding one.
    Unknown keys and bad values raise UserError with one line."""
    cfg = dict(cfg or {})
    if isinstance(cfg.get("steer"), dict):
        cfg = cfg["steer"]
    c = _merge(DEFAULTS, cfg, "steer.")
    if c["mode"] != "auto" and c["mode"] not in STEERINGS:
        raise UserError(f"steer.mode must be auto or one of {', '.join(STEERINGS.names())}; got {c['mode']!r}")

    def number(path, v, lo=None, hi=None, positive=False):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UserError(f"{path} must be a number, got {v!r}")
        if (lo is not None and v < lo) or (hi is not None and v > hi) or (positive and v <= 0):
            rng = "> 0" if positive else f"in [{lo}, {'inf' if hi is None else hi}]"
            raise UserError(f"{path} must be {rng}, got {v!r}")
        return float(v)

    if c["space"] not in SPACES:
        raise UserError(f"steer.space must be one of {', '.join(SPACES)}; got {c['space']!r}")
    number("steer.intensity", c["intensity"], 0)
    if c["truncation_psi"] != "auto":
        number("steer.truncation_psi", c["truncation_psi"], -2, 2)
    number("steer.max_step", c["max_step"], positive=True)
    if c["class_idx"] is not None and (not isinstance(c["class_idx"], int) or c["class_idx"] < 0):
        raise UserError(f"steer.class_idx must be null or a class index >= 0, got {c['class_idx']!r}")
    d = c["directions"]
    for k in ("num_samples", "num_components", "seed"):
        if isinstance(d[k], bool) or not isinstance(d[k], int):
            raise UserError(f"steer.directions.{k} must be an integer, got {d[k]!r}")
    if d["num_samples"] < 16 or d["num_components"] < 1:
        raise UserError("steer.directions needs num_samples >= 16 and num_components >= 1")
    number("steer.drift.period_s", c["drift"]["period_s"], 0)
    number("steer.drift.motion_gain", c["drift"]["motion_gain"], 0)
    number("steer.drift.loudness_smoothing_s", c["drift"]["loudness_smoothing_s"], 0)
    number("steer.drift.breath", c["drift"]["breath"], 0, 1)
    number("steer.drift.glide", c["drift"]["glide"], 0.05, 1)
    number("steer.drift.silence_pace", c["drift"]["silence_pace"], 0, 1)
    for key in ("glide_on_onsets", "even_pace"):
        if not isinstance(c["drift"][key], bool):
            raise UserError(f"steer.drift.{key} must be true or false, got {c['drift'][key]!r}")
    if isinstance(c["drift"]["breath_beats"], bool) or not isinstance(c["drift"]["breath_beats"], int) \
            or c["drift"]["breath_beats"] < 1:
        raise UserError(f"steer.drift.breath_beats must be an integer >= 1, got {c['drift']['breath_beats']!r}")
    number("steer.orbit.radius", c["orbit"]["radius"], positive=True)
    for s in SOURCES + ("chroma",):
        sec = c[s]
        for k in ("pulse", "swell", "amount"):
            if k in sec:
                number(f"steer.{s}.{k}", sec[k])
        for k in ("attack_s", "release_s", "swell_s", "smoothing_s", "threshold", "window_s", "gamma"):
            if k in sec:
                number(f"steer.{s}.{k}", sec[k], 0, 1 if k == "threshold" else None)
        for g, v in sec["route"].items():
            if g not in GROUPS:
                raise UserError(f"steer.{s}.route.{g}: unknown layer group (groups: {', '.join(GROUPS)})")
            number(f"steer.{s}.route.{g}", v)
    if not isinstance(c["onset"]["picked"], bool):
        raise UserError(f"steer.onset.picked must be true or false, got {c['onset']['picked']!r}")
    for k in ("intensity", "ease_s", "motion", "hit_release_share"):
        number(f"steer.learned.{k}", c["learned"][k], 0)
    if not isinstance(c["learned"]["drift"], bool):
        raise UserError(f"steer.learned.drift must be true or false, got {c['learned']['drift']!r}")
    if not isinstance(c["learned"]["hold_in_silence"], bool):
        raise UserError(f"steer.learned.hold_in_silence must be true or false, got "
                        f"{c['learned']['hold_in_silence']!r}")
    for g, rows in c["groups"].items():
        if (not isinstance(rows, (list, tuple)) or len(rows) != 2
                or any(r is not None and (isinstance(r, bool) or not isinstance(r, int)) for r in rows)):
            raise UserError(f"steer.groups.{g} must be [start, end] (end null = last row), got {rows!r}")
    return c


def resolve_groups(groups: dict, num_ws: int) -> dict[str, tuple[int, int]]:
    """Row ranges [start, end) per group for a generator with `num_ws` rows.

    The configured ranges are clamped to num_ws.  If that leaves a group empty (small models: a 16 px StyleGAN2
    has num_ws 6, so the default fine rows 6.. do not exist), the rows are split into three nearly equal
    consecutive parts instead (coarse first); with fewer than three rows, groups share rows.
    """
    n = int(num_ws)
    out = {}
    for g in GROUPS:
        start, end = groups[g]
        start = max(0, min(int(start), n))
        end = n if end is None else max(0, min(int(end), n))
        out[g] = (start, end)
    if all(e > s for s, e in out.values()):
        return out
    if n >= 3:
        b1 = int(round(n / 3))
        b2 = int(round(2 * n / 3))
        return {"coarse": (0, b1), "mid": (b1, b2), "fine": (b2, n)}
    return {"coarse": (0, 1), "mid": (0, n) if n == 1 else (1, 2), "fine": (n - 1, n)}


# -- helpers --------------------------------------------------------------------------------------------------
class Envelope:
    """One-pole follower with separate attack and release time constants (seconds)."""

    def __init__(self, attack_s: float, release_s: float):
        self.attack_s, self.release_s = attack_s, release_s
        self.value = 0.0

    def reset(self, value: float = 0.0) -> None:
        self.value = value

    def __call__(self, x: float, dt: float) -> float:
        tau = self.attack_s if x > self.value else self.release_s
        a = 1.0 if tau <= 0 else 1.0 - math.exp(-dt / tau)
        self.value += a * (x - self.value)
        return self.value


# drift.even_pace: how the drift's W distance is measured and followed
DRIFT_SAMPLES = 32          # positions per spline segment at which its W distance is measured
DRIFT_REFERENCE = 8         # segments whose mean length is one keyframe's worth of drift distance
DRIFT_MAX_SEGMENTS = 4      # segments the drift may cross in one frame (a run of still ones: on next frame)
GLIDE_ONSET_WINDOW_S = 0.1     # drift.glide_on_onsets: how near its beat tick an onset makes the beat sound


class Pulse:
    """Envelope for impulses (onsets, beats): a peak-hold that releases exponentially (release_s), followed
    by a one-pole glide toward it (attack_s).  A one-frame impulse therefore rises over about attack_s and
    decays over release_s, whatever the frame rate."""

    def __init__(self, attack_s: float, release_s: float):
        self.attack_s, self.release_s = attack_s, release_s
        self.hold = 0.0
        self.value = 0.0

    def reset(self) -> None:
        self.hold = self.value = 0.0

    def __call__(self, x: float, dt: float) -> float:
        decay = math.exp(-dt / self.release_s) if self.release_s > 0 else 0.0
        self.hold = max(x, self.hold * decay)
        a = 1.0 if self.attack_s <= 0 else 1.0 - math.exp(-dt / self.attack_s)
        self.value += a * (self.hold - self.value)
        if self.hold < 0.02 and self.value < 0.02:          # a spent pulse stops exactly (no endless creep)
            self.hold = self.value = 0.0
        return self.value


def _bspline_weights(u: float) -> np.ndarray:
    """Uniform cubic B-spline weights for the 4 control points around segment position u in [0, 1)."""
    u2, u3 = u * u, u * u * u
    return np.array([(1 - u) ** 3, 3 * u3 - 6 * u2 + 4, -3 * u3 + 3 * u2 + 3 * u + 1, u3], np.float64) / 6.0


def base_latent(G, seed: int, class_idx: int | None, psi: float) -> torch.Tensor:
    """W+ [num_ws, w_dim] of the seed's z, truncated toward w_avg."""
    z = torch.from_numpy(np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5EED]).standard_normal(G.z_dim))
    z = z.to(G.device, torch.float32)[None] if G.z_dim > 0 else None
    c = G.make_c(1, 0 if class_idx is None else int(class_idx)) if G.c_dim else G.make_c(1)
    with torch.no_grad():
        ws = truncate(G, G.mapping(z, c, truncation_psi=1.0), psi)[0]
    return ws.float()


AUTO_PSI = 0.7      # truncation_psi "auto" for models without a latent bank


def _has_latent_bank(G) -> bool:
    """Whether G's mapping draws z from learned latents (sgvis train-glo models; MappingNetwork)."""
    return bool(getattr(G.mapping, "latent_bank", 0))


def resolve_psi(G, psi) -> float:
    """A truncation_psi setting as a number: "auto" is 1 for a model with a latent bank (sgvis train-glo; its
    random z already draw learned images, and w_avg is a blend of all of them), else AUTO_PSI."""
    if psi == "auto":
        return 1.0 if _has_latent_bank(G) else AUTO_PSI
    if isinstance(psi, bool) or not isinstance(psi, (int, float)) or not math.isfinite(psi):
        raise UserError(f"truncation_psi must be a number or auto, got {psi!r}")
    return float(psi)


def resolve_space(G, space: str) -> str:
    """steer.space as "w" or "z": auto is z for a model with a latent bank, else w; z needs a model with z."""
    if space == "auto":
        return "z" if _has_latent_bank(G) and G.z_dim > 0 else "w"
    if space == "z" and G.z_dim == 0:
        raise UserError("steer.space is z but this model has no z input; use steer.space=w")
    return space


def truncate(G, ws: torch.Tensor, psi: float) -> torch.Tensor:
    """W+ [n, num_ws, w_dim] moved toward the generator's w_avg by psi (the batch mean where G has none)."""
    if psi == 1:
        return ws
    return _w_avg(G, ws[:, 0]).lerp(ws, psi)


def _w_avg(G, fallback: torch.Tensor) -> torch.Tensor:
    w_avg = getattr(G.mapping, "w_avg", None)
    return (w_avg if w_avg is not None else fallback.mean(0)).to(fallback.device, torch.float32)


class ReactiveSteering(Steering):
    """Hand-designed audio reactivity over W's principal directions (see the module docstring)."""

    name = "reactive"

    def __init__(self, G, cfg: dict | None = None, seed: int = 0, cache_dir: str | None = None, directions=None):
        from sgvis.steer.directions import load_or_compute_directions

        self.G = G
        self._mapping = None                # stylegan.fast.FastMapping of G's mapping network, made on first use
        self.cfg = c = resolve_config(cfg)
        self.device = G.device
        self.num_ws, self.w_dim = int(G.num_ws), int(G.w_dim)
        d = c["directions"]
        if directions is None:
            directions = load_or_compute_directions(G, cache_dir=cache_dir, n_samples=d["num_samples"],
                                                    seed=d["seed"])
        # The per-frame arithmetic is tiny, so it runs in numpy (no device round trips, no thread-pool
        # overhead); the finished W+ goes to G's device once per frame (in z space the drift's z is mapped on
        # G's device once per frame as well).
        self.dirs = directions
        self.sigma = float(self.dirs.sigma)          # W's spread: the unit of max_step, in either space
        self.space = resolve_space(G, c["space"])
        self.K = min(int(d["num_components"]), self.dirs.num_components)
        self.U = self.dirs.components[: self.K].detach().cpu().numpy().astype(np.float64)   # [K, w_dim]
        self.S = self.dirs.std[: self.K].detach().cpu().numpy().astype(np.float64)          # [K]
        self.w_mean = self.dirs.mean.detach().cpu().numpy().astype(np.float64)
        self.w_avg = _w_avg(G, self.dirs.mean[None].to(self.device)).cpu().numpy().astype(np.float64)
        self.psi = resolve_psi(G, c["truncation_psi"])
        if G.c_dim > 0:
            self.class_idx = 0 if c["class_idx"] is None else int(c["class_idx"])
            if self.class_idx >= G.c_dim:
                raise UserError(f"steer.class_idx {self.class_idx} is out of range: this model has "
                                f"{G.c_dim} classes (0..{G.c_dim - 1})")
        else:
            self.class_idx = None
        self.groups = resolve_groups(c["groups"], self.num_ws)
        self.row_masks = np.zeros([len(GROUPS), self.num_ws, 1])                           # group -> rows
        for gi, g in enumerate(GROUPS):
            s, e = self.groups[g]
            self.row_masks[gi, s:e] = 1
        self.radius = float(c["orbit"]["radius"])
        self.speed = 1.0                                   # live control: pace of the slow motions
        self.group_gain = np.ones([len(GROUPS), 1, 1])     # live control: motion per layer group
        self.set_intensity(c["intensity"])
        self.reset(seed)

    @classmethod
    def from_settings(cls, G, cfg: dict, seed: int, checkpoint: str | None = None, cache_dir: str | None = None):
        """The STEERINGS factory: reactive steering takes no checkpoint."""
        if checkpoint:
            raise UserError("reactive steering takes no --steering checkpoint; use --steer learned with it, "
                            "or leave --steering out")
        return cls(G, cfg, seed, cache_dir=cache_dir)

    def apply_control(self, name: str, value) -> bool:
        if name == "intensity":
            self.set_intensity(value)
        elif name == "speed":
            self.speed = max(float(value), 0.0)
        elif name == "truncation":
            self.psi = float(value)
        elif name.startswith("groups.") and name[7:] in GROUPS:
            self.group_gain[GROUPS.index(name[7:])] = max(float(value), 0.0)
        else:
            return False
        return True

    def set_intensity(self, value: float) -> None:
        """Change steer.intensity on the fly (live control) without resetting the motion."""
        c = self.cfg
        c["intensity"] = k = max(float(value), 0.0)
        route = np.array([[float(c[s]["route"].get(g, 0.0)) for g in GROUPS] for s in SOURCES])   # [n_src, 3]
        # Orbit speed (rad/s) per unit pulse envelope: a full hit travels pulse * route std units.
        travel = np.array([c[s]["pulse"] / max(c[s]["release_s"], 1e-3) for s in SOURCES])
        self.speed_gain = k * travel[:, None] * route / self.radius
        self.swell_gain = k * np.array([c[s]["swell"] for s in BANDS])[:, None] * route[:len(BANDS)]
        self.chroma_gain = k * c["chroma"]["amount"] * np.array(
            [float(c["chroma"]["route"].get(g, 0.0)) for g in GROUPS])

    # -- state --------------------------------------------------------------------------------------------
    def reset(self, seed: int) -> None:
        c = self.cfg
        self.seed = int(seed)
        self._keyframes: dict[int, np.ndarray] = {}
        self._planes: dict[int, np.ndarray] = {}
        self.pulses = {s: Pulse(c[s]["attack_s"], c[s]["release_s"]) for s in SOURCES}
        self.swells = {s: Envelope(c[s]["swell_s"], c[s]["swell_s"]) for s in BANDS}
        self.loudness = Envelope(c["drift"]["loudness_smoothing_s"], c["drift"]["loudness_smoothing_s"])
        self.silence = SilenceGate()           # any band's level, released over 0.1 s (breath in silence)
        self.sound = 1.0                       # its last value: 0 (silence) .. 1 (sound)
        self.phase = 1.0                                   # drift position, in keyframes
        self._lengths: dict[int, np.ndarray] = {}          # cumulative W distance along spline segments
        self._unit = None                                  # W distance of one keyframe's worth of drift
        self._beats, self._last_ph = 0, None               # beat counter for the breath cycle
        # glide_on_onsets: the beat count the glide began at, the tick still waiting for its onset, the last onset
        self._glide_at, self._armed, self._last_onset, self._cycle_start = None, None, None, None
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, 0xC4])
        self.theta = rng.uniform(0, 2 * np.pi, len(GROUPS))   # orbit angles
        first = int(c["chroma"]["first_component"])
        self.chroma_idx = np.array([(first + j) % self.K for j in range(12)])
        self.chroma_sign = rng.choice([-1.0, 1.0], 12)
        self.chroma = np.full(12, 1 / 12, np.float64)
        self.prev_time = None
        self.prev_ws = None
        self.last_drives = {}

    def _rng(self, kind: int, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed & 0xFFFFFFFF, kind, i])

    def _map(self, z: np.ndarray) -> np.ndarray:
        """z [n, z_dim] -> w [n, w_dim] (untruncated), in float64."""
        G = self.G
        c = G.make_c(len(z), self.class_idx) if G.c_dim else G.make_c(len(z))
        zt = torch.from_numpy(z).to(self.device, torch.float32) if G.z_dim > 0 else None
        if self._mapping is None:           # the drift maps a latent every frame: the snapshot path, 4x faster
            from stylegan.fast import FastMapping
            self._mapping = FastMapping(G.mapping)
        w = self._mapping(zt, c, truncation_psi=1.0)
        return (w[:, 0] if w.ndim == 3 else w).detach().cpu().numpy().astype(np.float64)

    def _keyframe(self, i: int) -> np.ndarray:
        """The i-th drift keyframe: a mapped z, as a deviation from the mean of W ([w_dim]); in z space the z
        itself ([z_dim])."""
        kf = self._keyframes.get(i)
        if kf is None:
            z = self._rng(1, i).standard_normal(self.G.z_dim)
            kf = z if self.space == "z" else self._map(z[None])[0] - self.w_mean
            self._keyframes[i] = kf
            for old in [k for k in self._keyframes if k < i - 8]:
                del self._keyframes[old]
        return kf

    def _bases_at(self, phases) -> np.ndarray:
        """The drift's base latents in W ([n, w_dim]) at spline positions `phases` (keyframes), one mapping call."""
        rows = []
        for ph in phases:
            i0 = int(math.floor(ph))
            b = _bspline_weights(ph - i0)
            rows.append(sum(float(b[j]) * self._keyframe(i0 - 1 + j) for j in range(4)) / float(np.sqrt((b * b).sum())))
        x = np.stack(rows)
        return self._map(x) if self.space == "z" else x + self.w_mean

    def _segment_length(self, i: int) -> np.ndarray:
        """Cumulative W distance (std units of W) along spline segment [i, i + 1], at DRIFT_SAMPLES + 1 evenly
        spaced positions; entry 0 is 0, the last the segment's length.  Cached for the segments in reach."""
        table = self._lengths.get(i)
        if table is None:
            w = self._bases_at(i + np.linspace(0.0, 1.0, DRIFT_SAMPLES + 1))
            step = np.sqrt(np.square(np.diff(w, axis=0)).mean(axis=1)) / self.sigma
            table = self._lengths[i] = np.concatenate([[0.0], np.cumsum(step)])
            for old in [k for k in self._lengths if k < i - 2]:
                del self._lengths[old]
        return table

    def _advance_drift(self, keyframes: float) -> None:
        """Move the drift on by `keyframes` keyframes, at an even pace in W when `drift.even_pace`: by that many
        times the mean W length of the first DRIFT_REFERENCE segments, wherever the spline is.  The same step of
        the spline parameter can move W by almost nothing (a bank model maps long stretches of z to one image) or
        by a lot (between two of its images); measured by distance, the base neither holds nor lurches on its
        own, so the drift adds no motion that the music did not ask for."""
        if keyframes <= 0:
            return
        if not self.cfg["drift"]["even_pace"]:
            self.phase += keyframes
            return
        if self._unit is None:
            start = int(math.floor(self.phase))
            self._unit = float(np.mean([self._segment_length(start + k)[-1] for k in range(DRIFT_REFERENCE)]))
        if self._unit <= 1e-9:                          # a model whose drift does not move W at all
            self.phase += keyframes
            return
        left = keyframes * self._unit
        grid = np.linspace(0.0, 1.0, DRIFT_SAMPLES + 1)
        for _ in range(DRIFT_MAX_SEGMENTS):
            i = int(math.floor(self.phase))
            table = self._segment_length(i)
            at = float(np.interp(self.phase - i, grid, table))
            if at + left < table[-1]:
                self.phase = i + float(np.interp(at + left, table, grid))
                return
            left -= table[-1] - at
            self.phase = float(i + 1)

    def _plane_keys(self, i: int) -> np.ndarray:
        """Random direction coefficients (std units, over the K components) at keyframe i: [3 + n_bands, 3, K]:
        rows 0-1 span each group's orbit plane, row 2 + b is band b's swell direction.  Coarse groups favour the
        leading components, fine groups spread wider."""
        a = self._planes.get(i)
        if a is None:
            k = np.arange(self.K)
            decay = np.stack([0.85 ** k, 0.92 ** k, 0.97 ** k])                     # coarse, mid, fine
            a = self._rng(2, i).standard_normal((2 + len(BANDS), len(GROUPS), self.K)) * decay[None]
            self._planes[i] = a
            for old in [k for k in self._planes if k < i - 8]:
                del self._planes[old]
        return a

    # -- one frame ----------------------------------------------------------------------------------------
    def _hits(self, f) -> dict:
        """Impulses (0..1) per source for this frame."""
        c = self.cfg
        thr = float(c["onset"]["threshold"])

        gamma = float(c["onset"]["gamma"])

        def gate(x):
            return min(max(finite(x) - thr, 0.0) / max(1.0 - thr, 1e-6), 1.0) ** gamma

        if c["onset"]["picked"] and not getattr(f, "onset_peak", False):
            # Hits land only on the onsets the features stage picked (Features.onset_peak), so the picture's
            # jolts are where the music's are, not on every rise of the onset strength in a dense mix.
            return {**{b: 0.0 for b in BANDS}, "onset": 0.0, "beat": 0.0}
        onset = gate(f.onset)
        bands = getattr(f, "band_onsets", None)
        if bands is None:
            # No band onsets from the features stage: split the onset by the band levels instead.
            levels = {"bass": f.low, "mid": f.mid, "high": f.high}
            bands = {b: onset * min(max(finite(levels[b]), 0.0), 1.0) for b in BANDS}
        else:
            bands = {b: gate(v) for b, v in bands.items()}
        # Beat accents are onsets that fall on a beat (the beat flag, or within `window_s` of the tracked beat
        # grid): accents land on audible hits, and a tracked beat with nothing audible on it moves nothing.
        near = 0.0
        tempo = finite(f.tempo)
        if bool(f.beat):
            near = 1.0
        elif tempo > 0:
            ph = finite(f.beat_phase) % 1.0
            dist = min(ph, 1.0 - ph) * 60.0 / tempo
            w = float(c["beat"]["window_s"])
            near = math.exp(-0.5 * (dist / w) ** 2) if w > 0 else 0.0
        return dict(bands, onset=onset, beat=near * onset)

    def _breath(self, f, dt: float) -> float:
        """Time-warp factor for the slow motions (drift, swells, chroma), mean 1.  With a tempo, the slow
        motions glide once every `breath_beats` beats: fast at the beat, slowing linearly to a stop after
        `glide` of the cycle (a steady deceleration, so the frame-to-frame motion falls monotonically), and,
        with `breath` = 1, holding perfectly still for the rest of it: quiet passages still move, with the
        groove, and a held frame cannot flicker.  1 (continuous) while the tempo is unknown."""
        d = self.cfg["drift"]
        # In silence the beat grid a tracker keeps through a break is no reason to move: gliding on it there would
        # make the picture pulse while nothing plays.  The breath fades out with the sound (any band); how fast the
        # slow motions go meanwhile is step()'s `drift.silence_pace`.
        self.sound = self.silence(f, dt)
        depth = float(d["breath"]) * self.sound
        if depth <= 0 or finite(f.tempo) <= 0:
            self._last_ph = None
            return 1.0
        ph = finite(f.beat_phase) % 1.0
        if self._last_ph is not None and (ph < self._last_ph - 0.5 or bool(f.beat) and ph < self._last_ph):
            self._beats += 1
        self._last_ph = ph
        n = max(int(d["breath_beats"]), 1)
        cycle = ((self._beats % n) + ph) / n
        glide = float(d["glide"])
        if d.get("glide_on_onsets", False):
            # A glide starts on its beat only where the beat sounds (a picked onset within GLIDE_ONSET_WINDOW_S of
            # the tick, before or after it): on a silent beat (sparse music) a glide would be a jolt that no sound
            # explains, so that cycle holds still.
            t = finite(f.time, 0.0)
            count = self._beats + ph
            if bool(getattr(f, "onset_peak", False)):
                self._last_onset = t
            if self._cycle_start is None or int(count // n) != self._cycle_start:
                self._cycle_start, self._armed = int(count // n), t          # the tick: wait for its onset
            if self._armed is not None:
                if self._last_onset is not None and abs(t - self._last_onset) <= GLIDE_ONSET_WINDOW_S:
                    self._glide_at, self._armed = float(self._cycle_start * n), None
                elif t - self._armed > GLIDE_ONSET_WINDOW_S:
                    self._armed = None                                         # a silent beat
            cycle = float("inf") if self._glide_at is None else (count - self._glide_at) / n
        shape = 2.0 / glide * (1.0 - cycle / glide) if cycle < glide else 0.0
        return (1.0 - depth) + depth * shape

    def _frame_dt(self, f) -> float:
        """Seconds since the previous frame's Features (1/30 s for the first), clamped to 1 ms .. 0.5 s."""
        t = finite(f.time, 0.0)
        dt = 1.0 / REF_FPS if self.prev_time is None else min(max(t - self.prev_time, 1e-3), 0.5)
        self.prev_time = t
        return dt

    def _advance_base(self, f, dt: float) -> float:
        """One frame of the slow motions' clock (breath, silence_pace) and of the drift along the keyframe spline
        (not at all when period_s is 0): sets self.base, the drift's W [w_dim]; returns the slow motions' dt."""
        d = self.cfg["drift"]
        slow_dt = dt * self._breath(f, dt) * self.speed      # slow motions move with the beat (see _breath)
        pace = float(d["silence_pace"])
        slow_dt *= pace + (1.0 - pace) * self.sound          # and slow to silence_pace while nothing plays
        loud = self.loudness(min(max(finite(f.rms), 0.0), 1.0), dt)
        period = float(d["period_s"])
        if period > 0:
            self._advance_drift(slow_dt / period * (1.0 + float(d["motion_gain"]) * loud))
        self.base = self._bases_at([self.phase])[0]
        return slow_dt

    def step_base(self, f) -> np.ndarray:
        """Only the drift, for a steering that walks its own latent along it (steer.learned.drift): the base W
        [w_dim] for Features f, as step() would reach it (no hits, swells or chroma are worked out)."""
        self._advance_base(f, self._frame_dt(f))
        return self.base

    def step(self, f) -> torch.Tensor:
        c = self.cfg
        dt = self._frame_dt(f)
        hits = self._hits(f)
        pulse = np.array([self.pulses[s](hits[s], dt) for s in SOURCES])                   # [n_src]
        slow_dt = self._advance_base(f, dt)
        base = self.base
        levels = {"bass": f.low, "mid": f.mid, "high": f.high}
        swell = np.array([self.swells[b](min(max(finite(levels[b]), 0.0), 1.0), slow_dt) for b in BANDS])
        i0 = int(math.floor(self.phase))
        b = _bspline_weights(self.phase - i0)

        # Orbits: hits set the angular speed of each group; planes turn slowly with the drift.
        omega = pulse @ self.speed_gain                                                      # [3] rad/s
        self.theta = (self.theta + omega * dt) % (2 * np.pi)
        keys = sum(b[j] * self._plane_keys(i0 - 1 + j) for j in range(4))                   # [2+nb, 3, K]
        u = keys[0] / np.maximum(np.linalg.norm(keys[0], axis=-1, keepdims=True), 1e-8)
        v = keys[1] - (keys[1] * u).sum(-1, keepdims=True) * u                              # Gram-Schmidt
        v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-8)
        sw = keys[2:] / np.maximum(np.linalg.norm(keys[2:], axis=-1, keepdims=True), 1e-8)  # [nb, 3, K]
        coef = self.radius * (np.cos(self.theta)[:, None] * u + np.sin(self.theta)[:, None] * v)
        coef = coef + np.einsum("bg,bgk->gk", swell[:, None] * self.swell_gain, sw)          # [3, K] std units

        # Chroma: the 12 pitch classes weight 12 principal directions.
        chroma = np.asarray(f.chroma if f.chroma is not None else np.full(12, 1 / 12), np.float64).reshape(-1)
        if chroma.shape == (12,) and np.all(np.isfinite(chroma)) and chroma.sum() > 1e-8:
            tau = float(c["chroma"]["smoothing_s"])
            k = 1.0 if tau <= 0 else 1.0 - math.exp(-slow_dt / tau)
            self.chroma += k * (chroma / chroma.sum() - self.chroma)
        dev = self.chroma - 1.0 / 12
        wchroma = dev / max(float(np.linalg.norm(dev)), 0.15)                                # |w| <= 1

        disp = (coef * self.S[None]) @ self.U                                                # [3, w_dim]
        cvec = (wchroma * self.chroma_sign * self.S[self.chroma_idx]) @ self.U[self.chroma_idx]  # [w_dim]
        disp = disp + self.chroma_gain[:, None] * cvec[None]
        ws = base[None] + (self.group_gain * self.row_masks * disp[:, None, :]).sum(0)        # [num_ws, w_dim]
        if self.psi != 1:
            ws = self.w_avg + self.psi * (ws - self.w_avg)

        # Soft limit on the per-frame change (frame-rate independent: the bound scales with dt).
        if self.prev_ws is not None:
            delta = ws - self.prev_ws
            n = float(np.sqrt(np.square(delta).sum(axis=1).mean()))
            m = float(c["max_step"]) * self.sigma * dt * REF_FPS
            if n > 0 and m > 0:
                ws = self.prev_ws + delta / (1.0 + (n / m) ** 4) ** 0.25
        self.prev_ws = ws
        self.last_drives = {**{f"{s}.pulse": float(p) for s, p in zip(SOURCES, pulse)},
                            **{f"{s}.swell": float(q) for s, q in zip(BANDS, swell)},
                            **{f"{g}.speed": float(o) for g, o in zip(GROUPS, omega)}}
        return torch.from_numpy(ws.astype(np.float32)).to(self.device)
