"""The TempoTokens audio mapper: BEATs layer features -> six pseudo-word embeddings per video frame.

    mapper = load_mapper("learned_embeds.pth")      # a plain state_dict, loaded as weights only
    temporal, local1, local2, local3, local4, class_token = mapper(beats.layer_features(wav16k))

`temporal` and the four `local*` are [B, F, D] (one vector per video frame, F = 24 for 2 s); `class_token` is
[B, D] (None for a mapper saved without its pooling). fc1 -> GELU -> fc2 -> GELU -> fc3 maps every audio token;
the tokens of each frame are averaged (T / F per frame), then GELU -> fc4. local_k averages the frame vectors
over [i - s, i + s) for s = 1, 2, 4, 8 (clipped at the ends). The class token is an attentive pooling over the
frames: a unary score (conv, ReLU, dropout, conv) and a self-similarity score (mean cosine similarity of two
embeddings), mixed by a learned 2 -> 1 weight, softmaxed over frames.

Dropout in the unary score is active only in training mode, so the class token is deterministic in eval.
(TempoTokens' own code applies that dropout in eval too, which makes its class token random.)
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from sgvis.errors import UserError

WINDOWS = (1, 2, 4, 8)          # half-widths of the moving averages local1..local4
FRAMES = 24                     # frames per 2 s window the released mappers were trained for
WHERE_TO_GET = ("the TempoTokens mapper weights (learned_embeds.pth for vggsound, landscape or audioset_drum) are "
                "linked from the 'Pre-trained weights' section of the TempoTokens README (guyyariv/TempoTokens)")


class _Unary(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.embed = nn.Conv1d(dim, dim, 1)
        self.feature_reduce = nn.Conv1d(dim, 1, 1)

    def forward(self, x_cf):                                     # [B, D, F] -> [B, F]
        hidden = F.dropout(F.relu(self.embed(x_cf)), p=0.5, training=self.training)
        return self.feature_reduce(hidden).squeeze(1)


class _SelfSimilarity(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.embed_X = nn.Conv1d(dim, dim, 1)
        self.embed_Y = nn.Conv1d(dim, dim, 1)

    def forward(self, x_cf):                                     # [B, D, F] -> [B, F]
        a = F.normalize(self.embed_X(x_cf), dim=1)
        b = F.normalize(self.embed_Y(x_cf), dim=1)
        return (a.transpose(1, 2) @ b).mean(dim=2)


class AttentivePooling(nn.Module):
    """[B, F, D] -> [B, D]: a softmax-weighted sum over F (module names follow the published state_dict)."""

    def __init__(self, dim: int):
        super().__init__()
        self.un_models = nn.ModuleList([_Unary(dim)])
        self.pp_models = nn.ModuleDict({"0": _SelfSimilarity(dim)})
        self.reduce_potentials = nn.ModuleList([nn.Conv1d(2, 1, 1, bias=False)])

    def forward(self, x):
        x_cf = x.transpose(1, 2)
        scores = torch.stack([self.un_models[0](x_cf), self.pp_models["0"](x_cf)], dim=1)    # [B, 2, F]
        weights = torch.softmax(self.reduce_potentials[0](scores).squeeze(1), dim=1)        # [B, F]
        return (x * weights.unsqueeze(-1)).sum(dim=1)


def moving_average(x: torch.Tensor, half: int, causal: bool = False) -> torch.Tensor:
    """[B, F, D] -> [B, F, D]: out[i] = mean of x[max(i - half, 0) : min(i + half, F)] (TempoTokens' centred
    windows), or with causal=True of x[max(i - 2 * half, 0) : i + 1], the frames up to i only (live use)."""
    n = x.shape[1]
    sums = F.pad(x.cumsum(dim=1), (0, 0, 1, 0))
    i = torch.arange(n, device=x.device)
    if causal:
        lo, hi = (i - 2 * half).clamp(min=0), i + 1
    else:
        lo, hi = (i - half).clamp(min=0), (i + half).clamp(max=n)
    return (sums[:, hi] - sums[:, lo]) / (hi - lo).to(x.dtype)[None, :, None]


class TempoMapper(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, frames: int = FRAMES, class_token: bool = True):
        super().__init__()
        self.frames, self.out_dim = frames, out_dim
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, out_dim)
        self.fc4 = nn.Linear(out_dim, out_dim)
        self.fga = AttentivePooling(out_dim) if class_token else None
        self.causal = False             # local windows over past frames only (live): [i - 2k, i] instead of [i-k, i+k)

    @property
    def in_dim(self) -> int:
        return self.fc1.in_features

    def forward(self, features: torch.Tensor):
        """BEATs layer features [B, T, in_dim] (T a multiple of `frames`) -> (temporal, local1, local2, local3,
        local4, class_token)."""
        b, t, _ = features.shape
        if t % self.frames:
            raise ValueError(f"{t} audio tokens do not split into {self.frames} frames")
        x = self.fc3(F.gelu(self.fc2(F.gelu(self.fc1(features)))))
        x = x.view(b, self.frames, t // self.frames, self.out_dim).mean(dim=2)
        temporal = self.fc4(F.gelu(x))
        class_token = self.fga(temporal) if self.fga is not None else None
        return (temporal, *(moving_average(temporal, k, self.causal) for k in WINDOWS), class_token)


def load_mapper(path: str, frames: int = FRAMES, device="cpu") -> TempoMapper:
    """A TempoTokens mapper state_dict (.pth, loaded as weights only) -> TempoMapper in eval mode. Widths come
    from the tensors; `frames` (frames per window) is not stored in the file: 24 for the released mappers."""
    if not os.path.isfile(path):
        raise UserError(f"mapper weights {path} not found; {WHERE_TO_GET}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line for the user
        raise UserError(f"{path}: cannot read it as mapper weights ({str(e).splitlines()[0][:200]})") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or any(f"fc{i}.weight" not in sd for i in (1, 2, 3, 4)):
        raise UserError(f"{path}: not a TempoTokens mapper state_dict (needs fc1..fc4)")
    hidden, in_dim = sd["fc1.weight"].shape
    out_dim = sd["fc3.weight"].shape[0]
    mapper = TempoMapper(in_dim, hidden, out_dim, frames=frames,
                         class_token=any(k.startswith("fga.") for k in sd))
    try:
        mapper.load_state_dict(sd)
    except RuntimeError as e:
        raise UserError(f"{path}: does not fit the TempoTokens mapper ({str(e).splitlines()[-1].strip()[:200]})") \
            from None
    return mapper.eval().to(device)
