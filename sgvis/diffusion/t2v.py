"""The text-to-video side of TempoTokens, built from diffusers and transformers components (not from a pipeline):
a diffusers folder (unet = UNet3DConditionModel, vae = AutoencoderKL, text_encoder = CLIPTextModel, tokenizer,
scheduler), read from disk only.

  * `TextConditioner` puts the six audio pseudo-words into the CLIP text encoder: the prompt holds the placeholder
    tokens <temp> <local1> .. <local4> <class>; their input token embeddings are replaced (before the position
    embeddings are added) by the mapper's vectors, one prompt per video frame, so every frame gets its own
    [77, D] text embedding.
  * `unet_per_frame` runs the 3-D UNet with those per-frame embeddings in its cross-attention (the usual repeat of
    one embedding over all frames is not done).
  * `denoise` is the DPM-Solver++ loop with classifier-free guidance for one window of frames; the first frames can
    be pinned to latents carried over from the previous window (re-noised to each step's level), which is how
    windows join without a seam.
"""
from __future__ import annotations

import contextlib
import os

import torch

from sgvis.errors import UserError

PLACEHOLDERS = ("<temp>", "<local1>", "<local2>", "<local3>", "<local4>", "<class>")
AUDIO_PROMPT = " ".join(PLACEHOLDERS)
SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
WHERE_TO_GET = ("a diffusers text-to-video folder with unet/ vae/ text_encoder/ tokenizer/ scheduler/, e.g. "
                "cerspense/zeroscope_v2_576w downloaded from the Hugging Face Hub (the released mappers only work "
                "with it)")


def load_t2v(folder: str, device="cpu", dtype=torch.float32) -> dict:
    """The components of a diffusers text-to-video folder, from disk only: {'unet', 'vae', 'text_encoder',
    'tokenizer', 'scheduler'}; the scheduler is DPM-Solver++ made from the folder's scheduler config."""
    if not os.path.isdir(folder):
        raise UserError(f"text-to-video folder {folder} not found; sgvis needs {WHERE_TO_GET}")
    missing = [s for s in SUBFOLDERS if not os.path.isdir(os.path.join(folder, s))]
    if missing:
        raise UserError(f"{folder} is not a diffusers text-to-video folder (no {', '.join(missing)}); sgvis needs "
                        f"{WHERE_TO_GET}")
    try:
        from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet3DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError as e:
        raise UserError(f"the tempotokens backend needs diffusers and transformers: pip install 'sgvis[diffusion]' "
                        f"({e})") from None
    try:
        with _quiet():
            parts = {
                "unet": UNet3DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True),
                "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True),
                "text_encoder": CLIPTextModel.from_pretrained(folder, subfolder="text_encoder",
                                                              local_files_only=True),
                "tokenizer": CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True),
            }
            config = DPMSolverMultistepScheduler.load_config(folder, subfolder="scheduler", local_files_only=True)
            parts["scheduler"] = DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")
    except (OSError, ValueError, RuntimeError) as e:
        message = str(e).strip()
        raise UserError(f"{folder}: cannot load it as a diffusers text-to-video folder "
                        f"({message.splitlines()[0][:200] if message else type(e).__name__})") from None
    with _quiet():                                     # (no advice about casting with .to())
        for name in ("unet", "vae", "text_encoder"):
            parts[name] = parts[name].to(device=device, dtype=dtype).eval().requires_grad_(False)
    return parts


@contextlib.contextmanager
def _quiet():
    """Loading from a local folder: no progress bars or advice about optional speed-ups on the console."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging
    levels = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(levels[0])
        transformers_logging.set_verbosity(levels[1])
        if bars:
            transformers_logging.enable_progress_bar()


class TextConditioner:
    """Per-frame CLIP text embeddings with the audio pseudo-words in place of the placeholder tokens."""

    def __init__(self, tokenizer, text_encoder, prompt: str | None = None):
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        tokenizer.add_tokens(list(PLACEHOLDERS))
        self.placeholder_ids = tokenizer.convert_tokens_to_ids(list(PLACEHOLDERS))
        self.prompt = AUDIO_PROMPT + (f" {prompt.strip()}" if prompt and prompt.strip() else "")
        self.width = text_encoder.get_input_embeddings().weight.shape[1]
        ids = self._ids(self.prompt)
        self.slots = []                        # (placeholder number, position in the prompt)
        for k, token_id in enumerate(self.placeholder_ids):
            for pos in (ids == token_id).nonzero().flatten().tolist():
                self.slots.append((k, pos))
        if len(self.slots) != len(PLACEHOLDERS):
            raise UserError(f"the prompt does not keep the six audio tokens: {self.prompt!r}")
        safe = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        vocab = text_encoder.get_input_embeddings().weight.shape[0]
        self.ids = torch.where(ids >= vocab, torch.full_like(ids, safe), ids)   # looked up, then replaced
        self.empty_ids = self._ids("")

    def _ids(self, text: str) -> torch.Tensor:
        return self.tokenizer(text, padding="max_length", max_length=self.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids[0]

    @contextlib.contextmanager
    def _substituted(self, vectors: torch.Tensor):
        """While active, the token embedding layer's output at the placeholder positions is `vectors`
        [F, 6, D] (one row per prompt in the batch)."""
        def hook(module, inputs, output):
            output = output.clone()
            for k, pos in self.slots:
                output[:, pos] = vectors[:, k].to(output.dtype)
            return output
        handle = self.text_encoder.get_input_embeddings().register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    @torch.no_grad()
    def encode(self, tokens) -> torch.Tensor:
        """tokens: (temporal, local1..local4 [F, D], class_token [D] or None) -> [F, 77, D] text embeddings."""
        return self.embed(tokens)

    def embed(self, tokens) -> torch.Tensor:
        """`encode` with gradients flowing back to the tokens (the text encoder itself stays frozen): what
        training the mapper needs."""
        temporal = tokens[0]
        frames = temporal.shape[0]
        class_token = tokens[5] if tokens[5] is not None else torch.zeros_like(temporal[0])
        vectors = torch.stack([*tokens[:5], class_token.expand(frames, -1)], dim=1)   # [F, 6, D]
        if vectors.shape[-1] != self.width:
            raise UserError(f"the mapper makes {vectors.shape[-1]}-wide tokens, the text encoder takes "
                            f"{self.width}: this mapper was trained for another text-to-video model")
        device = self.text_encoder.device
        with self._substituted(vectors.to(device)):
            return self.text_encoder(self.ids.expand(frames, -1).to(device)).last_hidden_state

    @torch.no_grad()
    def encode_empty(self, frames: int) -> torch.Tensor:
        """The unconditional embedding (empty prompt), [F, 77, D]."""
        device = self.text_encoder.device
        return self.text_encoder(self.empty_ids[None].to(device)).last_hidden_state.expand(frames, -1, -1)


def unet_per_frame(unet, sample: torch.Tensor, timestep, frame_states: torch.Tensor) -> torch.Tensor:
    """UNet3DConditionModel's forward with one text embedding per frame: sample [B, C, F, h, w], frame_states
    [B * F, L, D] (batch-major) -> the prediction [B, C, F, h, w]. The same computation as `unet(sample, t, states)`
    when every frame of a batch item has the same embedding."""
    b, _, f = sample.shape[:3]
    if frame_states.shape[0] != b * f:
        raise ValueError(f"need {b * f} frame embeddings, got {frame_states.shape[0]}")
    upsample_factor = 2 ** unet.num_upsamplers
    forward_upsample_size = any(s % upsample_factor for s in sample.shape[-2:])
    t = torch.as_tensor(timestep, device=sample.device)
    t = t.reshape(-1).expand(b)
    emb = unet.time_embedding(unet.time_proj(t).to(dtype=unet.dtype))
    emb = emb.repeat_interleave(f, dim=0)
    h = sample.permute(0, 2, 1, 3, 4).reshape(b * f, *sample.shape[1:2], *sample.shape[3:])
    h = unet.conv_in(h)
    h = unet.transformer_in(h, num_frames=f, return_dict=False)[0]
    residuals = (h,)
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            h, res = block(hidden_states=h, temb=emb, encoder_hidden_states=frame_states, num_frames=f)
        else:
            h, res = block(hidden_states=h, temb=emb, num_frames=f)
        residuals += res
    if unet.mid_block is not None:
        h = unet.mid_block(h, emb, encoder_hidden_states=frame_states, num_frames=f)
    for i, block in enumerate(unet.up_blocks):
        res = residuals[-len(block.resnets):]
        residuals = residuals[:-len(block.resnets)]
        upsample_size = residuals[-1].shape[2:] if forward_upsample_size and i < len(unet.up_blocks) - 1 else None
        if getattr(block, "has_cross_attention", False):
            h = block(hidden_states=h, temb=emb, res_hidden_states_tuple=res, encoder_hidden_states=frame_states,
                      upsample_size=upsample_size, num_frames=f)
        else:
            h = block(hidden_states=h, temb=emb, res_hidden_states_tuple=res, upsample_size=upsample_size,
                      num_frames=f)
    if unet.conv_norm_out is not None:
        h = unet.conv_act(unet.conv_norm_out(h))
    h = unet.conv_out(h)
    return h.reshape(b, f, *h.shape[1:]).permute(0, 2, 1, 3, 4)


@torch.no_grad()
def denoise(unet, scheduler, cond: torch.Tensor, uncond: torch.Tensor | None, noise: torch.Tensor, steps: int,
            guidance: float, carry: torch.Tensor | None = None, progress=None) -> torch.Tensor:
    """One window: noise [1, C, F, h, w] -> clean latents. cond / uncond [F, 77, D] per-frame text embeddings
    (uncond None or guidance <= 1: no classifier-free guidance). carry [1, C, K, h, w]: clean latents of the first
    K frames from the previous window; at every step those frames are set to `carry` noised to the step's level,
    so the window continues them."""
    scheduler.set_timesteps(steps, device=noise.device)
    latents = noise * scheduler.init_noise_sigma
    guided = uncond is not None and guidance > 1.0
    states = torch.cat([uncond, cond]) if guided else cond
    k = 0 if carry is None else carry.shape[2]
    for t in scheduler.timesteps:
        if k:
            noised = scheduler.add_noise(carry, noise[:, :, :k], t.reshape(1))
            latents = torch.cat([noised, latents[:, :, k:]], dim=2)
        model_in = torch.cat([latents, latents]) if guided else latents
        model_in = scheduler.scale_model_input(model_in, t)
        pred = unet_per_frame(unet, model_in, t, states.to(model_in.dtype))
        if guided:
            pred_uncond, pred_cond = pred.chunk(2)
            pred = pred_uncond + guidance * (pred_cond - pred_uncond)
        latents = scheduler.step(pred, t, latents).prev_sample
        if progress is not None:
            progress.update(1)
    return latents


@torch.no_grad()
def decode(vae, latents: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """latents [1, C, F, h, w] -> uint8 frames [F, H, W, 3] on the CPU."""
    frames = latents[0].transpose(0, 1) / vae.config.scaling_factor               # [F, C, h, w]
    out = []
    for i in range(0, frames.shape[0], batch):
        pixels = vae.decode(frames[i:i + batch].to(vae.dtype)).sample
        out.append(((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu())
    return torch.cat(out)
