"""sgvis's own checkpoint format: one .safetensors file holding the weights, with the architecture as
JSON in its metadata.  Loading reads no pickle at all and memory-maps the tensors."""
from __future__ import annotations

import json

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from stylegan.atomic import write_atomically
from stylegan.errors import CheckpointError
from stylegan.formats.common import load_weights
from stylegan.generator import Generator

FORMAT_TAG = "sgvis-generator"
FORMAT_VERSION = "1"


def save(G: Generator, path: str, extra: dict | None = None) -> None:
    """Write `G` atomically (temp file + rename)."""
    meta = {"format": FORMAT_TAG, "version": FORMAT_VERSION, "config": json.dumps(G.config)}
    for k, v in (extra or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in G.state_dict().items()}
    write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=meta), suffix=".safetensors.tmp")


def read_metadata(path: str) -> dict:
    with safe_open(path, framework="pt") as f:
        return dict(f.metadata() or {})


def is_native(path: str) -> bool:
    try:
        return read_metadata(path).get("format") == FORMAT_TAG
    except Exception:
        return False


def load_generator(path: str) -> Generator:
    meta = read_metadata(path)
    if meta.get("format") != FORMAT_TAG:
        raise CheckpointError(f"{path}: a safetensors file, but not an sgvis generator (no architecture metadata)")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: sgvis generator format version {meta.get('version')} is not supported by "
                              f"this sgvis (expects {FORMAT_VERSION}); upgrade sgvis")
    try:
        config = json.loads(meta["config"])
        G = Generator(**config)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: the architecture metadata is invalid ({e})") from None
    with safe_open(path, framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    load_weights(G, tensors, path, "generator")
    return G.eval().requires_grad_(False)
