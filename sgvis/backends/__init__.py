"""Backends: the generator stage.  A backend turns a batch of steering states into RGB frames.

    backend = BACKENDS.create("stylegan", model="default", device="auto", precision="auto", size=None,
                              fit="crop")
    frames = backend.frames(states)        # [N, H, W, 3] uint8 on the CPU

A steering mode that moves a W+ latent asks the backend for its `latent_model` (a StyleGAN generator: mapping
network, w_avg, num_ws); a backend without one (e.g. a diffusion model conditioned another way) sets it to None
and gets the steering modes made for it.  Adding a backend is one new module plus one line in BACKENDS.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from sgvis.registry import Registry


@runtime_checkable
class Backend(Protocol):
    name: str                      # registry name, e.g. "stylegan"
    description: str               # how frames are made, for stats and the HUD ("fast path, bf16, cpu")
    device: Any                    # torch.device frames are generated on
    latent_model: Any              # the W+ model steering moves (StyleGAN generator), or None

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the frames."""
        ...

    def frames(self, states, keep_on_device: bool = False, motion=None):
        """Steering states [N, ...] -> frames [N, H, W, 3] uint8 (on the CPU unless keep_on_device).
        motion [N, 8] or None: per frame the bend and camera transforms of sgvis.steer.motion (a backend that
        cannot bend its layers moves the whole picture: sgvis.backends.warp)."""
        ...


# name -> factory(model=None, device="auto", precision="auto", size=None, fit="crop") -> Backend; `fit` is how a
# picture fills a `size` of another aspect (sgvis.outputs.framing.FIT_MODES)
BACKENDS = Registry("backend", {
    "stylegan": "sgvis.backends.stylegan:StyleGANBackend.from_settings",
    "tempotokens": "sgvis.diffusion.backend:TempoTokensBackend.from_settings",
})


# --backend tempotokens on the command line (render, live, eval steering): its options, in one place.
DIFFUSION_OPTIONS = ("t2v", "beats", "mapper", "prompt", "steps", "guidance")


def add_diffusion_arguments(parser, title: str = "--backend tempotokens (docs/diffusion.md)") -> None:
    """Add the tempotokens backend's files and settings to a command's parser, as one argument group."""
    d = parser.add_argument_group(title)
    d.add_argument("--t2v", metavar="DIR", help="diffusers text-to-video folder (e.g. zeroscope_v2_576w)")
    d.add_argument("--beats", metavar="BEATS.pt", help="BEATs iter3+ AudioSet checkpoint ({'cfg', 'model'} .pt)")
    d.add_argument("--mapper", metavar="MAPPER.pth", help="TempoTokens mapper weights (learned_embeds.pth)")
    d.add_argument("--prompt", metavar="TEXT", help="text added to the audio tokens")
    d.add_argument("--steps", type=int, help="DPM-Solver++ steps per window (default 25)")
    d.add_argument("--guidance", type=float, help="classifier-free guidance scale (default 25)")


def diffusion_options(args, backend: str | None = None) -> dict:
    """The tempotokens options given on the command line (those left out are not in the dict). With `backend`
    (the command's --backend), giving them to another backend is one UserError line."""
    options = {key: getattr(args, key) for key in DIFFUSION_OPTIONS if getattr(args, key, None) is not None}
    if backend is not None and options and backend != "tempotokens":
        from sgvis.errors import UserError
        raise UserError(f"--{', --'.join(options)} are for --backend tempotokens")
    return options
