"""Generator stage: ws batches -> RGB uint8 frames, on the best available device."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import stylegan


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        from sgvis.errors import UserError
        raise UserError("--device cuda was requested but no CUDA GPU is available; use --device cpu")
    return torch.device(requested)


def images_to_uint8(img: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] in about [-1, 1] -> [N, H, W, 3] uint8 (grey images are repeated to RGB)."""
    img = (img.clamp(-1, 1) + 1) * 127.5
    if img.shape[1] == 1:
        img = img.repeat(1, 3, 1, 1)
    return img[:, :3].round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


class FrameGenerator:
    """Runs the synthesis network (fast path where available) and resizes to the output size."""

    def __init__(self, G: stylegan.Generator, device: torch.device, precision: str = "auto",
                 size: tuple[int, int] | None = None):
        self.G = G.to(device).eval().requires_grad_(False)
        self.device = device
        self.size = size                       # (width, height) or None for the native resolution
        self.synthesize = None
        try:
            from stylegan.fast import FastSynthesis
            self.synthesize = FastSynthesis(self.G, device=device, precision=precision)
            self.description = self.synthesize.describe()
        except ImportError:
            pass
        if self.synthesize is None:
            self.synthesize = lambda ws: self.G.synthesis(ws, noise_mode="const")
            self.description = f"exact path, fp32, {device.type}"

    @property
    def output_size(self) -> tuple[int, int]:
        return self.size or (self.G.img_resolution, self.G.img_resolution)

    @torch.inference_mode()
    def __call__(self, ws: torch.Tensor, keep_on_device: bool = False) -> torch.Tensor:
        """ws [N, num_ws, w_dim] -> frames [N, H, W, 3] uint8 on the CPU (or left on the generator's device)."""
        img = self.synthesize(ws.to(self.device, torch.float32))
        w, h = self.output_size
        if (h, w) != tuple(img.shape[2:]):
            # Antialiased bicubic: clean both for down- and (moderate) upscaling.
            img = F.interpolate(img.float(), size=(h, w), mode="bicubic", align_corners=False, antialias=True)
        frames = images_to_uint8(img)
        return frames if keep_on_device else frames.cpu()
