"""The `tempotokens` backend: audio -> BEATs -> mapper -> per-frame text embeddings -> 3-D UNet (DPM-Solver++) ->
VAE -> frames, one window of audio at a time.

It is an audio backend (`consumes = "audio"`): instead of one state per frame it takes the track's mono samples at
`sample_rate` and yields frames (`frames_from_audio`); `sgvis render` hands it the audio (sgvis.render_audio).

Windows: each covers `window_seconds` (2 s: 24 frames at the native 12 fps) and is conditioned on its own 2 s of
audio. Consecutive windows overlap by `overlap` frames: the new window starts from the same noise for those frames
and, at every denoising step, holds them at the previous window's result re-noised to the step's level (so the
motion continues across the border); after the last step the overlap is cross-faded in latent space from the old
window's latents to the new one's.
"""
from __future__ import annotations

import torch

from sgvis.errors import UserError

DEFAULT_SIZE = (384, 384)


class TempoTokensBackend:
    name = "tempotokens"
    consumes = "audio"
    sample_rate = 16000
    latent_model = None

    def __init__(self, t2v: dict, beats, mapper, device, dtype, size=DEFAULT_SIZE, prompt=None, steps=25,
                 guidance=25.0, overlap=4, window_seconds=2.0):
        from sgvis.diffusion.t2v import TextConditioner
        self.unet, self.vae, self.scheduler = t2v["unet"], t2v["vae"], t2v["scheduler"]
        self.beats, self.mapper = beats, mapper
        self.text = TextConditioner(t2v["tokenizer"], t2v["text_encoder"], prompt)
        self.device, self.dtype = device, dtype
        self.steps, self.guidance, self.overlap = int(steps), float(guidance), int(overlap)
        self.window_seconds = float(window_seconds)
        self.native_fps = mapper.frames / self.window_seconds
        if beats.output_dim != mapper.in_dim:
            raise UserError(f"the BEATs model gives {beats.output_dim}-wide features, the mapper takes "
                            f"{mapper.in_dim}: they do not belong together")
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.latent_channels = self.unet.config.in_channels
        self.size = tuple(size)
        for v in self.size:
            if v % self.vae_scale:
                raise UserError(f"--size {self.size[0]}x{self.size[1]}: each side must be a multiple of "
                                f"{self.vae_scale} for this model")
        self.description = (f"TempoTokens, {self.steps} DPM-Solver++ steps, guidance {self.guidance:g}, "
                            f"{str(dtype).replace('torch.', '')}, {device}")

    @classmethod
    def from_settings(cls, model=None, device="auto", precision="auto", size=None, fit="crop", t2v=None,
                      beats=None, mapper=None, prompt=None, steps=25, guidance=25.0, overlap=4):
        if model is not None:
            raise UserError("--model is a StyleGAN checkpoint; the tempotokens backend takes --t2v DIR instead")
        need = [flag for flag, value in (("--t2v DIR", t2v), ("--beats BEATS.pt", beats),
                                         ("--mapper MAPPER.pth", mapper)) if not value]
        if need:
            raise UserError(f"--backend tempotokens needs {', '.join(need)} (see docs/diffusion.md)")
        if int(steps) < 1:
            raise UserError(f"--steps must be at least 1, got {steps}")
        if int(overlap) < 0:
            raise UserError(f"overlap must be 0 or more frames, got {overlap}")
        dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        if precision == "auto":
            dtype = torch.float16 if dev.type == "cuda" else torch.float32
        else:
            dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
            if dtype is None:
                raise UserError(f"precision {precision!r}: use auto, fp32, fp16 or bf16")
        from sgvis.diffusion import load_beats, load_mapper
        from sgvis.diffusion.t2v import load_t2v
        beats_model = load_beats(beats, device=dev)
        mapper_model = load_mapper(mapper, device=dev)
        parts = load_t2v(t2v, device=dev, dtype=dtype)
        return cls(parts, beats_model, mapper_model, dev, dtype, size=size or DEFAULT_SIZE, prompt=prompt,
                   steps=steps, guidance=guidance, overlap=overlap)

    @property
    def output_size(self) -> tuple[int, int]:
        return self.size

    def frames(self, states, keep_on_device=False, motion=None):
        raise TypeError("the tempotokens backend renders from audio: use frames_from_audio()")

    # --- audio -> tokens -> text embeddings ---------------------------------------------------------------------

    @torch.no_grad()
    def window_tokens(self, audio: torch.Tensor, n_frames: int):
        """One window of mono audio [S] at sample_rate -> the mapper's six tokens, resampled in time from the
        mapper's frames to n_frames when they differ (temporal, local1..4 [n_frames, D], class [D])."""
        samples = int(round(self.window_seconds * self.sample_rate))
        audio = audio[:samples]
        if audio.shape[0] < samples:
            audio = torch.nn.functional.pad(audio, (0, samples - audio.shape[0]))
        features = self.beats.layer_features(audio[None].to(self.device, torch.float32))
        tokens = self.mapper(features)
        out = []
        for i, tok in enumerate(tokens):
            if tok is None:
                out.append(None)
                continue
            tok = tok[0]
            if i < 5 and tok.shape[0] != n_frames:
                tok = torch.nn.functional.interpolate(tok.T[None], size=n_frames, mode="linear",
                                                      align_corners=True)[0].T
            out.append(tok)
        return tuple(out)

    def render_window(self, audio: torch.Tensor, noise: torch.Tensor, carry: torch.Tensor | None = None,
                      progress=None) -> torch.Tensor:
        """Audio of one window [S] and its noise [1, C, F, h, w] -> clean latents [1, C, F, h, w]; carry: the
        previous window's latents for the first frames (see sgvis.diffusion.t2v.denoise)."""
        from sgvis.diffusion.t2v import denoise
        frames = noise.shape[2]
        tokens = self.window_tokens(audio, frames)
        cond = self.text.encode(tokens)
        uncond = self.text.encode_empty(frames) if self.guidance > 1.0 else None
        return denoise(self.unet, self.scheduler, cond.to(self.dtype),
                       None if uncond is None else uncond.to(self.dtype), noise, self.steps, self.guidance,
                       carry=carry, progress=progress)

    # --- the whole track -----------------------------------------------------------------------------------

    def window_layout(self, fps: float, n_frames: int) -> list[tuple[int, int, int]]:
        """[(first frame, frames generated, frames emitted)] per window for a render of n_frames at fps."""
        length = max(1, int(round(self.window_seconds * fps)))
        overlap = min(self.overlap, length - 1)
        stride = length - overlap
        layout, start = [], 0
        while True:
            last = start + length >= n_frames
            layout.append((start, length, (n_frames - start) if last else stride))
            if last:
                return layout
            start += stride

    def live_window(self, audio: torch.Tensor, generator: torch.Generator, previous: torch.Tensor | None = None,
                    progress=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Live: the newest `window_seconds` of mono audio [S] at sample_rate -> (uint8 frames [F, H, W, 3] at the
        native frame rate, their latents). `previous`: the last window's latents; its last `overlap` frames are
        carried into this window's first ones (held through the denoising, as between render windows), so the
        picture continues from what was shown even though the audio has moved on."""
        from sgvis.diffusion.t2v import decode
        frames = int(round(self.window_seconds * self.native_fps))
        width, height = self.size
        h, w = height // self.vae_scale, width // self.vae_scale
        noise = torch.randn([1, self.latent_channels, frames, h, w], generator=generator)
        noise = noise.to(self.device, self.dtype)
        overlap = 0 if previous is None else min(self.overlap, frames - 1, previous.shape[2])
        carry = previous[:, :, -overlap:] if overlap else None
        latents = self.render_window(audio, noise, carry, progress=progress)
        return decode(self.vae, latents), latents

    def frames_from_audio(self, audio: torch.Tensor, fps: float, n_frames: int, seed: int = 0):
        """Mono audio [S] at sample_rate (the part of the track to render) -> yields uint8 frames [n, H, W, 3]
        on the CPU, window by window, n_frames in all."""
        from tqdm import tqdm

        from sgvis.diffusion.t2v import decode
        layout = self.window_layout(fps, n_frames)
        width, height = self.size
        h, w = height // self.vae_scale, width // self.vae_scale
        generator = torch.Generator().manual_seed(int(seed))
        prev = None                                                # (latents, noise) of the previous window
        windows = tqdm(layout, unit="window", desc="windows", dynamic_ncols=True, disable=None, leave=False)
        for index, (start, length, emit) in enumerate(windows):
            overlap = 0 if prev is None else prev[0].shape[2] - (start - layout[index - 1][0])
            fresh = torch.randn([1, self.latent_channels, length - overlap, h, w], generator=generator)
            noise = fresh if not overlap else torch.cat([prev[1][:, :, -overlap:], fresh], dim=2)
            noise = noise.to(self.device, self.dtype)
            carry = prev[0][:, :, -overlap:] if overlap else None
            a0 = int(round(start / fps * self.sample_rate))
            steps = tqdm(total=self.steps, unit="step", desc=f"window {index + 1}/{len(layout)}",
                         dynamic_ncols=True, disable=None, leave=False)
            try:
                latents = self.render_window(audio[a0:], noise, carry, progress=steps)
            finally:
                steps.close()
            if overlap:
                ramp = torch.linspace(0, 1, overlap + 2, device=latents.device, dtype=latents.dtype)[1:-1]
                ramp = ramp.view(1, 1, overlap, 1, 1)
                blended = carry * (1 - ramp) + latents[:, :, :overlap] * ramp
                out = torch.cat([blended, latents[:, :, overlap:]], dim=2)
            else:
                out = latents
            prev = (latents, noise)
            yield decode(self.vae, out[:, :, :emit])
        windows.close()

