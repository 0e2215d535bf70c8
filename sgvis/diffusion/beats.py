"""BEATs audio encoder (inference only): Kaldi-style log-mel fbank -> 16x16 patches -> transformer layers.

Built from the released checkpoint file alone: `torch.load(weights_only=True)` of a `{'cfg': dict, 'model':
state_dict}` .pt, so no code from the file runs. Every size comes from the state_dict (patch, widths, layers, FFN,
positional convolution, relative-position buckets) or, where the tensors cannot tell, from cfg (heads, the
relative-position max_distance, deep norm or pre-norm). The iter3+ AudioSet checkpoints use the gated relative
position bias and deep norm; both are supported, as is the plain post-norm or pre-norm variant. The classifier
head (`predictor.*`) is ignored: sgvis only reads the layer outputs.

    beats = load_beats("BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt")
    feats = beats.layer_features(wav16k)          # [B, T, L*D]: the L layer outputs side by side
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sgvis.errors import UserError

SAMPLE_RATE = 16000
FBANK_MEAN = 15.41663          # the normalisation BEATs was trained with: (fbank - mean) / (2 * std)
FBANK_STD = 6.55582
WHERE_TO_GET = ("BEATs has no public download any more (the official links have returned HTTP 403 since 2024): "
                "bring your own copy of BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt (microsoft/unilm, beats/)")


# --- Kaldi-style filterbank -------------------------------------------------------------------------------------

def _mel(freq):
    return 1127.0 * torch.log1p(torch.as_tensor(freq, dtype=torch.float64) / 700.0)


def mel_filterbank(num_bins: int = 128, n_fft: int = 512, sample_rate: int = SAMPLE_RATE,
                   low_freq: float = 20.0, high_freq: float | None = None) -> torch.Tensor:
    """Kaldi's triangular mel filters, [num_bins, n_fft // 2 + 1] (the Nyquist column is zero, as in Kaldi)."""
    high_freq = sample_rate / 2 if high_freq is None else high_freq
    lo, hi = _mel(low_freq), _mel(high_freq)
    step = (hi - lo) / (num_bins + 1)
    edges = lo + step * torch.arange(num_bins + 2, dtype=torch.float64)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fft_mel = _mel(sample_rate / n_fft * torch.arange(n_fft // 2, dtype=torch.float64))[None, :]
    rising = (fft_mel - left) / (centre - left)
    falling = (right - fft_mel) / (right - centre)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return F.pad(weights, (0, 1)).float()


def kaldi_fbank(wave: torch.Tensor, num_bins: int = 128, sample_rate: int = SAMPLE_RATE,
                frame_ms: float = 25.0, shift_ms: float = 10.0, preemphasis: float = 0.97) -> torch.Tensor:
    """Log mel filterbank energies the way Kaldi (and torchaudio.compliance.kaldi.fbank with its defaults) makes
    them: frames that fit whole ('snip edges'), no dither, DC removed per frame, pre-emphasis, the Povey window,
    zero-padded to a power of two, power spectrum, mel filters from 20 Hz to Nyquist, log floored at float eps.
    wave [B, S] (already scaled as the model wants) -> [B, frames, num_bins]."""
    length = int(sample_rate * frame_ms / 1000)
    shift = int(sample_rate * shift_ms / 1000)
    n_fft = 1 << (length - 1).bit_length()
    if wave.shape[-1] < length:
        return wave.new_zeros(wave.shape[0], 0, num_bins)
    frames = wave.unfold(-1, length, shift)                                  # [B, N, length]
    frames = frames - frames.mean(dim=-1, keepdim=True)
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = frames - preemphasis * previous
    window = torch.hann_window(length, periodic=False, dtype=torch.float64).pow(0.85).to(wave)
    spectrum = torch.fft.rfft(frames * window, n=n_fft).abs().pow(2)         # [B, N, n_fft/2 + 1]
    energies = spectrum @ mel_filterbank(num_bins, n_fft, sample_rate).to(wave).T
    return torch.clamp(energies, min=torch.finfo(torch.float32).eps).log()


# --- the network ----------------------------------------------------------------------------------------------

@dataclass
class BEATsShape:
    patch: int
    embed_dim: int                 # patch embedding width
    conv_bias: bool
    dim: int                       # transformer width
    layers: int
    heads: int
    ffn: int
    activation: str                # gelu | relu
    pos_conv_kernel: int
    pos_conv_groups: int
    rel_buckets: int               # 0: no relative position bias
    rel_max_distance: int
    gated_rel_pos: bool
    deep_norm: bool
    layer_norm_first: bool


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """[length, length] bucket of key position minus query position (bidirectional, log-spaced far away)."""
    positions = torch.arange(length)
    relative = positions[None, :] - positions[:, None]
    half = num_buckets // 2
    bucket = (relative > 0).long() * half
    distance = relative.abs()
    exact = half // 2
    far = exact + (torch.log(distance.clamp(min=1).float() / exact) / math.log(max_distance / exact)
                   * (half - exact)).long()
    far = far.clamp(max=half - 1)
    return bucket + torch.where(distance < exact, distance, far)


class SelfAttention(nn.Module):
    def __init__(self, shape: BEATsShape, has_bias_table: bool):
        super().__init__()
        d = shape.dim
        self.heads = shape.heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        self.relative_attention_bias = nn.Embedding(shape.rel_buckets, shape.heads) if has_bias_table else None
        if shape.gated_rel_pos:
            self.grep_linear = nn.Linear(d // shape.heads, 8)
            self.grep_a = nn.Parameter(torch.ones(1, shape.heads, 1, 1))
        else:
            self.grep_linear = None

    def forward(self, x, position_bias):
        b, t, d = x.shape
        h = self.heads

        def split(y):
            return y.view(b, t, h, d // h).transpose(1, 2)                 # [B, H, T, hd]
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        bias = None
        if position_bias is not None:                                       # [H, T, T]
            bias = position_bias[None]
            if self.grep_linear is not None:
                gates = torch.sigmoid(self.grep_linear(q).view(b, h, t, 2, 4).sum(-1))
                gate_a, gate_b = gates[..., :1], gates[..., 1:]
                bias = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * bias   # [B, H, T, T]
            bias = bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    def __init__(self, shape: BEATsShape, has_bias_table: bool):
        super().__init__()
        self.self_attn = SelfAttention(shape, has_bias_table)
        self.self_attn_layer_norm = nn.LayerNorm(shape.dim)
        self.fc1 = nn.Linear(shape.dim, shape.ffn)
        self.fc2 = nn.Linear(shape.ffn, shape.dim)
        self.final_layer_norm = nn.LayerNorm(shape.dim)
        self.pre_norm = shape.layer_norm_first
        self.alpha = (2 * shape.layers) ** 0.25 if shape.deep_norm else 1.0
        self.activation = shape.activation

    def _ffn(self, x):
        y = self.fc1(x)
        y = F.gelu(y.float()).to(y.dtype) if self.activation == "gelu" else F.relu(y)
        return self.fc2(y)

    def forward(self, x, position_bias):
        if self.pre_norm:
            x = x + self.self_attn(self.self_attn_layer_norm(x), position_bias)
            return x + self._ffn(self.final_layer_norm(x))
        x = self.self_attn_layer_norm(x * self.alpha + self.self_attn(x, position_bias))
        return self.final_layer_norm(x * self.alpha + self._ffn(x))


class BEATsEncoder(nn.Module):
    """BEATs without its classifier: `layer_features(wav16k)` -> the per-layer outputs concatenated."""

    def __init__(self, shape: BEATsShape):
        super().__init__()
        self.shape = shape
        self.patch_embedding = nn.Conv2d(1, shape.embed_dim, shape.patch, stride=shape.patch, bias=shape.conv_bias)
        self.layer_norm = nn.LayerNorm(shape.embed_dim)
        self.post_extract_proj = nn.Linear(shape.embed_dim, shape.dim) if shape.embed_dim != shape.dim else None
        self.pos_conv = nn.Conv1d(shape.dim, shape.dim, shape.pos_conv_kernel, padding=shape.pos_conv_kernel // 2,
                                  groups=shape.pos_conv_groups)
        self.encoder_layer_norm = nn.LayerNorm(shape.dim)
        self.layers = nn.ModuleList(EncoderLayer(shape, has_bias_table=(i == 0 and shape.rel_buckets > 0))
                                    for i in range(shape.layers))

    @property
    def output_dim(self) -> int:
        return self.shape.layers * self.shape.dim

    def fbank(self, wav16k: torch.Tensor) -> torch.Tensor:
        """[B, S] mono 16 kHz in [-1, 1] -> normalised log-mel [B, frames, 128]."""
        bank = kaldi_fbank(wav16k.float() * 2 ** 15)
        return (bank - FBANK_MEAN) / (2 * FBANK_STD)

    def tokens(self, wav16k: torch.Tensor) -> torch.Tensor:
        """The patch tokens entering the first layer [B, T, D] (time-major over the patch grid)."""
        bank = self.fbank(wav16k)
        if bank.shape[1] < self.shape.patch:
            raise ValueError(f"audio too short for BEATs: {wav16k.shape[-1]} samples give {bank.shape[1]} fbank "
                             f"frames, fewer than one {self.shape.patch}-frame patch")
        dtype = self.patch_embedding.weight.dtype
        x = self.patch_embedding(bank.unsqueeze(1).to(dtype))                # [B, E, Tp, Fp]
        x = self.layer_norm(x.flatten(2).transpose(1, 2))
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        conv = self.pos_conv(x.transpose(1, 2))
        if self.shape.pos_conv_kernel % 2 == 0:
            conv = conv[..., :-1]                                            # 'same' length for an even kernel
        x = x + F.gelu(conv).transpose(1, 2)
        if not self.shape.layer_norm_first:
            x = self.encoder_layer_norm(x)
        return x

    def layer_outputs(self, wav16k: torch.Tensor) -> list[torch.Tensor]:
        x = self.tokens(wav16k)
        position_bias = None
        if self.shape.rel_buckets:
            buckets = relative_position_buckets(x.shape[1], self.shape.rel_buckets, self.shape.rel_max_distance)
            position_bias = self.layers[0].self_attn.relative_attention_bias(buckets.to(x.device)).permute(2, 0, 1)
        outputs = []
        for layer in self.layers:
            x = layer(x, position_bias)
            outputs.append(x)
        return outputs

    def layer_features(self, wav16k: torch.Tensor) -> torch.Tensor:
        """[B, S] mono 16 kHz -> [B, T, L*D]: the output of each of the L layers, concatenated (2 s -> 96 tokens:
        12 time x 8 frequency patches, time-major)."""
        if wav16k.dim() == 1:
            wav16k = wav16k[None]
        return torch.cat(self.layer_outputs(wav16k), dim=-1)

    forward = layer_features


# --- loading --------------------------------------------------------------------------------------------------

_LAYER_KEY = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")


def _effective_pos_conv_weight(sd: dict, path: str) -> torch.Tensor:
    """The positional convolution is weight-normalised over kernel position (dim 2): weight = g * v / |v|."""
    base = "encoder.pos_conv.0."
    pairs = [(base + "weight_g", base + "weight_v"),
             (base + "parametrizations.weight.original0", base + "parametrizations.weight.original1")]
    for g_key, v_key in pairs:
        if g_key in sd and v_key in sd:
            g, v = sd[g_key].double(), sd[v_key].double()
            norm = v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
            return (v * (g / norm)).float()
    if base + "weight" in sd:
        return sd[base + "weight"].float()
    raise UserError(f"{path}: not a BEATs checkpoint (no encoder.pos_conv weights)")


def shape_from_checkpoint(cfg: dict, sd: dict, path: str = "BEATs checkpoint") -> BEATsShape:
    def need(key):
        if key not in sd:
            raise UserError(f"{path}: not a BEATs checkpoint (missing {key})")
        return sd[key]
    patch_w = need("patch_embedding.weight")                                 # [E, 1, P, P]
    embed_dim, patch = patch_w.shape[0], patch_w.shape[-1]
    dim = sd["post_extract_proj.weight"].shape[0] if "post_extract_proj.weight" in sd else embed_dim
    layer_ids = {int(m.group(1)) for m in map(_LAYER_KEY.match, sd) if m}
    if not layer_ids or layer_ids != set(range(max(layer_ids) + 1)):
        raise UserError(f"{path}: not a BEATs checkpoint (no consecutive encoder.layers.N)")
    layers = max(layer_ids) + 1
    ffn = need("encoder.layers.0.fc1.weight").shape[0]
    bias_table = sd.get("encoder.layers.0.self_attn.relative_attention_bias.weight")
    grep_a = sd.get("encoder.layers.0.self_attn.grep_a")
    heads = cfg.get("encoder_attention_heads")
    for tensor, axis in ((grep_a, 1), (bias_table, 1)):
        if tensor is not None:
            if heads is not None and int(heads) != tensor.shape[axis]:
                raise UserError(f"{path}: cfg says {heads} attention heads, the weights have {tensor.shape[axis]}")
            heads = tensor.shape[axis]
    if heads is None:
        raise UserError(f"{path}: cannot tell the number of attention heads (cfg has no encoder_attention_heads)")
    heads = int(heads)
    if dim % heads:
        raise UserError(f"{path}: width {dim} is not divisible by {heads} heads")
    activation = cfg.get("activation_fn", "gelu")
    if activation not in ("gelu", "relu"):
        raise UserError(f"{path}: activation {activation!r} is not supported (gelu or relu)")
    pos_w = _effective_pos_conv_weight(sd, path)                             # [D, D / groups, K]
    if cfg.get("deep_norm") and cfg.get("layer_norm_first"):
        raise UserError(f"{path}: cfg asks for both deep_norm and layer_norm_first")
    return BEATsShape(
        patch=patch, embed_dim=embed_dim, conv_bias="patch_embedding.bias" in sd, dim=dim, layers=layers,
        heads=heads, ffn=ffn, activation=activation, pos_conv_kernel=pos_w.shape[2],
        pos_conv_groups=dim // pos_w.shape[1],
        rel_buckets=0 if bias_table is None else bias_table.shape[0],
        rel_max_distance=int(cfg.get("max_distance", 1280)),
        gated_rel_pos="encoder.layers.0.self_attn.grep_linear.weight" in sd,
        deep_norm=bool(cfg.get("deep_norm", False)), layer_norm_first=bool(cfg.get("layer_norm_first", False)))


def _model_state(sd: dict, shape: BEATsShape, path: str) -> dict:
    """The checkpoint's tensors under this module's names (the classifier head and the bias table's copies in
    layers 1.. are left out: every layer shares layer 0's table)."""
    out = {"encoder_layer_norm.weight": sd.get("encoder.layer_norm.weight"),
           "encoder_layer_norm.bias": sd.get("encoder.layer_norm.bias"),
           "pos_conv.weight": _effective_pos_conv_weight(sd, path),
           "pos_conv.bias": sd.get("encoder.pos_conv.0.bias")}
    for key, value in sd.items():
        if key.startswith(("patch_embedding.", "layer_norm.", "post_extract_proj.")):
            out[key] = value
        m = _LAYER_KEY.match(key)
        if m and not (m.group(2).startswith("self_attn.relative_attention_bias") and m.group(1) != "0"):
            out[f"layers.{m.group(1)}.{m.group(2)}"] = value
    return {k: v for k, v in out.items() if v is not None}


def load_beats(path: str, device="cpu") -> BEATsEncoder:
    """A BEATs checkpoint ({'cfg', 'model'} .pt, loaded as weights only) -> BEATsEncoder in eval mode."""
    if not os.path.isfile(path):
        raise UserError(f"BEATs checkpoint {path} not found; {WHERE_TO_GET}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line for the user
        raise UserError(f"{path}: cannot read it as a BEATs checkpoint ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or not isinstance(ckpt["model"], dict):
        raise UserError(f"{path}: not a BEATs checkpoint (expected a dict with 'cfg' and 'model')")
    cfg = ckpt.get("cfg") or {}
    if not isinstance(cfg, dict):
        cfg = dict(getattr(cfg, "__dict__", {}))
    sd = {k: v for k, v in ckpt["model"].items() if torch.is_tensor(v)}
    shape = shape_from_checkpoint(cfg, sd, path)
    model = BEATsEncoder(shape)
    state = _model_state(sd, shape, path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or wrong:
        what = f"missing {missing[0]}" if missing else f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}"
        raise UserError(f"{path}: not a BEATs checkpoint this loader understands ({what})")
    model.load_state_dict({k: state[k] for k in expected})
    return model.eval().to(device)
