"""rosinality/stylegan2-pytorch checkpoints (.pt): the convert_weight.py layout
{'g_ema', 'latent_avg'} and train.py snapshots {'g', 'd', 'g_ema', ..., 'args'}.

The architecture is read from the weight names and shapes; the names map one to one onto NVIDIA's
(no spatial flips).  Without `latent_avg`, w_avg is the mean of 4096 mapped z (seed 0).
"""
from __future__ import annotations

import re

import torch

from stylegan.errors import CheckpointError
from stylegan.formats.common import load_weights
from stylegan.generator import Generator

MEAN_LATENT_SAMPLES = 4096


def is_rosinality(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("g_ema"), dict) and "style.1.weight" in data["g_ema"]


def generator_config(sd: dict, path: str) -> dict:
    n_mlp = len([k for k in sd if re.fullmatch(r"style\.\d+\.weight", k)])
    style_dim = int(sd["style.1.weight"].shape[1])
    num_convs = len([k for k in sd if re.fullmatch(r"convs\.\d+\.conv\.weight", k)])
    if n_mlp == 0 or num_convs % 2:
        raise CheckpointError(f"{path}: rosinality checkpoint has an unexpected layout")
    size = 2 ** (num_convs // 2 + 2)
    # Channel widths per resolution, read from the weights (forks change them): min(base // res, max).
    widths = [int(sd["conv1.conv.weight"].shape[1])]
    widths += [int(sd[f"convs.{2 * k + 1}.conv.weight"].shape[1]) for k in range(num_convs // 2)]
    channel_max = max(widths)
    channel_base = channel_max * size
    for k, width in enumerate(widths):
        if width < channel_max:
            channel_base = width * 2 ** (k + 2)
            break
    return dict(kind="stylegan2", z_dim=style_dim, c_dim=0, w_dim=style_dim, img_resolution=size, img_channels=3,
                mapping_kwargs=dict(num_layers=n_mlp, lr_multiplier=0.01, w_avg_beta=0.995),
                synthesis_kwargs=dict(channel_base=channel_base, channel_max=channel_max, num_fp16_res=0,
                                      conv_clamp=None, architecture="skip", resample_filter=[1, 3, 3, 1]))


def convert_state(sd: dict, G: Generator) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for i in range(G.mapping.num_layers):
        out[f"mapping.fc{i}.weight"] = sd[f"style.{i + 1}.weight"]
        out[f"mapping.fc{i}.bias"] = sd[f"style.{i + 1}.bias"]
    out["synthesis.b4.const"] = sd["input.input"][0]

    def styled_conv(src: str, dst: str, noise: str):
        out[f"{dst}.weight"] = sd[f"{src}.conv.weight"][0]
        out[f"{dst}.affine.weight"] = sd[f"{src}.conv.modulation.weight"]
        out[f"{dst}.affine.bias"] = sd[f"{src}.conv.modulation.bias"]
        out[f"{dst}.noise_strength"] = sd[f"{src}.noise.weight"].reshape([])
        out[f"{dst}.bias"] = sd[f"{src}.activate.bias"]
        out[f"{dst}.noise_const"] = sd[f"noises.{noise}"].reshape(sd[f"noises.{noise}"].shape[-2:])

    def to_rgb(src: str, dst: str):
        out[f"{dst}.weight"] = sd[f"{src}.conv.weight"][0]
        out[f"{dst}.affine.weight"] = sd[f"{src}.conv.modulation.weight"]
        out[f"{dst}.affine.bias"] = sd[f"{src}.conv.modulation.bias"]
        out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(-1)

    styled_conv("conv1", "synthesis.b4.conv1", "noise_0")
    to_rgb("to_rgb1", "synthesis.b4.torgb")
    for k, res in enumerate(G.synthesis.block_resolutions[1:]):
        styled_conv(f"convs.{2 * k}", f"synthesis.b{res}.conv0", f"noise_{2 * k + 1}")
        styled_conv(f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1", f"noise_{2 * k + 2}")
        to_rgb(f"to_rgbs.{k}", f"synthesis.b{res}.torgb")
    for k, t in G.state_dict().items():
        if k.endswith("resample_filter"):
            out[k] = t
    return out


def load_generator(data: dict, path: str) -> Generator:
    sd = {k: v for k, v in data["g_ema"].items() if isinstance(v, torch.Tensor)}
    config = generator_config(sd, path)
    G = Generator(**config)
    try:
        state = convert_state(sd, G)
    except KeyError as e:
        raise CheckpointError(f"{path}: rosinality checkpoint lacks weight {e.args[0]}") from None
    latent_avg = data.get("latent_avg")
    state["mapping.w_avg"] = torch.zeros([G.w_dim]) if latent_avg is None else torch.as_tensor(latent_avg).reshape(-1)
    load_weights(G, state, path, "generator")
    G.eval().requires_grad_(False)
    if latent_avg is None:
        with torch.no_grad():
            z = torch.randn([MEAN_LATENT_SAMPLES, G.z_dim], generator=torch.Generator().manual_seed(0))
            G.mapping.w_avg.copy_(G.mapping(z, None)[:, 0].mean(dim=0))
    return G
