"""TensorFlow-era StyleGAN2 pickles (NVIDIA's stylegan2 / stylegan2-ada TF releases), read without
TensorFlow.

Conversions from the TF variables: dense weights are transposed; conv weights go HWIO -> OIHW; the
upsampling conv (`Conv0_up`) and the resnet `Skip` are flipped spatially; modulation biases gain +1;
`noise{n}` -> `noise_const`; `dlatent_avg` -> `w_avg`; TF `fmap_base` is half of `channel_base`.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from stylegan.errors import CheckpointError
from stylegan.formats.common import load_weights
from stylegan.generator import Generator
from stylegan.safe_pickle import TFNetworkRecord

# TF static kwarg -> (our setting, default); None-valued TF settings fall back to the given `none`.
_KWARGS = {
    "latent_size": ("z_dim", 512), "label_size": ("c_dim", 0), "dlatent_size": ("w_dim", 512),
    "resolution": ("img_resolution", 1024), "num_channels": ("img_channels", 3),
}
_SYNTHESIS_KWARGS = {
    "fmap_base": ("channel_base", 16384), "fmap_max": ("channel_max", 512), "num_fp16_res": ("num_fp16_res", 0),
    "conv_clamp": ("conv_clamp", None), "architecture": ("architecture", "skip"),
    "resample_kernel": ("resample_filter", [1, 3, 3, 1]), "use_noise": ("use_noise", True),
    "nonlinearity": ("activation", "lrelu"),
}
_MAPPING_KWARGS = {
    "mapping_layers": ("num_layers", 8), "label_fmaps": ("embed_features", None),
    "mapping_fmaps": ("layer_features", None), "mapping_nonlinearity": ("activation", "lrelu"),
    "mapping_lrmul": ("lr_multiplier", 0.01), "w_avg_beta": ("w_avg_beta", 0.995),
}
_IGNORED = {"truncation_psi", "truncation_cutoff", "style_mixing_prob", "structure", "conditioning",
            "fused_modconv"}


def is_tf_pickle(data) -> bool:
    return (isinstance(data, tuple) and len(data) == 3 and all(isinstance(n, TFNetworkRecord) for n in data)) \
        or isinstance(data, TFNetworkRecord)


def collect_variables(net: TFNetworkRecord, prefix: str = "") -> dict[str, np.ndarray]:
    out = {prefix + name: np.asarray(value) for name, value in net.variables}
    for name, component in net.components.items():
        out.update(collect_variables(component, prefix + name + "/"))
    return out


def generator_config(net: TFNetworkRecord, variables: dict, path: str) -> dict:
    version = net.state.get("version", 0)
    if version < 4:
        raise CheckpointError(f"{path}: TensorFlow network pickle version {version} is too old "
                              f"(StyleGAN1 and early StyleGAN2 snapshots are not supported)")
    tf_kwargs = dict(net.static_kwargs)
    unknown = sorted(set(tf_kwargs) - set(_KWARGS) - set(_SYNTHESIS_KWARGS) - set(_MAPPING_KWARGS) - _IGNORED)
    if unknown:
        raise CheckpointError(f"{path}: TensorFlow generator uses setting {unknown[0]!r}, which sgvis does not "
                              f"support")

    def pick(table):
        out = {}
        for tf_name, (name, default) in table.items():
            value = tf_kwargs.get(tf_name, default)
            out[name] = default if value is None and name == "w_avg_beta" else value
        return out

    config = pick(_KWARGS)
    synthesis = pick(_SYNTHESIS_KWARGS)
    synthesis["channel_base"] = int(synthesis["channel_base"]) * 2
    synthesis["resample_filter"] = list(np.asarray(synthesis["resample_filter"]).tolist())
    if any(re.fullmatch(r"synthesis/ToRGB_lod\d+/.*", k) for k in variables):
        synthesis["architecture"] = "orig"
    mapping = pick(_MAPPING_KWARGS)
    if mapping["w_avg_beta"] is None:
        mapping["w_avg_beta"] = 1
    return dict(kind="stylegan2", **config, mapping_kwargs=mapping, synthesis_kwargs=synthesis)


def convert_variables(variables: dict[str, np.ndarray], G: Generator, path: str) -> dict[str, torch.Tensor]:
    """TF variable names and layouts -> this package's state_dict."""
    v = dict(variables)
    for name in list(v):
        m = re.fullmatch(r"synthesis/ToRGB_lod(\d+)/(.*)", name)
        if m:
            r = G.img_resolution // (2 ** int(m.group(1)))
            v[f"synthesis/{r}x{r}/ToRGB/{m.group(2)}"] = v[name]

    def get(name):
        if name not in v:
            raise CheckpointError(f"{path}: TensorFlow variable {name} is missing")
        return v[name]

    dense = lambda a: a.T  # noqa: E731  [in, out] -> [out, in]
    conv = lambda a: a.transpose(3, 2, 0, 1)  # noqa: E731  HWIO -> OIHW
    out: dict[str, np.ndarray] = {}
    for key in G.state_dict():
        parts = key.split(".")
        if key.endswith("resample_filter"):
            continue
        if key == "mapping.w_avg":
            out[key] = get("dlatent_avg")
        elif parts[:2] == ["mapping", "embed"]:
            a = get(f"mapping/LabelEmbed/{parts[2]}")
            out[key] = dense(a) if parts[2] == "weight" else a
        elif parts[0] == "mapping":
            i = int(parts[1][2:])
            a = get(f"mapping/Dense{i}/{parts[2]}")
            out[key] = dense(a) if parts[2] == "weight" else a
        elif key == "synthesis.b4.const":
            out[key] = get("synthesis/4x4/Const/const")[0]
        else:
            r = int(parts[1][1:])
            layer = parts[2]
            log2 = int(np.log2(r))
            scope = {"conv0": f"{r}x{r}/Conv0_up", "conv1": f"{r}x{r}/Conv1" if r > 4 else "4x4/Conv",
                     "torgb": f"{r}x{r}/ToRGB", "skip": f"{r}x{r}/Skip"}[layer]
            tail = parts[3:]
            if tail == ["noise_const"]:
                n = 0 if r == 4 else (2 * log2 - 5 if layer == "conv0" else 2 * log2 - 4)
                out[key] = get(f"synthesis/noise{n}")[0, 0]
            elif tail == ["affine", "weight"]:
                out[key] = dense(get(f"synthesis/{scope}/mod_weight"))
            elif tail == ["affine", "bias"]:
                out[key] = get(f"synthesis/{scope}/mod_bias") + 1
            elif tail == ["weight"]:
                a = get(f"synthesis/{scope}/weight")
                if layer in ("conv0", "skip"):
                    a = a[::-1, ::-1]
                out[key] = conv(a)
            else:
                out[key] = get(f"synthesis/{scope}/{tail[0]}")
    state = {k: torch.from_numpy(np.array(a, dtype=np.float32, order="C")) for k, a in out.items()}
    for k, t in G.state_dict().items():
        if k.endswith("resample_filter"):
            state[k] = t
    return state


def load_generator(data, path: str) -> Generator:
    net = data[2] if isinstance(data, tuple) else data   # (G, D, Gs): render with Gs
    variables = collect_variables(net)
    config = generator_config(net, variables, path)
    try:
        G = Generator(**config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unsupported TensorFlow generator settings ({e})") from None
    load_weights(G, convert_variables(variables, G, path), path, "generator")
    return G.eval().requires_grad_(False)
