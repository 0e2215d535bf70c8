"""Writers for the checkpoint formats users bring, so tests can build real files themselves.

They reproduce the on-disk structure, not the originating code:
- NVIDIA network pickles: protocol-4 pickles whose networks are reduce calls to
  `torch_utils.persistence._reconstruct_persistent_obj(meta)`, meta = {type, version, module_src,
  class_name, state}, state = the module's __dict__ (hook dicts, _parameters, _buffers, nested
  _modules, plain attributes, numpy arrays, _init_args, _init_kwargs as `dnnlib.util.EasyDict`), tensors
  pickled the torch way (legacy storage blobs via `torch.storage._load_from_bytes`).
- TensorFlow pickles: a (G, D, Gs) tuple of `dnnlib.tflib.network.Network` objects with their state
  (static_kwargs, components, variables as numpy arrays in TF layouts).
- rosinality checkpoints: torch.save of rosinality-named state dicts.
`module_src` / `build_module_src` hold code that would write a marker file if anyone executed it.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import pickle
import sys
import types

import numpy as np
import torch
from torch import nn

MARKER_SRC = "import pathlib\npathlib.Path({marker!r}).write_text('module_src was executed')\n"


# --- stand-ins registered under the names real pickles reference ---------------------------------

def _reconstruct_persistent_obj(meta):  # never called by sgvis's loader; present so pickle can name it
    raise RuntimeError("stand-in")


class EasyDict(dict):
    pass


class Network:
    """Stand-in for dnnlib.tflib.network.Network: pickles its state the way the original does."""

    def __init__(self, state: dict):
        self._state = state

    def __getstate__(self):
        return self._state


@contextlib.contextmanager
def _fake_modules():
    names = {
        "torch_utils": {}, "torch_utils.persistence": {"_reconstruct_persistent_obj": _reconstruct_persistent_obj},
        "dnnlib": {}, "dnnlib.util": {"EasyDict": EasyDict}, "dnnlib.tflib": {},
        "dnnlib.tflib.network": {"Network": Network},
    }
    saved = {n: sys.modules.get(n) for n in names}
    originals = {}
    try:
        for name, attrs in names.items():
            mod = types.ModuleType(name)
            for k, v in attrs.items():
                originals[k] = (v.__module__, v.__qualname__)
                v.__module__, v.__qualname__ = name, k
                setattr(mod, k, v)
            sys.modules[name] = mod
        yield
    finally:
        for k, (m, q) in originals.items():
            obj = {"_reconstruct_persistent_obj": _reconstruct_persistent_obj, "EasyDict": EasyDict,
                   "Network": Network}[k]
            obj.__module__, obj.__qualname__ = m, q
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


# --- NVIDIA network pickles ----------------------------------------------------------------------

class PersistentObject:
    """A module as NVIDIA's persistence layer pickles it."""

    def __init__(self, meta: dict):
        self.meta = meta

    def __reduce__(self):
        return _reconstruct_persistent_obj, (self.meta,)


_PLAIN = (bool, int, float, str, type(None), np.ndarray, np.generic)


def _easydict(d):
    out = EasyDict()
    for k, v in d.items():
        out[k] = _easydict(v) if isinstance(v, dict) else v
    return out


def persistent(module: nn.Module, class_names: dict, module_src: str, init_kwargs: dict | None = None,
               path: str = "") -> PersistentObject:
    """Describe `module` (and its children) as persistent-object records."""
    state = collections.OrderedDict()
    state["training"] = module.training
    state["_parameters"] = collections.OrderedDict((k, v) for k, v in module._parameters.items())
    state["_buffers"] = collections.OrderedDict((k, v) for k, v in module._buffers.items())
    state["_non_persistent_buffers_set"] = set()
    for hook in ("_backward_hooks", "_forward_hooks", "_forward_pre_hooks", "_state_dict_hooks",
                 "_load_state_dict_pre_hooks"):
        state[hook] = collections.OrderedDict()
    state["_modules"] = collections.OrderedDict(
        (name, persistent(child, class_names, module_src, None, f"{path}.{name}".strip(".")))
        for name, child in module._modules.items())
    for k, v in module.__dict__.items():
        if k.startswith("_") or k in ("training", "config", "source"):
            continue
        if isinstance(v, _PLAIN) or (isinstance(v, (list, tuple)) and all(isinstance(i, _PLAIN) for i in v)):
            state[k] = v
    state["_init_args"] = ()
    state["_init_kwargs"] = _easydict(init_kwargs or {})
    class_name = class_names.get(path, type(module).__name__)
    return PersistentObject(dict(type="class", version=6, module_src=module_src, class_name=class_name,
                                 state=state))


def nvidia_generator_kwargs(G, flavour: str) -> dict:
    """Constructor kwargs as each repository's training script records them."""
    cfg = G.config
    top = dict(z_dim=cfg["z_dim"], c_dim=cfg["c_dim"], w_dim=cfg["w_dim"], img_resolution=cfg["img_resolution"],
               img_channels=cfg["img_channels"])
    if flavour == "ada":
        return dict(top, mapping_kwargs=dict(cfg["mapping_kwargs"]), synthesis_kwargs=dict(cfg["synthesis_kwargs"]))
    return dict(top, mapping_kwargs=dict(cfg["mapping_kwargs"]), **cfg["synthesis_kwargs"])


MODULE_SRC_MARKS = {
    "ada": "# training/networks.py (stand-in)\nclass SynthesisBlock: pass\n",
    "sg3repo_sg2": "# training/networks_stylegan2.py (stand-in)\nclass SynthesisBlock: pass  # fused_modconv_default\n",
    "sg3": "# training/networks_stylegan3.py (stand-in)\nclass SynthesisInput: pass\n",
}


def write_nvidia_pickle(path, G_ema, flavour: str, marker: str, D=None, G=None, snapshot: bool = False,
                        D_kwargs: dict | None = None) -> None:
    """Write {G, D, G_ema, augment_pipe, training_set_kwargs} like NVIDIA's training loop does."""
    src = MODULE_SRC_MARKS[flavour] + MARKER_SRC.format(marker=marker)
    class_names = {"": "Generator"}
    g_kwargs = nvidia_generator_kwargs(G_ema, flavour)
    data = dict(G=persistent(G if G is not None else G_ema, class_names, src, g_kwargs),
                D=None if D is None else persistent(D, {"": "Discriminator"}, src, D_kwargs or {}),
                G_ema=persistent(G_ema, class_names, src, g_kwargs),
                augment_pipe=None, training_set_kwargs=None)
    if snapshot:
        pipe = nn.Module()
        pipe.register_buffer("p", torch.tensor(0.25))
        pipe.register_buffer("Hz_geom", torch.randn(12))
        pipe.xflip = 1.0
        data["augment_pipe"] = persistent(pipe, {"": "AugmentPipe"}, "# training/augment.py\n" + src)
        data["training_set_kwargs"] = _easydict(dict(class_name="training.dataset.ImageFolderDataset",
                                                     path="/data/set.zip", use_labels=G_ema.c_dim > 0,
                                                     max_size=1000, xflip=False,
                                                     resolution=G_ema.img_resolution))
    with _fake_modules(), open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)


# --- TensorFlow-era pickles ----------------------------------------------------------------------

def tf_variables(G) -> tuple[dict, dict, dict]:
    """Our generator's weights in the TF StyleGAN2 layout: (top-level, mapping, synthesis) variables."""
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in G.state_dict().items()}
    top = {"dlatent_avg": sd["mapping.w_avg"]}
    mapping, synthesis = {}, {}
    for i in range(G.mapping.num_layers):
        mapping[f"Dense{i}/weight"] = sd[f"mapping.fc{i}.weight"].T
        mapping[f"Dense{i}/bias"] = sd[f"mapping.fc{i}.bias"]
    if G.c_dim:
        mapping["LabelEmbed/weight"] = sd["mapping.embed.weight"].T
        mapping["LabelEmbed/bias"] = sd["mapping.embed.bias"]
    hwio = lambda a: a.transpose(2, 3, 1, 0)  # noqa: E731
    synthesis["4x4/Const/const"] = sd["synthesis.b4.const"][None]
    orig = G.config["synthesis_kwargs"].get("architecture") == "orig"
    for res in G.synthesis.block_resolutions:
        log2 = int(np.log2(res))
        layers = {"conv1": "4x4/Conv"} if res == 4 else {"conv0": f"{res}x{res}/Conv0_up",
                                                          "conv1": f"{res}x{res}/Conv1"}
        for layer, scope in layers.items():
            p = f"synthesis.b{res}.{layer}"
            w = hwio(sd[f"{p}.weight"])
            synthesis[f"{scope}/weight"] = w[::-1, ::-1].copy() if layer == "conv0" else w
            synthesis[f"{scope}/bias"] = sd[f"{p}.bias"]
            synthesis[f"{scope}/noise_strength"] = sd[f"{p}.noise_strength"]
            synthesis[f"{scope}/mod_weight"] = sd[f"{p}.affine.weight"].T
            synthesis[f"{scope}/mod_bias"] = sd[f"{p}.affine.bias"] - 1
            n = 0 if res == 4 else (2 * log2 - 5 if layer == "conv0" else 2 * log2 - 4)
            synthesis[f"noise{n}"] = sd[f"{p}.noise_const"][None, None]
        if f"synthesis.b{res}.torgb.weight" in sd:
            scope = f"ToRGB_lod{int(np.log2(G.img_resolution // res))}" if orig else f"{res}x{res}/ToRGB"
            p = f"synthesis.b{res}.torgb"
            synthesis[f"{scope}/weight"] = hwio(sd[f"{p}.weight"])
            synthesis[f"{scope}/bias"] = sd[f"{p}.bias"]
            synthesis[f"{scope}/mod_weight"] = sd[f"{p}.affine.weight"].T
            synthesis[f"{scope}/mod_bias"] = sd[f"{p}.affine.bias"] - 1
    return top, mapping, synthesis


def write_tf_pickle(path, G, marker: str, static_kwargs: dict | None = None) -> None:
    cfg = G.config
    sk, mk = cfg["synthesis_kwargs"], cfg["mapping_kwargs"]
    kwargs = dict(num_channels=cfg["img_channels"], resolution=cfg["img_resolution"], label_size=cfg["c_dim"],
                  latent_size=cfg["z_dim"], dlatent_size=cfg["w_dim"], fmap_base=sk["channel_base"] // 2,
                  fmap_max=sk["channel_max"], mapping_layers=mk["num_layers"], truncation_psi=0.5)
    kwargs.update(static_kwargs or {})
    top, mapping, synthesis = tf_variables(G)
    src = MARKER_SRC.format(marker=marker)

    def net(name, variables, components=None):
        return Network(dict(version=4, name=name, static_kwargs=_easydict(kwargs),
                            components=_easydict(components or {}), build_module_src=src,
                            build_func_name=f"G_{name}", variables=list(variables.items())))

    Gs = net("G", dict(top, lod=np.float32(0)), {"mapping": net("G_mapping", mapping),
                                                 "synthesis": net("G_synthesis", synthesis)})
    D = net("D", {"Output/weight": np.zeros([4, 1], np.float32)})
    with _fake_modules(), open(path, "wb") as f:
        pickle.dump((Gs, D, Gs), f, protocol=4)


# --- rosinality ---------------------------------------------------------------------------------

def rosinality_state_dict(G) -> dict[str, torch.Tensor]:
    """Our generator's weights under rosinality/stylegan2-pytorch's names and shapes."""
    sd = {k: v.detach().clone() for k, v in G.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for i in range(G.mapping.num_layers):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    out["input.input"] = sd["synthesis.b4.const"][None]
    blur = torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1]))
    blur = blur / blur.sum()

    def styled_conv(dst, src, noise, up):
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1)
        out[f"{dst}.activate.bias"] = sd[f"{src}.bias"]
        if up:
            out[f"{dst}.conv.blur.kernel"] = blur * 4
        out[f"noises.{noise}"] = sd[f"{src}.noise_const"][None, None]

    def to_rgb(dst, src, up):
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(1, -1, 1, 1)
        if up:
            out[f"{dst}.upsample.kernel"] = blur * 4

    styled_conv("conv1", "synthesis.b4.conv1", "noise_0", False)
    to_rgb("to_rgb1", "synthesis.b4.torgb", False)
    for k, res in enumerate(G.synthesis.block_resolutions[1:]):
        styled_conv(f"convs.{2 * k}", f"synthesis.b{res}.conv0", f"noise_{2 * k + 1}", True)
        styled_conv(f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1", f"noise_{2 * k + 2}", False)
        to_rgb(f"to_rgbs.{k}", f"synthesis.b{res}.torgb", True)
    return out


def write_rosinality(path, G, layout: str = "convert") -> None:
    """layout 'convert': {'g_ema', 'latent_avg'}; 'train': a train.py snapshot with args and optimisers."""
    sd = rosinality_state_dict(G)
    if layout == "convert":
        torch.save({"g_ema": sd, "latent_avg": G.mapping.w_avg.detach().clone()}, path)
        return
    params = [torch.nn.Parameter(v.clone()) for v in sd.values()]
    opt = torch.optim.Adam(params[:2], lr=0.002, betas=(0.0, 0.99))
    sum(p.sum() for p in params[:2]).backward()
    opt.step()
    args = argparse.Namespace(path="/data/lmdb", iter=800000, batch=16, n_sample=64, size=G.img_resolution,
                              r1=10, path_regularize=2, path_batch_shrink=2, d_reg_every=16, g_reg_every=4,
                              mixing=0.9, ckpt=None, lr=0.002, channel_multiplier=2, wandb=False,
                              local_rank=0, augment=False, augment_p=0, ada_target=0.6, ada_length=500000,
                              ada_every=256, latent=G.w_dim, n_mlp=G.mapping.num_layers, start_iter=0)
    torch.save({"g": {k: v * 0.9 for k, v in sd.items()}, "d": {"convs.0.0.weight": torch.randn(4, 3, 1, 1)},
                "g_ema": sd, "g_optim": opt.state_dict(), "d_optim": opt.state_dict(), "args": args,
                "ada_aug_p": 0.0}, path)


if __name__ == "__main__":
    # Write a small random-weight StyleGAN2 network pickle in NVIDIA's on-disk format (for trying the CLI).
    import os
    from stylegan.generator import Generator
    out = sys.argv[1] if len(sys.argv) > 1 else "demo.pkl"
    torch.manual_seed(0)
    G = Generator("stylegan2", z_dim=64, w_dim=64, img_resolution=64,
                  mapping_kwargs=dict(num_layers=4), synthesis_kwargs=dict(channel_base=4096, channel_max=128))
    write_nvidia_pickle(out, G.eval(), "ada", os.path.abspath(out) + ".never-created")
    print(f"wrote {out}")
