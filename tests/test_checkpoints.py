"""Every checkpoint format loads through stylegan.load and reproduces the source network exactly."""
import os
import pickle

import pytest
import torch

import stylegan
from checkpoint_writers import (write_nvidia_pickle, write_rosinality, write_tf_pickle)
from conftest import TRUNCATION_CASES, assert_images_close, inputs, randomize, tiny_generator
from naive_reference import naive_mapping, naive_rosinality, naive_synthesis
from stylegan.stylegan2 import Discriminator


def check_same_outputs(G, ref):
    """ws within 1e-5 and images within the exactness bar, for every truncation case."""
    z, c = inputs(ref)
    for psi, cutoff in TRUNCATION_CASES:
        ws_ref = ref.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff)
        ws = G.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff)
        assert (ws - ws_ref).abs().max() <= 1e-5
        assert_images_close(G.synthesis(ws, noise_mode="const"), ref.synthesis(ws_ref, noise_mode="const"))


# --- the networks themselves against independent naive computations -------------------------------

@pytest.mark.parametrize("architecture,c_dim,conv_clamp", [("skip", 0, None), ("skip", 4, 0.8), ("orig", 3, None)])
def test_stylegan2_matches_naive_reference(architecture, c_dim, conv_clamp):
    G = tiny_generator("stylegan2", c_dim=c_dim, architecture=architecture, conv_clamp=conv_clamp)
    z, c = inputs(G)
    sd = G.state_dict()
    for psi, cutoff in TRUNCATION_CASES:
        ws = G.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff)
        ws_naive = naive_mapping(sd, z, c, G.mapping.num_layers, psi, cutoff, G.num_ws)
        assert (ws - ws_naive).abs().max() <= 1e-5
        img = G.synthesis(ws, noise_mode="const")
        assert_images_close(img, naive_synthesis(sd, ws, G.synthesis.block_resolutions, architecture, conv_clamp))


def test_noise_modes_differ_as_documented():
    G = tiny_generator("stylegan2")
    ws = G.mapping(*inputs(G))
    const1, const2 = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
    assert torch.equal(const1, const2)
    assert not torch.allclose(G.synthesis(ws, noise_mode="random"), const1)
    assert not torch.allclose(G.synthesis(ws, noise_mode="none"), const1)
    with pytest.raises(ValueError):
        G.synthesis(ws, noise_mode="loud")


def test_stylegan3_transform_moves_the_canvas():
    G = tiny_generator("stylegan3")
    ws = G.mapping(*inputs(G, n=1))
    before = G.synthesis(ws)
    G.synthesis.input.transform.copy_(torch.eye(3))
    assert not torch.allclose(before, G.synthesis(ws), atol=1e-3)


# --- NVIDIA pickles ---------------------------------------------------------------------------

NVIDIA_CASES = [
    # (flavour, kind, c_dim, synthesis kwargs, snapshot)
    ("ada", "stylegan2", 0, dict(num_fp16_res=2, conv_clamp=256), True),
    ("ada", "stylegan2", 4, dict(), False),
    ("ada", "stylegan2", 0, dict(architecture="orig"), False),
    ("sg3repo_sg2", "stylegan2", 3, dict(num_fp16_res=4, conv_clamp=256), True),
    ("sg3", "stylegan3", 0, dict(), False),
    ("sg3", "stylegan3", 3, dict(), True),
    ("sg3", "stylegan3", 0, dict(conv_kernel=1, use_radial_filters=True, channel_base=2048, channel_max=64), False),
]


@pytest.mark.parametrize("flavour,kind,c_dim,sk,snapshot", NVIDIA_CASES,
                         ids=["ada", "ada-cond", "ada-orig", "sg3repo-sg2-cond", "sg3-T", "sg3-T-cond", "sg3-R"])
def test_nvidia_pickle_loads_exactly(tmp_path, marker, flavour, kind, c_dim, sk, snapshot):
    G_ema = tiny_generator(kind, c_dim=c_dim, **sk)
    G_train = randomize(tiny_generator(kind, c_dim=c_dim, **sk), seed=99)   # must not be the one loaded
    D = randomize(Discriminator(c_dim, 32, 3, channel_base=512, channel_max=32), seed=5).eval()
    path = tmp_path / "network.pkl"
    write_nvidia_pickle(path, G_ema, flavour, marker, D=D, G=G_train, snapshot=snapshot)
    G = stylegan.load(path)
    assert G.source["format"] == "nvidia"
    assert (G.kind, G.c_dim, G.num_ws, G.img_resolution) == (kind, c_dim, G_ema.num_ws, 32)
    check_same_outputs(G, G_ema)
    z, c = inputs(G_ema)
    assert not torch.allclose(G(z, c), G_train(z, c), atol=1e-3)


def test_nvidia_pickle_uses_recorded_layer_settings(tmp_path, marker):
    """fp16 flags and conv_clamp come from what the pickle recorded for each layer."""
    G_ema = tiny_generator("stylegan2", num_fp16_res=2, conv_clamp=256)
    path = tmp_path / "n.pkl"
    write_nvidia_pickle(path, G_ema, "sg3repo_sg2", marker)
    G = stylegan.load(path)
    assert [b.use_fp16 for b in G.synthesis.blocks()] == [b.use_fp16 for b in G_ema.synthesis.blocks()]
    assert G.synthesis.b32.use_fp16 and not G.synthesis.b8.use_fp16
    assert G.synthesis.b16.conv1.conv_clamp == 256


def test_nvidia_discriminator_loads(tmp_path, marker):
    G_ema = tiny_generator("stylegan2", c_dim=4)
    D = randomize(Discriminator(4, 32, 3, channel_base=512, channel_max=32), seed=5).eval()
    path = tmp_path / "n.pkl"
    write_nvidia_pickle(path, G_ema, "ada", marker, D=D,
                        D_kwargs=dict(c_dim=4, img_resolution=32, img_channels=3, channel_base=512, channel_max=32,
                                      block_kwargs=dict(freeze_layers=0), mapping_kwargs={},
                                      epilogue_kwargs=dict(mbstd_group_size=None)))
    D2 = stylegan.load_discriminator(path)
    img = torch.randn(2, 3, 32, 32)
    c = G_ema.make_c(2, 1)
    D.b4.mbstd.group_size = None
    out = D2(img, c)
    assert out.shape == (2, 1)
    assert torch.allclose(out, D(img, c), atol=1e-5)


# --- TensorFlow pickles -----------------------------------------------------------------------

@pytest.mark.parametrize("architecture,c_dim", [("skip", 0), ("orig", 0), ("skip", 3)])
def test_tensorflow_pickle_loads_exactly(tmp_path, marker, architecture, c_dim):
    G_src = tiny_generator("stylegan2", c_dim=c_dim, architecture=architecture)
    path = tmp_path / "karras2019.pkl"
    write_tf_pickle(path, G_src, marker, static_kwargs={"architecture": architecture} if architecture != "skip"
                    else None)
    G = stylegan.load(path)
    assert G.source["format"] == "tensorflow"
    assert G.config["synthesis_kwargs"]["architecture"] == architecture
    check_same_outputs(G, G_src)


def test_tensorflow_pickle_with_unknown_setting_is_refused(tmp_path, marker):
    path = tmp_path / "tf.pkl"
    write_tf_pickle(path, tiny_generator("stylegan2"), marker, static_kwargs={"fancy_new_thing": 3})
    with pytest.raises(stylegan.CheckpointError, match="fancy_new_thing"):
        stylegan.load(path)


# --- rosinality -------------------------------------------------------------------------------

def test_rosinality_convert_layout_matches_rosinality_model(tmp_path):
    G_src = tiny_generator("stylegan2", channel_base=16384 * 2, channel_max=16)  # channel_base irrelevant < 64px
    path = tmp_path / "550000.pt"
    write_rosinality(path, G_src, "convert")
    G = stylegan.load(path)
    assert G.source["format"] == "rosinality"
    sd = torch.load(path, weights_only=True)["g_ema"]
    z, _ = inputs(G)
    for psi in (1.0, 0.7):
        ref_img, ref_latent = naive_rosinality(sd, z, psi, G_src.mapping.w_avg, 32)
        ws = G.mapping(z, None, truncation_psi=psi)
        assert (ws - ref_latent).abs().max() <= 1e-5
        assert_images_close(G.synthesis(ws), ref_img)


def test_rosinality_train_snapshot_loads_with_mean_latent(tmp_path):
    G_src = tiny_generator("stylegan2", resolution=64, channel_base=16384, channel_max=512 // 16)
    path = tmp_path / "train.pt"
    write_rosinality(path, G_src, "train")
    G = stylegan.load(path)
    assert G.img_resolution == 64
    z, _ = inputs(G)
    assert_images_close(G(z), G_src(z))          # psi = 1 does not use w_avg
    mapped = G.mapping(torch.randn(4096, G.z_dim, generator=torch.Generator().manual_seed(0)))[:, 0].mean(0)
    assert torch.allclose(G.mapping.w_avg, mapped, atol=1e-5)


# --- sgvis format -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind,sk", [("stylegan2", dict(num_fp16_res=2, conv_clamp=256)),
                                     ("stylegan3", dict(conv_kernel=1, use_radial_filters=True))])
def test_sgvis_format_round_trip(tmp_path, kind, sk):
    G_src = tiny_generator(kind, c_dim=2, **sk)
    path = tmp_path / "g.safetensors"
    stylegan.save(G_src, path)
    G = stylegan.load(path)
    assert G.source["format"] == "sgvis"
    assert G.config == G_src.config
    check_same_outputs(G, G_src)


def test_unsupported_generator_class_is_named(tmp_path, marker):
    from checkpoint_writers import _fake_modules, persistent
    G = tiny_generator("stylegan2")
    rec = persistent(G, {"": "StyleGAN1Generator"}, "# src", {})
    path = tmp_path / "old.pkl"
    with _fake_modules(), open(path, "wb") as f:
        pickle.dump({"G_ema": rec, "G": rec, "D": None}, f, protocol=4)
    with pytest.raises(stylegan.CheckpointError, match="StyleGAN1Generator"):
        stylegan.load(path)


def test_load_moves_to_device_and_is_frozen(tmp_path):
    path = tmp_path / "g.safetensors"
    stylegan.save(tiny_generator("stylegan2"), path)
    G = stylegan.load(os.fspath(path), device="cpu")
    assert not G.training and not any(p.requires_grad for p in G.parameters())
