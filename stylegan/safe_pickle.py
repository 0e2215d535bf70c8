"""An allow-list unpickler for network pickles that never runs code from the file.

NVIDIA's pickles store each network as a "persistent object": a reduce call to
`torch_utils.persistence._reconstruct_persistent_obj(meta)` whose `meta` carries the full source of
the defining module (`module_src`), which NVIDIA's own loader executes.  Here that call only returns
the `meta` record as data; `module_src` is never executed or compiled.  TensorFlow-era pickles store
`dnnlib.tflib.network.Network` objects, which become inert records of their state.  Any global outside
the allow-list (e.g. `os.system`) stops the load before anything is called.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
from typing import Any

import numpy as np
import torch

try:
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for a global that a checkpoint never needs."""


class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict: a dict whose keys are also attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


class PersistentRecord:
    """What a persistent network object unpickles to: its class name and module state, as data."""

    def __init__(self, meta: dict):
        if not isinstance(meta, dict) or "class_name" not in meta or "state" not in meta:
            raise pickle.UnpicklingError("malformed persistent-object record")
        self.meta = meta

    @property
    def class_name(self) -> str:
        return str(self.meta["class_name"])

    @property
    def module_src(self) -> str:
        return str(self.meta.get("module_src") or "")

    @property
    def state(self) -> dict:
        return self.meta["state"]

    def children(self) -> dict[str, "PersistentRecord"]:
        return {k: v for k, v in (self.state.get("_modules") or {}).items() if isinstance(v, PersistentRecord)}

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Parameters and buffers of this record and its children, keyed like a state_dict."""
        out: dict[str, torch.Tensor] = {}
        for group in ("_parameters", "_buffers"):
            for name, value in (self.state.get(group) or {}).items():
                if value is not None:
                    out[prefix + name] = value.detach() if isinstance(value, torch.Tensor) else value
        for name, child in (self.state.get("_modules") or {}).items():
            if isinstance(child, PersistentRecord):
                out.update(child.tensors(prefix + name + "."))
        return out

    def __repr__(self) -> str:
        return f"PersistentRecord({self.class_name})"


class TFNetworkRecord:
    """Inert stand-in for dnnlib.tflib.network.Network: keeps the pickled state as data."""

    def __setstate__(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("malformed TensorFlow network record")
        self.state = state

    @property
    def variables(self) -> list:
        return list(self.state.get("variables") or [])

    @property
    def components(self) -> dict:
        return dict(self.state.get("components") or {})

    @property
    def static_kwargs(self) -> dict:
        return dict(self.state.get("static_kwargs") or {})


def _load_storage_bytes(data: bytes):
    # Each tensor storage is a small legacy torch.save blob; read it with torch's own weights-only
    # unpickler instead of the unrestricted loader the pickle names.
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentRecord,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("dnnlib.tflib.network", "Network"): TFNetworkRecord,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("_codecs", "encode"): lambda s, enc="latin1": s.encode(enc),
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("torch", "Size"): torch.Size,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    # Old and new numpy name the same array/scalar rebuilders differently.
    _ALLOWED[(_module, "_reconstruct")] = _multiarray._reconstruct
    _ALLOWED[(_module, "scalar")] = _multiarray.scalar


class OversizedArrayError(pickle.UnpicklingError):
    """The pickle asked numpy for an array larger than the file could hold the data of."""

    def __init__(self, nbytes: int, limit: int):
        super().__init__(f"it asks for a {nbytes:,}-byte array, more than the whole file ({limit:,} bytes) holds")
        self.nbytes, self.limit = nbytes, limit


def _requested_bytes(shape, dtype) -> int | None:
    """Bytes numpy would allocate for an array of `shape` and `dtype` (None when numpy would reject them anyway).
    Python integers, so a product of huge dimensions cannot overflow."""
    try:
        dims = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
        itemsize = np.dtype(dtype).itemsize
    except (TypeError, ValueError, OverflowError):
        return None
    total = max(itemsize, 1)
    for d in dims:
        total *= max(d, 0)
    return total


class SafeUnpickler(pickle.Unpickler):
    """Globals from the allow-list only, and arrays bounded by the file: the numpy constructors the list allows
    (ndarray, _reconstruct) allocate uninitialised memory of any shape, so a tiny pickle could ask for terabytes.
    Real checkpoints fill every array from bytes stored in the file, so no array they create is larger than it."""

    def __init__(self, fileobj, max_array_bytes: int | None = None):
        super().__init__(fileobj)
        self.max_array_bytes = _file_size(fileobj) if max_array_bytes is None else max_array_bytes

    def _check(self, shape, dtype) -> None:
        nbytes = _requested_bytes(shape, dtype)
        if nbytes is not None and self.max_array_bytes is not None and nbytes > max(self.max_array_bytes, 4096):
            raise OversizedArrayError(nbytes, self.max_array_bytes)

    def find_class(self, module: str, name: str) -> Any:
        try:
            found = _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"{module}.{name}") from None
        if found is np.ndarray:
            return self._ndarray
        if found is _multiarray._reconstruct:
            return self._reconstruct
        return found

    def _ndarray(self, shape, dtype=float, buffer=None, *args, **kwargs):
        if buffer is None:
            self._check(shape, dtype)
        return np.ndarray(shape, dtype, buffer, *args, **kwargs)

    def _reconstruct(self, subtype, shape, dtype):
        if subtype == self._ndarray:            # the GLOBAL numpy.ndarray this unpickler hands out
            subtype = np.ndarray
        self._check(shape, dtype)
        return _multiarray._reconstruct(subtype, shape, dtype)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("unexpected persistent id in a network pickle")


def _file_size(fileobj) -> int | None:
    try:
        return os.fstat(fileobj.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        pass
    try:
        here = fileobj.tell()
        size = fileobj.seek(0, io.SEEK_END)
        fileobj.seek(here)
        return size
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


def safe_load(fileobj) -> Any:
    """Unpickle a network pickle with the allow-list.  Raises UnsafePickleError naming the global
    the file asked for when it is not allowed, and OversizedArrayError for an array larger than the file."""
    return SafeUnpickler(fileobj).load()
