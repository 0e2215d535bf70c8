"""NVIDIA network pickles (stylegan2-ada-pytorch and stylegan3 repositories).

The architecture comes from each network's recorded constructor kwargs merged over the defaults of
the class the pickle names (the two repositories use different defaults); per-layer attributes that
the pickle records (fp16 use, conv clamp) then override, so the network runs exactly as saved.
"""
from __future__ import annotations


from stylegan.errors import CheckpointError
from stylegan.formats.common import load_weights
from stylegan.generator import Generator
from stylegan.safe_pickle import PersistentRecord
from stylegan.stylegan2 import Discriminator

# Defaults of the classes each repository defines (facts of the public sources).
_MAPPING_DEFAULTS = {
    "ada": dict(num_layers=8, embed_features=None, layer_features=None, activation="lrelu",
                lr_multiplier=0.01, w_avg_beta=0.995),
    "sg3repo_sg2": dict(num_layers=8, embed_features=None, layer_features=None, activation="lrelu",
                        lr_multiplier=0.01, w_avg_beta=0.998),
    "sg3": dict(num_layers=2, lr_multiplier=0.01, w_avg_beta=0.998),
}
_SYNTHESIS_DEFAULTS = {
    "ada": dict(channel_base=32768, channel_max=512, num_fp16_res=0, architecture="skip",
                resample_filter=[1, 3, 3, 1], conv_clamp=None, fp16_channels_last=False),
    "sg3repo_sg2": dict(channel_base=32768, channel_max=512, num_fp16_res=4, architecture="skip",
                        resample_filter=[1, 3, 3, 1], conv_clamp=256, fp16_channels_last=False),
    "sg3": dict(channel_base=32768, channel_max=512, num_layers=14, num_critical=2, first_cutoff=2,
                first_stopband=2 ** 2.1, last_stopband_rel=2 ** 0.3, margin_size=10, output_scale=0.25,
                num_fp16_res=4, conv_kernel=3, filter_size=6, lrelu_upsampling=2, use_radial_filters=False,
                conv_clamp=256, magnitude_ema_beta=0.999),
}
# Keys that only matter for training or for NVIDIA's kernels; they do not change the images.
_IGNORED_SYNTHESIS_KEYS = {"fused_modconv_default", "use_noise_default"}
_LAYER_KEYS_SG2 = {"use_noise", "activation", "kernel_size"}


def _plain(value):
    """numpy scalars/arrays and EasyDicts from the pickle -> plain JSON-able Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _flavour(record: PersistentRecord, kwargs: dict) -> str:
    synthesis = record.children().get("synthesis")
    if synthesis is not None and "input" in synthesis.children():
        return "sg3"
    if "fused_modconv_default" in record.module_src or "networks_stylegan2" in record.module_src:
        return "sg3repo_sg2"
    if "synthesis_kwargs" in kwargs or "class SynthesisBlock" in record.module_src:
        return "ada"
    return "sg3repo_sg2"


def _check_keys(path: str, what: str, given: dict, known: set) -> None:
    unknown = sorted(set(given) - known)
    if unknown:
        raise CheckpointError(f"{path}: {what} uses setting {unknown[0]!r}, which sgvis does not support")


def generator_config(record: PersistentRecord, path: str) -> dict:
    kwargs = _plain(dict(record.state.get("_init_kwargs") or {}))
    flavour = _flavour(record, kwargs)
    top = {k: kwargs.pop(k) for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels") if k in kwargs}
    for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"):
        if k not in top:
            if k not in record.state:
                raise CheckpointError(f"{path}: the generator record lacks {k}")
            top[k] = int(record.state[k])
    mapping = dict(_MAPPING_DEFAULTS[flavour])
    mapping.update(kwargs.pop("mapping_kwargs", None) or {})
    synthesis = dict(_SYNTHESIS_DEFAULTS[flavour])
    synthesis.update(kwargs.pop("synthesis_kwargs", None) or {})
    synthesis.update(kwargs)  # the stylegan3 repository passes synthesis settings at the top level
    for key in _IGNORED_SYNTHESIS_KEYS:
        synthesis.pop(key, None)
    known = set(_SYNTHESIS_DEFAULTS[flavour]) | (_LAYER_KEYS_SG2 if flavour != "sg3" else set())
    _check_keys(path, "the generator", synthesis, known)
    _check_keys(path, "the mapping network", mapping, set(_MAPPING_DEFAULTS["ada"]))
    if mapping.get("w_avg_beta") is None:
        mapping["w_avg_beta"] = 0.995
    kind = "stylegan3" if flavour == "sg3" else "stylegan2"
    return dict(kind=kind, **top, mapping_kwargs=mapping, synthesis_kwargs=synthesis)


def _apply_recorded_attributes(module, record: PersistentRecord) -> None:
    """Use the per-layer fp16/clamp settings exactly as the pickle recorded them."""
    for attr in ("use_fp16", "conv_clamp", "channels_last"):
        if attr in record.state and hasattr(module, attr):
            value = record.state[attr]
            if value is None or isinstance(value, (bool, int, float)) or hasattr(value, "item"):
                setattr(module, attr, value.item() if hasattr(value, "item") else value)
    for name, child in record.children().items():
        sub = getattr(module, name, None)
        if sub is not None:
            _apply_recorded_attributes(sub, child)


def generator_from_record(record: PersistentRecord, path: str) -> Generator:
    if not isinstance(record, PersistentRecord):
        raise CheckpointError(f"{path}: G_ema is not a network record")
    if record.class_name != "Generator":
        raise CheckpointError(f"{path}: G_ema is a {record.class_name}, not a supported Generator class")
    config = generator_config(record, path)
    try:
        G = Generator(**config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unsupported generator settings ({e})") from None
    load_weights(G, record.tensors(), path, "generator")
    _apply_recorded_attributes(G, record)
    return G.eval().requires_grad_(False)


_D_DEFAULTS = dict(architecture="resnet", channel_base=32768, channel_max=512, num_fp16_res=0, conv_clamp=None,
                   cmap_dim=None, block_kwargs={}, mapping_kwargs={}, epilogue_kwargs={})


def discriminator_from_record(record: PersistentRecord, path: str) -> Discriminator:
    if not isinstance(record, PersistentRecord) or record.class_name != "Discriminator":
        raise CheckpointError(f"{path}: D is not a supported Discriminator record")
    kwargs = dict(_D_DEFAULTS)
    kwargs.update(_plain(dict(record.state.get("_init_kwargs") or {})))
    block = dict(kwargs.get("block_kwargs") or {})
    block.pop("freeze_layers", None)  # training only
    kwargs["block_kwargs"] = block
    try:
        D = Discriminator(**kwargs)
    except TypeError as e:
        raise CheckpointError(f"{path}: unsupported discriminator settings ({e})") from None
    load_weights(D, record.tensors(), path, "discriminator")
    _apply_recorded_attributes(D, record)
    return D.eval().requires_grad_(False)


def is_nvidia_pickle(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("G_ema"), PersistentRecord)


def load_generator(data: dict, path: str) -> Generator:
    return generator_from_record(data["G_ema"], path)


def describe(data: dict) -> str:
    record = data["G_ema"]
    flavour = _flavour(record, dict(record.state.get("_init_kwargs") or {}))
    return {"ada": "NVIDIA stylegan2-ada-pytorch pickle", "sg3repo_sg2": "NVIDIA stylegan3-repo pickle (StyleGAN2)",
            "sg3": "NVIDIA stylegan3 pickle"}[flavour]


