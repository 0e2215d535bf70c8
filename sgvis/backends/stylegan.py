"""The StyleGAN backend: W+ batches -> RGB uint8 frames, on the best available device (fast path where it
exists, the exact reference path otherwise)."""
from __future__ import annotations

import os

import torch

import stylegan
from sgvis.errors import UserError


DEFAULT_MODEL_NAME = "default"


def default_model_path() -> str:
    """The small model shipped inside the package (`--model default`)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets",
                        "default.safetensors")


def is_builtin_model(path: str | None) -> bool:
    """True when `path` names the model shipped with sgvis (None, "default" or its file)."""
    try:
        return os.path.realpath(resolve_model_path(path)) == os.path.realpath(default_model_path())
    except UserError:                        # no built-in model installed
        return False


def resolve_model_path(path: str | None) -> str:
    """A user's --model value as a file path: None or "default" is the built-in model."""
    if path is None or path == DEFAULT_MODEL_NAME:
        path = default_model_path()
        if not os.path.exists(path):
            from sgvis.errors import UserError
            raise UserError("no default model is installed in this copy of sgvis; pass --model PATH "
                            "(any StyleGAN2/3 checkpoint)")
    return path


def load_model(path: str | None) -> stylegan.Generator:
    """Load a StyleGAN checkpoint (any supported format; None or "default": the built-in model) on the CPU;
    a bad file is one UserError line."""
    from sgvis.errors import UserError
    try:
        return stylegan.load(resolve_model_path(path), device=None)
    except stylegan.CheckpointError as e:
        raise UserError(str(e)) from None


def pick_device(requested: str = "auto", flag: str = "--device") -> torch.device:
    """auto (CUDA when there is a GPU, else the CPU), cpu, cuda or cuda:N; anything else is one UserError line
    naming `flag`, the option the user gave it with."""
    from sgvis.errors import UserError
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError(f"{flag} {requested}: not a device sgvis runs on; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{flag} {requested} was requested but no CUDA GPU is available; use {flag} cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"{flag} {requested}: there are only {torch.cuda.device_count()} CUDA GPU(s) "
                            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return device


def images_to_uint8(img: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] in about [-1, 1] -> [N, H, W, 3] uint8 (grey images are repeated to RGB)."""
    img = (img.clamp(-1, 1) + 1) * 127.5
    if img.shape[1] == 1:
        img = img.repeat(1, 3, 1, 1)
    return img[:, :3].round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class StyleGANBackend:
    """Runs the synthesis network (fast path where available) and frames its square picture into the output size
    by `fit` (sgvis.outputs.framing: crop, letterbox or stretch).  Its steering state is W+ ([N, num_ws, w_dim]);
    `latent_model` is the generator whose W space steering moves."""

    name = "stylegan"

    @classmethod
    def from_settings(cls, model: str | None = None, device: str = "auto", precision: str = "auto",
                      size: tuple[int, int] | None = None, fit: str = "crop") -> "StyleGANBackend":
        from sgvis.outputs.framing import check_fit
        fit = check_fit(fit)
        return cls(load_model(model), pick_device(device), precision=precision, size=size, fit=fit)

    def __init__(self, G: stylegan.Generator, device: torch.device, precision: str = "auto",
                 size: tuple[int, int] | None = None, fit: str = "crop"):
        from sgvis.outputs.framing import check_fit
        self.G = G.to(device).eval().requires_grad_(False)
        self.device = device
        self.size = size                       # (width, height) or None for the native resolution
        self.bend_resolution = 16              # the block whose output motion "bends" (sgvis.steer.motion)
        self.fit = check_fit(fit)              # how the picture fills a size of another aspect
        self.look = None                       # sgvis.backends.look.Look, applied before the camera moves
        self.synthesize = None
        self.tuning = None                     # the measured precision choice (sgvis.backends.tuning)
        # A lower internal resolution (live under load): the synthesis stops at the block of this resolution and
        # the picture is scaled up to the native one. None: the full synthesis.
        self.draft_resolution = None
        self._tune = False
        try:
            from stylegan.fast import FastSynthesis
            self.synthesize = FastSynthesis(self.G, device=device, precision=precision)
            self.description = self.synthesize.describe()
            # On a CPU the settings are chosen by measurement at the first frames (the first batch size), or
            # earlier by tune() (render: also threads and batch), not by CPU flags; a forced precision stays.
            self._tune = device.type == "cpu"
            self._precision_setting = precision
        except ImportError:
            pass
        if self.synthesize is None:
            self.synthesize = lambda ws: self.G.synthesis(ws, noise_mode="const")
            self.description = f"exact path, fp32, {device.type}"

    @property
    def latent_model(self) -> stylegan.Generator:
        return self.G

    @property
    def output_size(self) -> tuple[int, int]:
        return self.size or (self.G.img_resolution, self.G.img_resolution)

    @torch.inference_mode()
    def frames(self, ws: torch.Tensor, keep_on_device: bool = False, motion: torch.Tensor | None = None) \
            -> torch.Tensor:
        """ws [N, num_ws, w_dim] -> frames [N, H, W, 3] uint8 on the CPU (or left on the generator's device).
        motion [N, 8]: per frame the bend and camera transforms (sgvis.steer.motion, sgvis.backends.warp)."""
        from sgvis.outputs.framing import fit_images
        ws = ws.to(self.device, torch.float32)
        if self._tune:
            self.tune(len(ws))
        camera = None
        if motion is None:
            img = self._synthesis(ws)
        else:
            img, camera = self._synthesize_moving(ws, motion.to(self.device, torch.float32))
        native = self.G.img_resolution
        if img.shape[-1] != native:            # a draft: scaled up before the look, so its lines stay thin
            img = torch.nn.functional.interpolate(img, size=(native, native), mode="bilinear", align_corners=False)
        if self.look is not None and self.look.active:
            img = self.look(img)
        if camera is not None:
            from sgvis.backends.warp import warp
            img = warp(img, camera)
        img = fit_images(img, self.output_size, self.fit)
        frames = images_to_uint8(img)
        return frames if keep_on_device else frames.cpu()

    def tune(self, batch: int, threads: list[int] | None = None, batches: list[int] | None = None) -> dict | None:
        """Choose the generator's settings on a CPU by measurement (sgvis.backends.tuning; cached per machine
        and model), `batch` frames per call or the fastest per frame of `batches`, with torch's thread count or
        the fastest of `threads` (which then stays set).  Once per backend: later calls return the first
        record.  None where there is nothing to measure (CUDA, the exact path)."""
        if not self._tune:
            return self.tuning
        self._tune = False
        if not hasattr(self.synthesize, "configure"):       # not the fast path (replaced, or the exact one)
            return None
        from sgvis.backends.tuning import describe, tune_generator
        self.tuning = tune_generator(self.synthesize, self.G, batch, threads=threads, batches=batches,
                                     precision=self._precision_setting)
        self.description = f"{self.synthesize.describe()}; {describe(self.tuning)}"
        return self.tuning

    @property
    def supports_draft(self) -> bool:
        """Whether draft_resolution takes effect (the fast StyleGAN2 path)."""
        return bool(getattr(self.synthesize, "supports_block_hook", False))

    def _synthesis(self, ws: torch.Tensor, block_hook=None) -> torch.Tensor:
        draft = self.draft_resolution if self.supports_draft else None
        if draft is None:
            return self.synthesize(ws) if block_hook is None else self.synthesize(ws, block_hook=block_hook)
        return self.synthesize(ws, block_hook=block_hook, max_resolution=int(draft))

    def _synthesize_moving(self, ws: torch.Tensor, motion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pictures with the layout bent, and the camera transform still to apply to them."""
        from sgvis.backends.warp import warp
        bend, camera = motion[:, :4], motion[:, 4:]
        res = self.bend_resolution
        if getattr(self.synthesize, "supports_block_hook", False) and res and bool(bend.abs().amax() > 0):
            def hook(resolution, x, img):
                if resolution == res:
                    x = warp(x, bend)
                    img = None if img is None else warp(img, bend)
                return x, img
            img = self._synthesis(ws, block_hook=hook)
        else:
            img = self._synthesis(ws)
            camera = camera + bend          # no layers to bend here: the picture moves as a whole instead
        return img, camera

