"""CUDA -> OpenGL hand-off for the live window.

A frame that is already on the GPU (a torch CUDA tensor, [H, W, C]) is copied into an OpenGL texture or
pixel buffer that moderngl created, without a round trip through host memory: the GL object is registered
with CUDA graphics interop once (cudaGraphicsGLRegisterImage / cudaGraphicsGLRegisterBuffer), and every
frame is a map (cudaGraphicsMapResources), a device-to-device copy from the tensor on torch's current
stream (cudaMemcpy2DToArrayAsync into the texture's array, or cudaMemcpyAsync to the buffer's pointer from
cudaGraphicsResourceGetMappedPointer), and an unmap, which orders the copy before GL's next use of the
object.  Anything else (a CPU tensor, no GPU, interop refused by the driver, e.g. a GL context on another
GPU or a software renderer) takes the host-copy path: tensor -> host bytes -> ``target.write``.

The CUDA runtime is called through ctypes (the libcudart that torch loaded), so nothing is compiled and no
OpenGL headers are needed.  Requirements for interop: the GL context is current on the calling thread and
lives on the same GPU as the tensor; textures have 1, 2 or 4 components (CUDA cannot map 3-component
textures: 3-channel frames get an opaque alpha channel on the GPU before the copy).

    up = GLFrameUploader(texture)          # moderngl.Texture (or moderngl.Buffer, e.g. a PBO)
    up.upload(frame)                       # uint8 [H, W, 3|4] (or float32 / float16 to match the texture)
    print(up.path, up.reason)              # 'cuda-gl interop' | 'host copy', and why
    up.release()                           # before the GL object is destroyed

Rows are written in the tensor's order (row 0 first) on both paths, so both look the same on screen.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import logging
import os
import warnings

import torch

logger = logging.getLogger("sgvis.cuda_ops")

GL_TEXTURE_2D = 0x0DE1
_REGISTER_WRITE_DISCARD = 2     # cudaGraphicsRegisterFlagsWriteDiscard
_MEMCPY_DEVICE_TO_DEVICE = 3    # cudaMemcpyDeviceToDevice
_DTYPES = {"f1": torch.uint8, "f2": torch.float16, "f4": torch.float32}

PATH_INTEROP = "cuda-gl interop"
PATH_HOST = "host copy"


class InteropUnavailable(RuntimeError):
    """CUDA-GL interop cannot be used (the message says why)."""


# ---------------------------------------------------------------------------------------------------------
# The CUDA runtime through ctypes

_SIGNATURES = {
    "cudaGetErrorString": (ctypes.c_char_p, [ctypes.c_int]),
    "cudaGetDeviceCount": (ctypes.c_int, [ctypes.POINTER(ctypes.c_int)]),
    "cudaGraphicsGLRegisterBuffer": (ctypes.c_int, [ctypes.POINTER(ctypes.c_void_p), ctypes.c_uint, ctypes.c_uint]),
    "cudaGraphicsGLRegisterImage": (ctypes.c_int, [ctypes.POINTER(ctypes.c_void_p), ctypes.c_uint, ctypes.c_uint,
                                                   ctypes.c_uint]),
    "cudaGraphicsUnregisterResource": (ctypes.c_int, [ctypes.c_void_p]),
    "cudaGraphicsMapResources": (ctypes.c_int, [ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p]),
    "cudaGraphicsUnmapResources": (ctypes.c_int, [ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p]),
    "cudaGraphicsResourceGetMappedPointer": (ctypes.c_int, [ctypes.POINTER(ctypes.c_void_p),
                                                            ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p]),
    "cudaGraphicsSubResourceGetMappedArray": (ctypes.c_int, [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p,
                                                             ctypes.c_uint, ctypes.c_uint]),
    "cudaMemcpyAsync": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                                       ctypes.c_void_p]),
    "cudaMemcpy2DToArrayAsync": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p,
                                                ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int,
                                                ctypes.c_void_p]),
}

_runtime = None
_runtime_error: str | None = None


def _cudart_candidates() -> list[str]:
    found = []
    try:  # the runtime torch itself loaded: same instance, same context bookkeeping
        with open("/proc/self/maps") as fh:
            for line in fh:
                path = line.split()[-1] if line.strip() else ""
                if "libcudart" in os.path.basename(path) and path not in found:
                    found.append(path)
    except OSError:
        pass
    torch_lib = os.path.dirname(os.path.dirname(torch.__file__))
    found += sorted(glob.glob(os.path.join(torch_lib, "nvidia", "*", "lib", "libcudart.so*")))
    name = ctypes.util.find_library("cudart")
    if name:
        found.append(name)
    from cuda_ops import _build
    home = _build.cuda_home()
    if home:
        found += sorted(glob.glob(os.path.join(home, "lib64", "libcudart.so*")))
    return found


def cuda_runtime():
    """The CUDA runtime library with the interop functions typed; raises InteropUnavailable."""
    global _runtime, _runtime_error
    if _runtime is not None:
        return _runtime
    if _runtime_error is not None:
        raise InteropUnavailable(_runtime_error)
    errors = []
    for path in _cudart_candidates():
        try:
            lib = ctypes.CDLL(path)
            for fn, (restype, argtypes) in _SIGNATURES.items():
                f = getattr(lib, fn)
                f.restype, f.argtypes = restype, argtypes
        except (OSError, AttributeError) as e:
            errors.append(f"{path}: {e}")
            continue
        _runtime = lib
        return lib
    _runtime_error = "no usable CUDA runtime library (libcudart) found" + (f": {'; '.join(errors)}" if errors else "")
    raise InteropUnavailable(_runtime_error)


def _check(code: int, what: str):
    if code != 0:
        msg = cuda_runtime().cudaGetErrorString(code)
        raise InteropUnavailable(f"{what} failed: {msg.decode() if msg else code} (cudaError {code})")


def interop_status() -> dict:
    """For `sgvis doctor`: can frames go to GL without a host copy here?"""
    if torch.version.cuda is None or not torch.cuda.is_available():
        return dict(available=False, reason="no CUDA GPU: frames reach OpenGL by host copy")
    try:
        rt = cuda_runtime()
        n = ctypes.c_int(0)
        _check(rt.cudaGetDeviceCount(ctypes.byref(n)), "cudaGetDeviceCount")
    except InteropUnavailable as e:
        return dict(available=False, reason=str(e))
    return dict(available=True, reason=f"CUDA runtime loaded, {n.value} device(s); interop is tried when the live "
                                       f"window opens (needs its GL context on the same GPU)")


# ---------------------------------------------------------------------------------------------------------
# Uploader

class GLFrameUploader:
    """Copies frames into a moderngl Texture (2-D) or Buffer; see the module docstring.

    mode: 'auto' (interop for CUDA tensors when it works, host copy otherwise; a failure switches to host
    copies for good with one warning), 'interop' (raise instead of falling back) or 'host'.
    """

    def __init__(self, target, mode: str = "auto"):
        if mode not in ("auto", "interop", "host"):
            raise ValueError(f"mode must be 'auto', 'interop' or 'host', got {mode!r}")
        self.target = target
        self.mode = mode
        self.is_texture = hasattr(target, "components")
        self.path: str | None = None
        self.reason: str | None = "host copies requested" if mode == "host" else None
        self._resource = None
        self._disabled = mode == "host"
        self.uploads = {PATH_INTEROP: 0, PATH_HOST: 0}

    # -- shape handling ------------------------------------------------------------------------------

    def _expected(self):
        """(height, width, components, torch dtype) for a texture; None for a buffer."""
        if not self.is_texture:
            return None
        w, h = self.target.size
        return h, w, int(self.target.components), _DTYPES.get(getattr(self.target, "dtype", "f1"), torch.uint8)

    def prepare(self, frame: torch.Tensor) -> torch.Tensor:
        """The frame as the bytes the target wants: contiguous, dtype checked, alpha added for 3 -> 4."""
        if frame.ndim == 2:
            frame = frame[:, :, None]
        if frame.ndim != 3:
            raise ValueError(f"frames must be [H, W, C], got {tuple(frame.shape)}")
        exp = self._expected()
        if exp is not None:
            h, w, comps, dtype = exp
            if frame.dtype != dtype:
                raise ValueError(f"frame dtype {frame.dtype} does not match the texture's {dtype}")
            if frame.shape[2] == 3 and comps == 4:
                alpha = 255 if dtype == torch.uint8 else 1.0
                frame = torch.nn.functional.pad(frame, (0, 1), value=alpha)
            if tuple(frame.shape) != (h, w, comps):
                raise ValueError(f"frame of shape {tuple(frame.shape)} does not fit a {w}x{h} texture with {comps} "
                                 f"components")
        return frame.detach().contiguous()

    # -- paths ---------------------------------------------------------------------------------------

    def upload(self, frame: torch.Tensor) -> str:
        """Copy one frame; returns the path used."""
        frame = self.prepare(frame)
        if frame.is_cuda and not self._disabled:
            try:
                self._upload_interop(frame)
                self.path = PATH_INTEROP
                self.uploads[PATH_INTEROP] += 1
                return self.path
            except InteropUnavailable as e:
                if self.mode == "interop":
                    raise
                self._give_up(str(e))
        elif self.mode == "interop":
            raise InteropUnavailable("mode='interop' needs CUDA tensors")
        elif not frame.is_cuda and self.reason is None:
            self.reason = "the frame is a CPU tensor"
        self._upload_host(frame)
        self.path = PATH_HOST
        self.uploads[PATH_HOST] += 1
        return self.path

    def _give_up(self, reason: str):
        self._disabled = True
        self.reason = reason
        self.release()
        msg = f"sgvis: CUDA-GL interop unavailable ({reason}); frames go to OpenGL through host memory"
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)

    def _upload_host(self, frame: torch.Tensor):
        data = frame.cpu().numpy().tobytes()
        if not self.is_texture and len(data) > self.target.size:
            raise ValueError(f"frame of {len(data)} bytes does not fit the {self.target.size}-byte buffer")
        self.target.write(data)

    def _register(self):
        rt = cuda_runtime()
        res = ctypes.c_void_p()
        glo = int(self.target.glo)
        if self.is_texture:
            _check(rt.cudaGraphicsGLRegisterImage(ctypes.byref(res), glo, GL_TEXTURE_2D, _REGISTER_WRITE_DISCARD),
                   "cudaGraphicsGLRegisterImage")
        else:
            _check(rt.cudaGraphicsGLRegisterBuffer(ctypes.byref(res), glo, _REGISTER_WRITE_DISCARD),
                   "cudaGraphicsGLRegisterBuffer")
        self._resource = res

    def _upload_interop(self, frame: torch.Tensor):
        rt = cuda_runtime()
        with torch.cuda.device(frame.device):
            if self._resource is None:
                self._register()
            stream = ctypes.c_void_p(torch.cuda.current_stream(frame.device).cuda_stream)
            res = self._resource
            _check(rt.cudaGraphicsMapResources(1, ctypes.byref(res), stream), "cudaGraphicsMapResources")
            try:
                nbytes = frame.numel() * frame.element_size()
                if self.is_texture:
                    array = ctypes.c_void_p()
                    _check(rt.cudaGraphicsSubResourceGetMappedArray(ctypes.byref(array), res, 0, 0),
                           "cudaGraphicsSubResourceGetMappedArray")
                    row = frame.shape[1] * frame.shape[2] * frame.element_size()
                    _check(rt.cudaMemcpy2DToArrayAsync(array, 0, 0, ctypes.c_void_p(frame.data_ptr()), row, row,
                                                       frame.shape[0], _MEMCPY_DEVICE_TO_DEVICE, stream),
                           "cudaMemcpy2DToArrayAsync")
                else:
                    ptr, size = ctypes.c_void_p(), ctypes.c_size_t(0)
                    _check(rt.cudaGraphicsResourceGetMappedPointer(ctypes.byref(ptr), ctypes.byref(size), res),
                           "cudaGraphicsResourceGetMappedPointer")
                    if nbytes > size.value:
                        raise ValueError(f"frame of {nbytes} bytes does not fit the {size.value}-byte buffer")
                    _check(rt.cudaMemcpyAsync(ptr, ctypes.c_void_p(frame.data_ptr()), nbytes,
                                              _MEMCPY_DEVICE_TO_DEVICE, stream), "cudaMemcpyAsync")
            finally:
                # Unmapping orders the copy (queued on torch's current stream, which also orders the frame's
                # memory reuse) before GL's next use of the object.
                _check(rt.cudaGraphicsUnmapResources(1, ctypes.byref(res), stream), "cudaGraphicsUnmapResources")

    def release(self):
        """Unregister from CUDA (call before the GL object is released)."""
        if self._resource is not None:
            try:
                cuda_runtime().cudaGraphicsUnregisterResource(self._resource)
            except InteropUnavailable:
                pass
            self._resource = None
