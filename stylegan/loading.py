"""`stylegan.load(path)`: detect a checkpoint's format by its content and return the generator."""
from __future__ import annotations

import argparse
import os
import pickle
import stat
import struct
import time
import zipfile
from dataclasses import dataclass

import torch

from stylegan.errors import CheckpointError
from stylegan.formats import native, nvidia, rosinality, tensorflow
from stylegan.generator import Generator
from stylegan.safe_pickle import OversizedArrayError, UnsafePickleError, safe_load

FORMAT_NAMES = {
    "sgvis": "sgvis safetensors",
    "nvidia": "NVIDIA network pickle",
    "tensorflow": "TensorFlow StyleGAN2 pickle",
    "rosinality": "rosinality stylegan2-pytorch checkpoint",
}


@dataclass
class LoadedCheckpoint:
    path: str
    format: str           # key of FORMAT_NAMES
    description: str      # human-readable, e.g. "NVIDIA stylegan3 pickle"
    data: object          # the parsed container (records / state dicts), or None for sgvis files


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise CheckpointError(f"{path}: not a regular file (a FIFO, device or socket); give a checkpoint file")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: the file is empty")


def _looks_like_safetensors(head: bytes) -> bool:
    # 8-byte little-endian JSON header length, then the JSON header itself.
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 0 < n < 100_000_000 and head[8:9] == b"{"


def _torch_load(path: str):
    # Weights-only loading; rosinality's train.py snapshots also store their argparse.Namespace.
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: str) -> LoadedCheckpoint:
    """Parse a checkpoint file without executing anything from it."""
    path = os.fspath(path)
    _check_file(path)
    with open(path, "rb") as f:
        head = f.read(16)
    try:
        if _looks_like_safetensors(head):
            try:
                meta = native.read_metadata(path)
            except Exception as e:
                raise CheckpointError(f"{path}: the safetensors file is truncated or corrupt "
                                      f"({str(e).splitlines()[0][:120]})") from None
            if meta.get("format") != native.FORMAT_TAG:
                raise CheckpointError(f"{path}: a safetensors file without sgvis architecture metadata; "
                                      f"convert the original checkpoint with 'sgvis convert'")
            return LoadedCheckpoint(path, "sgvis", "sgvis safetensors", None)
        if head[:4] == b"PK\x03\x04":
            if not zipfile.is_zipfile(path):
                raise CheckpointError(f"{path}: the zip container is truncated or corrupt")
            data = _torch_load(path)
        elif head[:1] == b"\x80":
            with open(path, "rb") as f:
                data = safe_load(f)
            if isinstance(data, int) and data == 0x1950A86A20F9469CFC6C:  # legacy (pre-zip) torch.save file
                data = _torch_load(path)
        else:
            raise CheckpointError(f"{path}: not a StyleGAN checkpoint (unrecognised content; expected a network "
                                  f"pickle, a PyTorch .pt file or an sgvis .safetensors file)")
    except UnsafePickleError as e:
        raise CheckpointError(f"{path}: refused to load: the pickle asks to call {e}, which a StyleGAN checkpoint "
                              f"never needs (nothing from the file was run)") from None
    except OversizedArrayError as e:
        raise CheckpointError(f"{path}: refused to load: {e}; not a real checkpoint (nothing was allocated)") \
            from None
    except (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, ValueError, struct.error,
            IndexError, TypeError, AttributeError, KeyError) as e:
        if isinstance(e, CheckpointError):
            raise
        if "Weights only load failed" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(f"{path}: refused to load: it holds objects sgvis does not load (only plain "
                                  f"weights and settings are read from .pt files; nothing from the file was run)") \
                from None
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: the file is truncated or corrupt ({detail[:160]})") from None
    if nvidia.is_nvidia_pickle(data):
        return LoadedCheckpoint(path, "nvidia", nvidia.describe(data), data)
    if tensorflow.is_tf_pickle(data):
        return LoadedCheckpoint(path, "tensorflow", FORMAT_NAMES["tensorflow"], data)
    if rosinality.is_rosinality(data):
        return LoadedCheckpoint(path, "rosinality", FORMAT_NAMES["rosinality"], data)
    if isinstance(data, dict) and "G_ema" in data:
        raise CheckpointError(f"{path}: G_ema is not a supported network object")
    raise CheckpointError(f"{path}: not a StyleGAN checkpoint sgvis knows (no G_ema, Gs or g_ema generator inside)")


def generator_from_checkpoint(ckpt: LoadedCheckpoint) -> Generator:
    if ckpt.format == "sgvis":
        return native.load_generator(ckpt.path)
    loader = {"nvidia": nvidia.load_generator, "tensorflow": tensorflow.load_generator,
              "rosinality": rosinality.load_generator}[ckpt.format]
    return loader(ckpt.data, ckpt.path)


def load(path, device: str | torch.device | None = "cpu") -> Generator:
    """Load the generator (G_ema / Gs / g_ema) of any supported checkpoint, in eval mode, on `device`."""
    start = time.perf_counter()
    ckpt = read_checkpoint(path)
    G = generator_from_checkpoint(ckpt)
    G.source = {"path": os.fspath(path), "format": ckpt.format, "description": ckpt.description,
                "load_seconds": time.perf_counter() - start}
    return G.to(device) if device is not None else G


def load_discriminator(path, device: str | torch.device | None = "cpu"):
    """The discriminator `D` of an NVIDIA network pickle (for training and fine-tuning)."""
    ckpt = read_checkpoint(path)
    if ckpt.format != "nvidia" or ckpt.data.get("D") is None:
        raise CheckpointError(f"{path}: holds no NVIDIA discriminator (D)")
    D = nvidia.discriminator_from_record(ckpt.data["D"], os.fspath(path))
    return D.to(device) if device is not None else D
