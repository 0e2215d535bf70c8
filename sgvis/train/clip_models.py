"""CLIP towers (frozen image / text encoders) and a small audio encoder trained into CLIP's embedding space.

    towers = load_clip({"path": "models/clip-vit-b32"}, device="cuda")   # a local HF-format CLIP directory
    e_img = towers.encode_image(G(z))                # [B, 3, H, W] in [-1, 1] -> [B, D], differentiable
    e_txt = towers.encode_text(["a stormy sea"])     # [B, D]
    audio = load_audio_encoder("audio-clip.safetensors", embed_dim=towers.embed_dim)
    e_aud = audio(mel_windows)                       # [B, n_mels, window_frames] (Features.mel) -> [B, D]
    loss = clip_loss_av(e_img, e_aud)                # mean(1 - cos): the L_CLIP(a<->v) of sound-guided generation

CLIP comes from HuggingFace `transformers` (OpenAI CLIP or LAION weights in the HF format), always loaded
offline (`local_files_only=True`).  The `clip` config section (a dict) picks the weights:

    path: DIR            a directory written by CLIPModel.save_pretrained (+ the tokenizer / processor files)
    name: REPO_ID        a repository id looked up only in the local HF cache (optionally cache_dir: DIR)
    config: {...}        CLIPConfig keyword arguments: a randomly initialised model (tests, smoke runs), the same
                         in every run (initialised from seed: N, default 0); its tokenizer is the built-in
                         hashing tokenizer described at HashTokenizer
    dtype: float32       (optional) float32 | float16 | bfloat16 for the towers' weights

Other keys in the section (e.g. `prompt`, read by the trainers) are ignored here.

All embeddings are L2-normalised float32.  Images are preprocessed like CLIP's own image processor, but in
torch so that gradients reach the pixels: the short side is resized to the model's input size (bicubic,
antialiased when shrinking), the centre is cropped, [-1, 1] is mapped to [0, 1] and CLIP's mean / std are
applied (read from the directory's preprocessor_config.json when present).

Audio encoder checkpoint: one .safetensors file whose metadata holds format 'sgvis-audio-clip', version,
embed_dim, the mel config (JSON), the channels and head size, plus free-form extra keys.
"""
from __future__ import annotations

import json
import math
import os
import re
import zlib

import torch
import torch.nn.functional as F
from torch import nn

from sgvis.errors import UserError, first_line
from sgvis.features.analysis import MelConfig

__all__ = ["ClipTowers", "load_clip", "HashTokenizer", "AudioClipEncoder", "save_audio_encoder",
           "load_audio_encoder", "clip_loss_av", "info_nce", "ClipLoadError", "AudioEncoderFileError",
           "AudioEncoderMismatch", "FORMAT_TAG", "FORMAT_VERSION", "OPENAI_MEAN", "OPENAI_STD"]

FORMAT_TAG = "sgvis-audio-clip"
FORMAT_VERSION = "1"
DEFAULT_CHANNELS = (32, 64, 128, 256)
DEFAULT_HEAD_HIDDEN = 512
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_LOGIT_SCALE = 100.0
INSTALL_HINT = "CLIP guidance needs transformers: pip install 'sgvis[clip]'"
GET_WEIGHTS_HINT = ("on a machine with network run: python -c \"from transformers import CLIPModel, CLIPProcessor; "
                    "n='openai/clip-vit-base-patch32'; CLIPModel.from_pretrained(n).save_pretrained('DIR'); "
                    "CLIPProcessor.from_pretrained(n).save_pretrained('DIR')\", copy DIR here and set clip.path")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


class ClipLoadError(UserError, ValueError):
    """CLIP could not be loaded (bad clip config, missing weights, missing transformers); one line."""


class AudioEncoderFileError(UserError, ValueError):
    """Not a (readable, supported) sgvis audio-CLIP encoder file; the message is one line."""


class AudioEncoderMismatch(UserError, ValueError):
    """An audio encoder trained for a CLIP model with another embedding size."""


# -- tokenizers ---------------------------------------------------------------------------------------------
class HashTokenizer:
    """Fallback tokenizer for randomly initialised CLIP models (`clip.config`), which come without vocabulary
    files.  Text is lower-cased and split into words (runs of letters / digits / apostrophes) and single
    punctuation marks; each piece becomes the id crc32(piece) mod vocab_size, stepping over the special ids.
    Sequences are [bos] + ids + [eos], truncated to `context_length` and padded with eos, which matches how
    CLIP's text tower pools (at the first eos).  Deterministic across runs and machines; it has no notion of
    sub-words, so it only suits tests and smoke runs, never real CLIP weights."""

    def __init__(self, vocab_size: int, context_length: int, bos_id: int, eos_id: int):
        if vocab_size < 4:
            raise ValueError("HashTokenizer needs vocab_size >= 4")
        self.vocab_size, self.context_length = int(vocab_size), max(int(context_length), 2)
        self.bos_id, self.eos_id = int(bos_id), int(eos_id)
        self.special = {self.bos_id, self.eos_id}

    def piece_id(self, piece: str) -> int:
        i = zlib.crc32(piece.encode("utf-8")) % self.vocab_size
        while i in self.special:
            i = (i + 1) % self.vocab_size
        return i

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (input_ids [B, context_length] int64, attention_mask [B, context_length] int64)."""
        L = self.context_length
        ids = torch.full([len(texts), L], self.eos_id, dtype=torch.long)
        mask = torch.zeros([len(texts), L], dtype=torch.long)
        for row, text in enumerate(texts):
            pieces = re.findall(r"[a-z0-9']+|[^\sa-z0-9']", str(text).lower())
            seq = [self.bos_id] + [self.piece_id(p) for p in pieces][: L - 2] + [self.eos_id]
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        return ids, mask


class _HFTokenizer:
    """A transformers tokenizer, truncating to the text tower's context length."""

    def __init__(self, tok, context_length: int):
        self.tok, self.context_length = tok, int(context_length)

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tok([str(t) for t in texts], padding=True, truncation=True, max_length=self.context_length,
                       return_tensors="pt")
        mask = out.get("attention_mask")
        return out["input_ids"], (mask if mask is not None else torch.ones_like(out["input_ids"]))


def _embedding(out) -> torch.Tensor:
    """get_image_features / get_text_features: a tensor in transformers 4.x, a ModelOutput whose pooler_output
    holds the projected embedding in 5.x."""
    if torch.is_tensor(out):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        for key in ("image_embeds", "text_embeds"):
            pooled = getattr(out, key, None)
            if pooled is not None:
                break
    if pooled is None:
        raise TypeError(f"unexpected CLIP feature output {type(out).__name__}")
    return pooled


# -- CLIP towers --------------------------------------------------------------------------------------------
class ClipTowers(nn.Module):
    """A frozen CLIP model (always in eval mode, no parameter needs grad).  Gradients still flow through
    encode_image to its input, for CLIP guidance of a generator."""

    def __init__(self, model, tokenizer=None, mean=OPENAI_MEAN, std=OPENAI_STD, source: str = "",
                 tokenizer_error: str | None = None):
        super().__init__()
        self.model = model
        cfg = model.config
        self.embed_dim = int(cfg.projection_dim)
        self.image_size = int(cfg.vision_config.image_size)
        self.context_length = int(cfg.text_config.max_position_embeddings)
        self.tokenizer = tokenizer
        self.tokenizer_error = tokenizer_error
        self.source = source
        self.register_buffer("mean", torch.tensor([float(v) for v in mean]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(v) for v in std]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True):
        return super().train(False)              # frozen: stays in eval mode whatever the parent does

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def preprocess(self, img: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> CLIP pixel values [B, 3, S, S] (differentiable)."""
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f"encode_image expects [B, 3, H, W] images in [-1, 1], got {tuple(img.shape)}")
        x = img.to(self.device, torch.float32)
        x = x + (x.clamp(-1, 1) - x).detach()            # clip like an 8-bit frame would, gradients pass through
        S = self.image_size
        H, W = x.shape[-2:]
        if (H, W) != (S, S):
            scale = S / min(H, W)
            nh, nw = max(S, round(H * scale)), max(S, round(W * scale))
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False,
                              antialias=nh < H or nw < W)
            top, left = (nh - S) // 2, (nw - S) // 2
            x = x[:, :, top: top + S, left: left + S]
        x = (x + 1) * 0.5
        return (x - self.mean) / self.std

    def encode_image(self, img: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] (generator output range), any size -> L2-normalised [B, embed_dim] float32."""
        x = self.preprocess(img).to(self.dtype)
        feats = _embedding(self.model.get_image_features(pixel_values=x))
        return F.normalize(feats.float(), dim=-1)

    def encode_text(self, texts: list[str] | str) -> torch.Tensor:
        """Texts -> L2-normalised [B, embed_dim] float32 (truncated to the model's context length)."""
        if isinstance(texts, str):
            texts = [texts]
        if self.tokenizer is None:
            raise ClipLoadError(self.tokenizer_error or "this CLIP model has no tokenizer")
        ids, mask = self.tokenizer(list(texts))
        feats = _embedding(self.model.get_text_features(input_ids=ids.to(self.device),
                                                        attention_mask=mask.to(self.device)))
        return F.normalize(feats.float(), dim=-1)


def _read_preprocessor(directory: str | None) -> tuple[tuple, tuple]:
    """CLIP's image mean / std from preprocessor_config.json when the directory has one, else OpenAI's."""
    if directory:
        p = os.path.join(directory, "preprocessor_config.json")
        try:
            with open(p) as f:
                data = json.load(f)
            mean, std = data.get("image_mean"), data.get("image_std")
            if (isinstance(mean, list) and isinstance(std, list) and len(mean) == 3 and len(std) == 3
                    and all(float(s) > 0 for s in std)):
                return tuple(float(v) for v in mean), tuple(float(v) for v in std)
        except (OSError, ValueError, TypeError):
            pass
    return OPENAI_MEAN, OPENAI_STD


def _quiet_transformers():
    """Keep transformers' info / progress output off the user's terminal while loading."""
    try:
        from transformers.utils import logging as hf_logging
        previous = hf_logging.get_verbosity()
        bars = getattr(hf_logging, "is_progress_bar_enabled", lambda: False)()
        hf_logging.set_verbosity_error()
        if bars:
            hf_logging.disable_progress_bar()

        def restore():
            hf_logging.set_verbosity(previous)
            if bars:
                hf_logging.enable_progress_bar()
        return restore
    except Exception:  # noqa: BLE001 - logging tweaks are optional
        return lambda: None


def _resolve_dtype(cfg: dict) -> torch.dtype:
    name = cfg.get("dtype", "float32")
    if name is None:
        return torch.float32
    if str(name).lower() not in _DTYPES:
        raise ClipLoadError(f"clip.dtype must be one of float32, float16, bfloat16, got {name!r}")
    return _DTYPES[str(name).lower()]


def model_from_config(kwargs, transformers, seed=0) -> tuple:
    if not isinstance(kwargs, dict):
        raise ClipLoadError(f"clip.config must be a mapping of CLIPConfig settings, got {type(kwargs).__name__}")
    kwargs = dict(kwargs)
    text = dict(kwargs.pop("text_config", None) or {})
    vision = dict(kwargs.pop("vision_config", None) or {})
    try:
        probe = transformers.CLIPTextConfig(**text)
        vocab = int(probe.vocab_size)
        # The stock special ids (49406 / 49407) do not exist in a small vocabulary: use the last two ids.
        if not 0 <= int(probe.eos_token_id if probe.eos_token_id is not None else -1) < vocab:
            text["eos_token_id"] = vocab - 1
        if not 0 <= int(probe.bos_token_id if probe.bos_token_id is not None else -1) < vocab:
            text["bos_token_id"] = vocab - 2
        if probe.pad_token_id is not None and not 0 <= int(probe.pad_token_id) < vocab:
            text["pad_token_id"] = text.get("eos_token_id", probe.eos_token_id)
        config = transformers.CLIPConfig(text_config=text, vision_config=vision, **kwargs)
        with torch.random.fork_rng(devices=[]):          # the same towers in every run (resume, tests)
            torch.manual_seed(int(seed))
            model = transformers.CLIPModel(config)
    except Exception as e:  # noqa: BLE001 - transformers raises its own validation errors
        raise ClipLoadError(f"clip.config is not a valid CLIPConfig ({first_line(e, 200)})") from None
    tc = config.text_config
    tok = HashTokenizer(tc.vocab_size, tc.max_position_embeddings, tc.bos_token_id, tc.eos_token_id)
    return model, tok, None, "random CLIP (clip.config)"


TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))


def _load_tokenizer(transformers, where: str, directory: str | None, context_length: int, **kw):
    """(tokenizer, None) or (None, why not): a CLIP without tokenizer files can still encode images."""
    hint = "save the CLIPProcessor or tokenizer into the same directory to encode text"
    if directory is not None and not any(all(os.path.isfile(os.path.join(directory, f)) for f in group)
                                         for group in TOKENIZER_FILES):
        return None, f"CLIP {where} has no tokenizer files (tokenizer.json or vocab.json + merges.txt); {hint}"
    try:
        tok = transformers.AutoTokenizer.from_pretrained(where, local_files_only=True, **kw)
    except Exception as e:  # noqa: BLE001 - absent / broken tokenizer files: text encoding is unavailable
        return None, f"CLIP {where} has no usable tokenizer ({first_line(e, 200)}); {hint}"
    if len(tok) < 3:                       # transformers 5 builds an empty tokenizer when files are missing
        return None, f"CLIP {where} has an empty tokenizer; {hint}"
    return _HFTokenizer(tok, context_length), None


def load_clip(cfg: dict, device="cpu") -> ClipTowers:
    """The frozen CLIP towers for a `clip` config section (see the module docstring).  Never uses the network;
    every problem is a one-line ClipLoadError (a UserError)."""
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise ClipLoadError(f"the clip config must be a mapping (path: DIR | name: REPO_ID | config: {{...}}), "
                            f"got {type(cfg).__name__}")
    try:
        import transformers
    except ImportError:
        raise ClipLoadError(INSTALL_HINT) from None
    dtype = _resolve_dtype(cfg)
    path, name, config = cfg.get("path"), cfg.get("name"), cfg.get("config")
    chosen = [k for k, v in (("path", path), ("name", name), ("config", config)) if v not in (None, "")]
    if not chosen:
        raise ClipLoadError("no CLIP model configured: set clip.path (a local HF-format CLIP directory), "
                            "clip.name (a repository id in the local HF cache) or clip.config; " + GET_WEIGHTS_HINT)
    if len(chosen) > 1:
        raise ClipLoadError(f"set only one of clip.path, clip.name, clip.config (got {', '.join(chosen)})")
    restore = _quiet_transformers()
    try:
        if config is not None:
            seed = cfg.get("seed") or 0
            if not isinstance(seed, int) or isinstance(seed, bool):
                raise ClipLoadError(f"clip.seed must be an integer, got {seed!r}")
            model, tok, tok_err, source = model_from_config(config, transformers, seed)
            mean, std = OPENAI_MEAN, OPENAI_STD
        else:
            model, tok, tok_err, source, mean, std = _load_pretrained(transformers, path, name, cfg)
    finally:
        restore()
    try:
        model = model.to(device=device, dtype=dtype)
    except (RuntimeError, ValueError, AssertionError) as e:
        raise ClipLoadError(f"cannot move CLIP to device {device!r} ({first_line(e, 200)})") from None
    towers = ClipTowers(model, tok, mean, std, source=source, tokenizer_error=tok_err)
    return towers.to(device)


def _load_pretrained(transformers, path, name, cfg) -> tuple:
    kw = {}
    if path not in (None, ""):
        if not isinstance(path, (str, os.PathLike)):
            raise ClipLoadError(f"clip.path must be a directory name, got {type(path).__name__}")
        where = os.path.expanduser(os.fspath(path))
        label = f"clip.path {where}"
        if not os.path.isdir(where):
            raise ClipLoadError(f"{label}: no such directory; to get CLIP weights {GET_WEIGHTS_HINT}")
        if not os.path.isfile(os.path.join(where, "config.json")):
            raise ClipLoadError(f"{label}: no config.json, not a HuggingFace model directory; to get CLIP weights "
                                f"{GET_WEIGHTS_HINT}")
        directory = where
    else:
        if not isinstance(name, str):
            raise ClipLoadError(f"clip.name must be a repository id such as openai/clip-vit-base-patch32, got "
                                f"{type(name).__name__}")
        where, label, directory = name, f"clip.name {name}", None
        cache_dir = cfg.get("cache_dir")
        if cache_dir not in (None, ""):
            if not isinstance(cache_dir, (str, os.PathLike)):
                raise ClipLoadError(f"clip.cache_dir must be a directory name, got {type(cache_dir).__name__}")
            cache_dir = os.path.expanduser(os.fspath(cache_dir))
            if not os.path.isdir(cache_dir):
                raise ClipLoadError(f"clip.cache_dir {cache_dir}: no such directory")
            kw["cache_dir"] = cache_dir
    try:
        config = transformers.AutoConfig.from_pretrained(where, local_files_only=True, **kw)
    except Exception as e:  # noqa: BLE001 - not cached / unreadable: one line, never a traceback
        if directory is None:
            where_cache = kw.get("cache_dir") or "the HuggingFace cache (HF_HOME)"
            raise ClipLoadError(f"{label}: not found in {where_cache} (sgvis never downloads); "
                                f"{GET_WEIGHTS_HINT}") from None
        raise ClipLoadError(f"{label}: unreadable config.json ({first_line(e, 200)}); {GET_WEIGHTS_HINT}") from None
    if getattr(config, "model_type", None) != "clip":
        raise ClipLoadError(f"{label} is a {getattr(config, 'model_type', 'unknown')!r} model, not CLIP "
                            f"(model_type 'clip')")
    try:
        model = transformers.CLIPModel.from_pretrained(where, local_files_only=True, **kw)
    except Exception as e:  # noqa: BLE001 - missing / truncated weights
        raise ClipLoadError(f"{label}: cannot load the CLIP weights ({first_line(e, 200)}); {GET_WEIGHTS_HINT}") from None
    if directory is None:
        try:
            from huggingface_hub import snapshot_download
            directory = snapshot_download(name, local_files_only=True, **kw)
        except Exception:  # noqa: BLE001 - only for the preprocessor settings
            directory = None
    tok, tok_err = _load_tokenizer(transformers, where, directory, model.config.text_config.max_position_embeddings,
                                   **kw)
    mean, std = _read_preprocessor(directory)
    return model, tok, tok_err, label.split(" ", 1)[1], mean, std


# -- the audio encoder --------------------------------------------------------------------------------------
class AudioClipEncoder(nn.Module):
    """Log-mel window [B, n_mels, window_frames] (natural-log mel power, as Features.mel) -> L2-normalised
    [B, embed_dim] in CLIP's embedding space.

    Conv blocks (3x3 conv, GroupNorm, LeakyReLU, then a stride-2 3x3 conv halving both axes), global average
    pooling and a two-layer head.  Inputs are standardised with the buffers in_mean / in_std (training sets
    them from its data).  logit_scale is the learnable log temperature of the contrastive loss (CLIP's init
    log(1/0.07)); `scale()` gives exp(logit_scale) clamped at 100."""

    def __init__(self, embed_dim: int, mel: MelConfig = MelConfig(), channels=DEFAULT_CHANNELS,
                 head_hidden: int = DEFAULT_HEAD_HIDDEN):
        super().__init__()
        if isinstance(mel, dict):
            mel = MelConfig(**mel)
        self.embed_dim = int(embed_dim)
        self.mel_config = mel
        self.channels = tuple(int(c) for c in channels)
        self.head_hidden = int(head_hidden)
        if self.embed_dim < 1 or not self.channels or min(self.channels) < 1 or self.head_hidden < 1:
            raise ValueError("AudioClipEncoder needs embed_dim, channels and head_hidden >= 1")
        self.register_buffer("in_mean", torch.tensor(-6.0))
        self.register_buffer("in_std", torch.tensor(4.0))
        blocks = []
        cin = 1
        for ch in self.channels:
            g = math.gcd(8, ch)
            blocks += [nn.Conv2d(cin, ch, 3, padding=1), nn.GroupNorm(g, ch), nn.LeakyReLU(0.2),
                       nn.Conv2d(ch, ch, 3, stride=2, padding=1), nn.GroupNorm(g, ch), nn.LeakyReLU(0.2)]
            cin = ch
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Linear(cin, self.head_hidden), nn.LeakyReLU(0.2),
                                  nn.Linear(self.head_hidden, self.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def config(self) -> dict:
        return dict(embed_dim=self.embed_dim, mel_config=self.mel_config.to_dict(), channels=list(self.channels),
                    head_hidden=self.head_hidden)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        n_mels = self.mel_config.n_mels
        if mel.ndim == 2:
            mel = mel[None]
        if mel.ndim != 3 or mel.shape[1] != n_mels:
            raise ValueError(f"mel must have shape [B, {n_mels}, frames], got {tuple(mel.shape)}")
        x = (mel.to(self.in_mean.device, torch.float32) - self.in_mean) / self.in_std
        x = self.features(x[:, None])
        x = self.head(x.mean(dim=(2, 3)))
        return F.normalize(x.float(), dim=-1)


def save_audio_encoder(enc: AudioClipEncoder, path: str, extra: dict | None = None) -> None:
    """Write `enc` atomically as one .safetensors file with its architecture in the metadata."""
    from safetensors.torch import save_file

    from stylegan.atomic import write_atomically
    cfg = enc.config()
    meta = {"format": FORMAT_TAG, "version": FORMAT_VERSION, "embed_dim": str(cfg["embed_dim"]),
            "mel_config": json.dumps(cfg["mel_config"]), "channels": json.dumps(cfg["channels"]),
            "head_hidden": str(cfg["head_hidden"])}
    for k, v in (extra or {}).items():
        if str(k) not in meta:
            meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in enc.state_dict().items()}
    write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=meta), suffix=".safetensors.tmp")


def read_audio_encoder_metadata(path: str) -> dict:
    """The metadata of an audio encoder file (format checked); one-line AudioEncoderFileError otherwise."""
    meta, _ = _read_file(path, tensors=False)
    return meta


def _read_file(path: str, tensors: bool = True):
    from safetensors import safe_open
    if not os.path.isfile(path):
        raise AudioEncoderFileError(f"audio encoder not found: {path}")
    try:
        with safe_open(path, framework="pt") as f:
            meta = dict(f.metadata() or {})
            data = {k: f.get_tensor(k) for k in f.keys()} if tensors else None
    except Exception as e:  # noqa: BLE001 - truncated / foreign files
        raise AudioEncoderFileError(f"{path} is not an audio encoder (not a readable .safetensors file: "
                                    f"{first_line(e, 200)})") from None
    fmt = meta.get("format")
    if fmt != FORMAT_TAG:
        what = f"format {fmt!r}" if fmt else "no sgvis metadata"
        raise AudioEncoderFileError(f"{path} is not an sgvis audio-CLIP encoder ({what})")
    if meta.get("version") != FORMAT_VERSION:
        raise AudioEncoderFileError(f"{path}: audio encoder version {meta.get('version')} is not supported by this "
                                    f"sgvis (expects {FORMAT_VERSION})")
    return meta, data


def load_audio_encoder(path: str, device="cpu", embed_dim: int | None = None) -> AudioClipEncoder:
    """Read an audio encoder (eval mode, frozen).  With `embed_dim` (the CLIP model in use), check that it
    fits; every problem is a one-line UserError."""
    meta, tensors = _read_file(path)
    try:
        dim = int(meta["embed_dim"])
        mel = MelConfig(**json.loads(meta["mel_config"]))
        channels = tuple(int(c) for c in json.loads(meta["channels"]))
        head_hidden = int(meta.get("head_hidden", DEFAULT_HEAD_HIDDEN))
    except (KeyError, TypeError, ValueError) as e:
        raise AudioEncoderFileError(f"{path}: the audio encoder metadata is invalid ({first_line(e, 200)})") from None
    if embed_dim is not None and int(embed_dim) != dim:
        raise AudioEncoderMismatch(f"audio encoder {os.path.basename(path)} was trained for CLIP embeddings of size "
                                   f"{dim}; the CLIP model in use has {int(embed_dim)} (train one with "
                                   f"'sgvis train-audio-clip' for this CLIP model)")
    try:
        enc = AudioClipEncoder(dim, mel, channels, head_hidden)
        missing, unexpected = enc.load_state_dict(tensors, strict=False)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise AudioEncoderFileError(f"{path}: the weights do not match the stored architecture "
                                    f"({first_line(e, 200)})") from None
    if missing or unexpected:
        raise AudioEncoderFileError(f"{path}: the weights do not match the stored architecture "
                                    f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)")
    return enc.to(device).eval().requires_grad_(False)


# -- losses -------------------------------------------------------------------------------------------------
def clip_loss_av(image_emb: torch.Tensor, audio_emb: torch.Tensor) -> torch.Tensor:
    """L_CLIP(a<->v) = mean over the batch of 1 - cos(image, audio).  Either side may be a single [D] / [1, D]
    embedding (broadcast)."""
    a = F.normalize(image_emb.float(), dim=-1)
    b = F.normalize(audio_emb.float(), dim=-1)
    return (1 - (a * b).sum(dim=-1)).mean()


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric contrastive loss over a batch (CLIP style): row i of `a` and row i of `b` are a positive pair,
    every other row a negative.  `logit_scale` is the log of the logit multiplier (AudioClipEncoder.logit_scale;
    a tensor or float), used as exp(logit_scale) clamped at 100.  With integer `labels` [B], rows sharing a label
    all count as positives (targets spread evenly over them), e.g. audio <-> label-text pairs where several
    clips have the same label."""
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"info_nce needs two [B, D] batches of the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    scale = torch.as_tensor(logit_scale, dtype=torch.float32, device=a.device).exp().clamp(max=MAX_LOGIT_SCALE)
    logits = scale * a @ b.t()
    n = a.shape[0]
    if labels is None:
        target = torch.arange(n, device=a.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    labels = labels.to(a.device).view(-1)
    pos = (labels[:, None] == labels[None, :]).float()
    pos = pos / pos.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, pos) + F.cross_entropy(logits.t(), pos))
