"""Learned steering, after "Sound-guided Semantic Video Generation" (Lee et al., ECCV 2022).

    model = LearnedSteeringModel(G.num_ws, G.w_dim, MelConfig(), groups=None, hidden=256)
    ws_hat = model(mels, w)                # training: mels [B, T, n_mels, window], w [B, num_ws, w_dim]
    save_steering(model, "steer.safetensors", model_hash=directions.model_hash(G))
    steer = LearnedSteering(G, load_steering("steer.safetensors", G), cfg, seed=3)    # the Steering interface

Sound inversion (paper eq. 1): a small CNN E maps a log-mel window x [n_mels, T] to a W+ offset
[num_ws, w_dim]; w^ = E(x) + w, where w is the latent of a random seed.  Its last layer starts at zero, so an
untrained encoder gives w^ = w.

Recurrent frame generator (paper eq. 4-5): W+ rows are split into coarse / mid / fine groups (paper: 0-2, 3-5,
6-end; configurable, clamped like the reactive steering for small num_ws), each with its own GRU cell.  For
video frame t with mel window x_t (the audio up to frame t: the paper's "previous audio segment" x^{t-1}):

    e_t       = E(x_t)
    in_t[g]   = flatten((e_t + w^_{t-1})[rows_g] - w[rows_g])          (w^_{-1} = w)
    h_t[g]    = GRU_g(in_t[g], h_{t-1}[g])                             (h_{-1} = 0)
    w^_t[rows_g] = w[rows_g] + e_t[rows_g] + Out_g(h_t[g])

With `onset_input` (sgvis's addition, checkpoints since 2026-12-02), each GRU also takes the frame's picked onset
p_t (Features.onset_peak: the onset's strength on the frame a peak was picked, else 0), through a learned vector
per group added to in_t[g] (equivalent to one more input column of the GRU):

    h_t[g]    = GRU_g(in_t[g] + P_g * p_t, h_{t-1}[g])

The mel window shows an onset for its whole second, smeared over 43 columns; p_t says on which frame the
analysis stage picked it, the same event the reactive steering's hits and AV-Align's audio peaks use.

Out_g starts at zero (P_g at random, unit variance), so an untrained model is exactly the paper's w^ = E(x) + w at
every frame.  The
features arrive causally, so using x_t for frame t adds no delay in sgvis (the paper's index shift only says
the latent follows the audio before the frame).

Checkpoint: one .safetensors file (weights) whose metadata holds format 'sgvis-steering', version, num_ws,
w_dim, the mel config, the group rows, hidden size, encoder channels, whether the GRUs take the picked onset and (optionally) the hash of the mapping
network it was trained for (sgvis.steer.directions.model_hash).
"""
from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import torch
from torch import nn

from sgvis.errors import UserError, first_line
from sgvis.features.analysis import MelConfig
from sgvis.steer import Steering, finite
from sgvis.steer.reactive import (DEFAULTS, GROUPS, ReactiveSteering, base_latent, resolve_config, resolve_groups,
                                  resolve_psi, truncate)
from sgvis.steer.silence import SilenceGate

__all__ = ["SoundInversionEncoder", "LearnedSteeringModel", "LearnedSteering", "save_steering", "load_steering",
           "SteeringMismatch", "SteeringFileError", "FORMAT_TAG", "FORMAT_VERSION", "DEFAULT_STEERING",
           "steering_checkpoint_for"]

FORMAT_TAG = "sgvis-steering"
FORMAT_VERSION = "1"
DEFAULT_CHANNELS = (32, 64, 128, 256)
HOLD_CATCH_UP_S = 1.0       # after a silence, the held picture rejoins the model's over about this long
EASE_CATCH_UP_S = 1.0       # steer.learned.ease_s: between hits the picture still follows the model at least this fast


class SteeringFileError(UserError, ValueError):
    """Not a (readable, supported) sgvis steering checkpoint; the message is one line."""


class SteeringMismatch(UserError, ValueError):
    """A steering checkpoint made for a generator with another num_ws / w_dim."""


class SoundInversionEncoder(nn.Module):
    """Log-mel window [B, n_mels, T] -> W+ offset [B, num_ws, w_dim].

    Conv blocks (3x3 conv, GroupNorm, LeakyReLU; then a stride-2 3x3 conv halving both axes), global average
    pooling, and a two-layer head whose last layer is zero-initialised.  Inputs are standardised with the
    buffers `in_mean` / `in_std` (natural-log mel power; training may set them from its data)."""

    def __init__(self, n_mels: int, window_frames: int, num_ws: int, w_dim: int,
                 channels=DEFAULT_CHANNELS, head_hidden: int = 512):
        super().__init__()
        self.n_mels, self.window_frames, self.num_ws, self.w_dim = n_mels, window_frames, num_ws, w_dim
        self.register_buffer("in_mean", torch.tensor(-6.0))
        self.register_buffer("in_std", torch.tensor(4.0))
        layers = []
        cin = 1
        for ch in channels:
            layers += [nn.Conv2d(cin, ch, 3, padding=1), nn.GroupNorm(min(8, ch), ch), nn.LeakyReLU(0.2),
                       nn.Conv2d(ch, ch, 3, stride=2, padding=1), nn.GroupNorm(min(8, ch), ch), nn.LeakyReLU(0.2)]
            cin = ch
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(cin, head_hidden), nn.LeakyReLU(0.2),
                                  nn.Linear(head_hidden, num_ws * w_dim))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.ndim != 3 or mel.shape[1] != self.n_mels:
            raise ValueError(f"mel must have shape [B, {self.n_mels}, T], got {tuple(mel.shape)}")
        x = (mel.float() - self.in_mean) / self.in_std
        x = self.features(x[:, None])
        x = x.mean(dim=(2, 3))
        return self.head(x).view(-1, self.num_ws, self.w_dim)


def calibrate_input_standardisation(encoder: nn.Module, mels: torch.Tensor) -> None:
    """Set an encoder's `in_mean` / `in_std` buffers from log-mel windows of the training data (finite values)."""
    x = mels.float()
    x = x[torch.isfinite(x)]
    if x.numel() > 1:
        encoder.in_mean.fill_(float(x.mean()))
        encoder.in_std.fill_(max(float(x.std()), 1e-3))


class LearnedSteeringModel(nn.Module):
    """Sound inversion encoder + coarse/mid/fine GRU cells (see the module docstring)."""

    def __init__(self, num_ws: int, w_dim: int, mel_config: MelConfig | dict = MelConfig(),
                 groups: dict | None = None, hidden: int = 256, channels=DEFAULT_CHANNELS, head_hidden: int = 512,
                 onset_input: bool = False):
        super().__init__()
        self.onset_input = bool(onset_input)
        if isinstance(mel_config, dict):
            mel_config = MelConfig(**mel_config)
        self.num_ws, self.w_dim, self.hidden = int(num_ws), int(w_dim), int(hidden)
        self.mel_config = mel_config
        self.channels = tuple(int(c) for c in channels)
        self.head_hidden = int(head_hidden)
        self.groups = resolve_groups(groups or DEFAULTS["groups"], self.num_ws)
        self.encoder = SoundInversionEncoder(mel_config.n_mels, mel_config.window_frames, self.num_ws, self.w_dim,
                                             self.channels, self.head_hidden)
        self.grus = nn.ModuleDict()
        self.outs = nn.ModuleDict()
        self.onset_in = nn.ParameterDict()
        for g in GROUPS:
            s, e = self.groups[g]
            n = (e - s) * self.w_dim
            self.grus[g] = nn.GRUCell(n, self.hidden)
            self.outs[g] = nn.Linear(self.hidden, n)
            nn.init.zeros_(self.outs[g].weight)
            nn.init.zeros_(self.outs[g].bias)
            if self.onset_input:
                # A kick of the size of a whole input: the GRU's input weights (trained) learn what to make of it,
                # much faster than a zero vector could grow into one; Out_g keeps an untrained model at E(x) + w.
                self.onset_in[g] = nn.Parameter(torch.randn(n))

    def config(self) -> dict:
        return dict(num_ws=self.num_ws, w_dim=self.w_dim, mel_config=self.mel_config.to_dict(),
                    groups={g: list(v) for g, v in self.groups.items()}, hidden=self.hidden,
                    channels=list(self.channels), head_hidden=self.head_hidden, onset_input=self.onset_input)

    def _base(self, w: torch.Tensor) -> torch.Tensor:
        if w.ndim == 2 and w.shape[1] == self.w_dim and w.shape[0] != self.num_ws:
            w = w[:, None].expand(-1, self.num_ws, -1)              # [B, w_dim] -> [B, num_ws, w_dim]
        elif w.ndim == 2:
            w = w[None]                                               # [num_ws, w_dim] -> [1, num_ws, w_dim]
        if w.ndim != 3 or w.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"w must be [B, {self.num_ws}, {self.w_dim}] or [B, {self.w_dim}], got {tuple(w.shape)}")
        return w.float()

    def init_state(self, batch: int, device=None) -> dict:
        device = device or next(self.parameters()).device
        return {"h": {g: torch.zeros([batch, self.hidden], device=device) for g in GROUPS}, "prev": None}

    def _advance(self, e: torch.Tensor, w: torch.Tensor, state: dict, onset: torch.Tensor | None = None) \
            -> torch.Tensor:
        """One frame: e = E(x_t) [B, num_ws, w_dim], w base [B, num_ws, w_dim], onset: the picked onset p_t [B]
        (None: 0); updates state in place."""
        prev = w if state["prev"] is None else state["prev"]
        inp = e + prev - w                                            # (E(x) + w^_{t-1}) - w
        out = w + e
        pieces = []
        for g in GROUPS:
            s, t = self.groups[g]
            x = inp[:, s:t].flatten(1)
            if self.onset_input and onset is not None:
                x = x + onset.to(x.dtype)[:, None] * self.onset_in[g]
            h = self.grus[g](x, state["h"][g])
            state["h"][g] = h
            pieces.append((s, t, self.outs[g](h).view(-1, t - s, self.w_dim)))
        delta = torch.zeros_like(out)
        for s, t, d in pieces:                                        # groups may share rows for num_ws < 3
            delta[:, s:t] = d
        out = out + delta
        state["prev"] = out
        return out

    def encode(self, mels: torch.Tensor) -> torch.Tensor:
        """mels [B, T, n_mels, window] -> sound inversion offsets E(x_t) [B, T, num_ws, w_dim]."""
        if mels.ndim != 4:
            raise ValueError(f"mels must be [B, T, n_mels, window], got {tuple(mels.shape)}")
        B, T = mels.shape[:2]
        return self.encoder(mels.reshape(B * T, *mels.shape[2:])).view(B, T, self.num_ws, self.w_dim)

    def forward(self, mels: torch.Tensor, w: torch.Tensor, state: dict | None = None,
                return_state: bool = False, offsets: torch.Tensor | None = None, onsets: torch.Tensor | None = None):
        """mels [B, T, n_mels, window], w [B, num_ws, w_dim] (or [B, w_dim]) -> w^ [B, T, num_ws, w_dim].
        `offsets`: E(x) already computed by `encode(mels)` (training reuses them for other losses); `onsets`: the
        picked onsets p_t [B, T] (None: none; ignored by a model without onset_input)."""
        e = self.encode(mels) if offsets is None else offsets
        B, T = e.shape[:2]
        w = self._base(w)
        if w.shape[0] == 1 and B > 1:
            w = w.expand(B, -1, -1)
        state = state or self.init_state(B, e.device)
        if onsets is not None and tuple(onsets.shape) != (B, T):
            raise ValueError(f"onsets must be [B, T] = [{B}, {T}], got {tuple(onsets.shape)}")
        out = torch.stack([self._advance(e[:, t], w, state, None if onsets is None else onsets[:, t])
                           for t in range(T)], dim=1)
        return (out, state) if return_state else out

    def step(self, mel, w: torch.Tensor, state: dict | None = None, onset: float = 0.0,
             offset: torch.Tensor | None = None):
        """Inference, one frame: mel [n_mels, window] (numpy or tensor) or [B, n_mels, window], and the frame's
        picked onset p_t -> (w^ [num_ws, w_dim] or [B, num_ws, w_dim], state).  `offset`: E(mel), [num_ws, w_dim]
        or [B, num_ws, w_dim], where the encoder already ran (batched over frames: it does not depend on the
        state); mel is then not read."""
        if offset is None:
            device = next(self.parameters()).device
            m = torch.as_tensor(np.asarray(mel, np.float32) if not torch.is_tensor(mel) else mel,
                                dtype=torch.float32, device=device)
            single = m.ndim == 2
            e = self.encoder(m[None] if single else m)
        else:
            single = offset.ndim == 2
            e = offset[None] if single else offset
        wb = self._base(w.to(e.device))
        if wb.shape[0] == 1 and e.shape[0] > 1:
            wb = wb.expand(e.shape[0], -1, -1)
        state = state or self.init_state(e.shape[0], e.device)
        p = torch.full([e.shape[0]], float(onset), device=e.device) if self.onset_input else None
        out = self._advance(e, wb, state, p)
        return (out[0] if single else out), state


# -- checkpoints ---------------------------------------------------------------------------------------------
DEFAULT_STEERING = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets",
                                "default-steering.safetensors")


def steering_checkpoint_for(model_path: str | None, steering_path: str | None) -> str:
    """The checkpoint `--steer learned` uses: the one given, else the built-in one when the model is the
    built-in default model (it was trained for that model only)."""
    if steering_path:
        return steering_path
    if model_path is None and os.path.isfile(DEFAULT_STEERING):
        return DEFAULT_STEERING
    if model_path is None:
        raise UserError("--steer learned needs --steering PATH: this copy of sgvis has no built-in steering "
                        "checkpoint")
    raise UserError("--steer learned needs --steering PATH for this model (the built-in checkpoint fits the "
                    "built-in model only; train one with `sgvis train-encoder --model ...`)")


def save_steering(model: LearnedSteeringModel, path: str, model_hash: str | None = None,
                  extra: dict | None = None, dtype: torch.dtype = torch.float32) -> None:
    """Write `model` atomically as one .safetensors file with its architecture in the metadata.  With
    dtype=torch.float16 the file is half the size; loading always gives a float32 model."""
    from safetensors.torch import save_file
    cfg = model.config()
    meta = {"format": FORMAT_TAG, "version": FORMAT_VERSION, "num_ws": str(cfg["num_ws"]), "w_dim": str(cfg["w_dim"]),
            "mel_config": json.dumps(cfg["mel_config"]), "groups": json.dumps(cfg["groups"]),
            "hidden": str(cfg["hidden"]), "channels": json.dumps(cfg["channels"]),
            "head_hidden": str(cfg["head_hidden"]), "onset_input": "1" if cfg["onset_input"] else "0",
            "model_hash": model_hash or ""}
    for k, v in (extra or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in model.state_dict().items()}
    from stylegan.atomic import write_atomically
    write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=meta), suffix=".safetensors.tmp")


def load_steering(path: str, G=None, device=None) -> LearnedSteeringModel:
    """Read a steering checkpoint; with `G`, check that it fits G (num_ws, w_dim) and move it to G's device."""
    from safetensors import safe_open
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise SteeringFileError(f"steering checkpoint not found: {path}")
    try:
        with safe_open(path, framework="pt") as f:
            meta = dict(f.metadata() or {})
            keys = list(f.keys())
            tensors = {k: f.get_tensor(k) for k in keys}
    except Exception as e:
        raise SteeringFileError(f"{path} is not a steering checkpoint (not a readable .safetensors file: "
                                f"{first_line(e)})") from None
    fmt = meta.get("format")
    if fmt != FORMAT_TAG:
        what = "an sgvis generator" if fmt == "sgvis-generator" else f"format {fmt!r}" if fmt else "no sgvis metadata"
        raise SteeringFileError(f"{path} is not an sgvis steering checkpoint ({what})")
    if meta.get("version") != FORMAT_VERSION:
        raise SteeringFileError(f"{path}: steering checkpoint version {meta.get('version')} is not supported by "
                                f"this sgvis (expects {FORMAT_VERSION})")
    try:
        num_ws, w_dim = int(meta["num_ws"]), int(meta["w_dim"])
        mel = MelConfig(**json.loads(meta["mel_config"]))
        groups = {g: list(v) for g, v in json.loads(meta["groups"]).items()}
        hidden = int(meta["hidden"])
        channels = tuple(json.loads(meta.get("channels", json.dumps(list(DEFAULT_CHANNELS)))))
        head_hidden = int(meta.get("head_hidden", 512))
        onset_input = {"0": False, "1": True}[meta.get("onset_input", "0")]
    except (KeyError, TypeError, ValueError) as e:
        raise SteeringFileError(f"{path}: the steering metadata is invalid ({first_line(e)})") from None
    if G is not None and (num_ws != G.num_ws or w_dim != G.w_dim):
        raise SteeringMismatch(f"steering checkpoint {name} was made for num_ws={num_ws}, w_dim={w_dim}; "
                               f"this model has num_ws={G.num_ws}, w_dim={G.w_dim}")
    try:
        model = LearnedSteeringModel(num_ws, w_dim, mel, groups, hidden, channels, head_hidden, onset_input)
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except (RuntimeError, ValueError, KeyError) as e:
        raise SteeringFileError(f"{path}: the weights do not match the stored architecture "
                                f"({first_line(e)})") from None
    if missing or unexpected:
        raise SteeringFileError(f"{path}: the weights do not match the stored architecture "
                                f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)")
    if G is not None and meta.get("model_hash"):
        from sgvis.steer.directions import model_hash
        if meta["model_hash"] != model_hash(G):
            warnings.warn(f"steering checkpoint {name} was trained for another StyleGAN (same num_ws and w_dim); "
                          f"its motion may not suit this one")
    dev = device if device is not None else (G.device if G is not None else "cpu")
    return model.to(dev).eval().requires_grad_(False)


# -- the Steering interface -------------------------------------------------------------------------------------
class LearnedSteering(Steering):
    """Steering by a trained LearnedSteeringModel from the mel window of each Features.  The base latent w is
    the seed's z mapped with truncation (steer.truncation_psi); steer.learned.intensity scales w^ - w."""

    name = "learned"
    needs_checkpoint = True

    def __init__(self, G, model: LearnedSteeringModel, cfg: dict | None = None, seed: int = 0,
                 cache_dir: str | None = None):
        if model.num_ws != G.num_ws or model.w_dim != G.w_dim:
            raise SteeringMismatch(f"steering model was made for num_ws={model.num_ws}, w_dim={model.w_dim}; "
                                   f"this model has num_ws={G.num_ws}, w_dim={G.w_dim}")
        self.G = G
        self.cfg = resolve_config(cfg)
        self.model = model.to(G.device).eval()
        self.mel_config = model.mel_config
        self.intensity = float(self.cfg["learned"]["intensity"])
        self.hold_in_silence = bool(self.cfg["learned"]["hold_in_silence"])
        self.ease_s = float(self.cfg["learned"]["ease_s"])
        self.silence = SilenceGate()
        # steer.learned.drift: the base latent walks as the reactive steering's drift does (its drift settings:
        # pace, breath on the beat, still in silence), so the picture moves between the model's hits too.
        self._drift = None
        if self.cfg["learned"]["drift"]:
            self._drift = ReactiveSteering(G, self.cfg, seed, cache_dir=cache_dir)
        self.reset(seed)

    @classmethod
    def from_settings(cls, G, cfg: dict, seed: int, checkpoint: str | None = None, cache_dir: str | None = None):
        """The STEERINGS factory: learned steering is built from its checkpoint."""
        if not checkpoint:
            raise UserError("steer.mode is 'learned' but no steering checkpoint was given")
        return cls(G, load_steering(checkpoint, G), cfg, seed, cache_dir=cache_dir)

    def set_intensity(self, value: float) -> None:
        """Change steer.learned.intensity on the fly (live control) without resetting the state."""
        self.intensity = max(float(value), 0.0)

    def apply_control(self, name: str, value) -> bool:
        if name == "intensity":
            self.set_intensity(value)
        elif name == "truncation":
            self.cfg["truncation_psi"] = float(value)
            self.w = base_latent(self.G, self.seed, self.cfg["class_idx"], float(value))
        else:
            return False
        return True

    def reset(self, seed: int) -> None:
        self.seed = int(seed)
        psi = resolve_psi(self.G, self.cfg["truncation_psi"])
        self.w = base_latent(self.G, self.seed, self.cfg["class_idx"], psi)
        self.state = None
        if self._drift is not None:
            self._drift.reset(seed)
        self.silence.reset()
        self._held = None           # (the model's last W+, the W+ shown) while hold_in_silence
        self._shown = None          # the W+ shown while ease_s > 0, and its last step's length
        self._speed = 0.0
        self._time = None           # the previous frame's feature time

    def _mel_of(self, features) -> np.ndarray:
        mel = features.mel
        mc = self.mel_config
        if mel is None:
            raise ValueError("learned steering needs Features.mel (the log-mel window); this feature source "
                             "gives none")
        shape = tuple(np.shape(mel))
        if shape != (mc.n_mels, mc.window_frames):
            raise ValueError(f"learned steering expects mel windows of shape ({mc.n_mels}, {mc.window_frames}) "
                             f"(its MelConfig); got {shape}")
        return mel

    def steps(self, features: list) -> list:
        """The frames' encoder offsets E(x) in one batch (at batch 1 the small convolutions cost several times
        more per frame), then step() for each."""
        if len(features) < 2 or not isinstance(getattr(self.model, "encoder", None), nn.Module):
            return [self.step(f) for f in features]
        mels = np.stack([np.asarray(self._mel_of(f), np.float32) for f in features])
        with torch.no_grad():
            offsets = self.model.encoder(torch.from_numpy(mels).to(self.w.device))
        return [self.step(f, offset=e) for f, e in zip(features, offsets)]

    def step(self, features, offset: torch.Tensor | None = None) -> torch.Tensor:
        mel = self._mel_of(features) if offset is None else None
        onset = float(features.onset) if features.onset_peak else 0.0
        if self._drift is not None:
            w = torch.from_numpy(self._drift.step_base(features)).to(self.w.device, torch.float32)
            psi = resolve_psi(self.G, self.cfg["truncation_psi"])
            self.w = truncate(self.G, w.expand(1, *self.w.shape).contiguous(), psi)[0]
        with torch.no_grad():
            ws, self.state = self.model.step(mel, self.w, self.state, onset, offset=offset)
        if self.intensity != 1:
            ws = self.w + self.intensity * (ws - self.w)
        dt = self._frame_dt(features)
        if self.ease_s > 0:
            ws = self._ease(ws, features, dt)
        if self.hold_in_silence:                    # last: in silence nothing moves, the ease's glide neither
            ws = self._hold(ws, features, dt)
        return ws.float().contiguous()

    def motion_style(self) -> dict:
        return {"scale": float(self.cfg["learned"]["motion"]),
                "release_share": float(self.cfg["learned"]["hit_release_share"])}

    def _frame_dt(self, features) -> float:
        """Seconds since the previous frame, from the features' time (1/30 s for the first frame or without one)."""
        t = finite(getattr(features, "time", None), 0.0 if self._time is None else self._time + 1.0 / 30.0)
        dt = 1.0 / 30.0 if self._time is None else min(max(t - self._time, 1e-3), 0.5)
        self._time = t
        return dt

    def _ease(self, ws: torch.Tensor, features, dt: float) -> torch.Tensor:
        """The model's W+ reached along a path whose speed peaks on each hit and then only slows down: on a frame
        with a picked onset the picture sets off toward the model's latent, covering 1 - r of the way (r =
        exp(-dt / ease_s)); on the frames after, each step is at most r times the last, or, if more, the share of the
        remaining way that a catch-up over EASE_CATCH_UP_S covers.  So a hit's motion is one push that eases out
        (the model's own after-swings become part of it), and the picture still follows the model between hits."""
        if self._shown is None:
            self._shown, self._speed = ws, 0.0
            return ws
        r = math.exp(-dt / self.ease_s)
        way = ws - self._shown
        dist = float(way.norm())
        if getattr(features, "onset_peak", False):
            limit = (1.0 - r) * dist
        else:
            limit = max(r * self._speed, (1.0 - math.exp(-dt / EASE_CATCH_UP_S)) * dist)
        step = min(dist, limit)
        if dist > 0:
            self._shown = self._shown + way * (step / dist)
        self._speed = step
        return self._shown

    def _hold(self, ws: torch.Tensor, features, dt: float) -> torch.Tensor:
        """The model's W+ with its frame-to-frame steps scaled by the silence gate: in silence the picture holds
        where it was (the recurrent state runs on); with sound it moves as the model says and, over
        HOLD_CATCH_UP_S, catches up with what the model drew meanwhile, so no frame jumps."""
        gate = self.silence(features, dt)
        if self._held is None:
            self._held = (ws, ws)
            return ws
        last, shown = self._held
        if gate >= 1.0 and torch.equal(shown, last):      # never held back: the model's own W+, bit for bit
            self._held = (ws, ws)
            return ws
        shown = shown + gate * (ws - last)
        shown = shown + (1.0 - math.exp(-gate * dt / HOLD_CATCH_UP_S)) * (ws - shown)
        self._held = (ws, shown)
        return shown
