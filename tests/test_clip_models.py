"""CLIP towers (sgvis.train.clip_models) and `sgvis train-audio-clip`, with tiny randomly initialised CLIP models."""
from __future__ import annotations

import csv
import json
import os
import shutil
import string
from fractions import Fraction

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from sgvis.train import clip_models as cm  # noqa: E402
from sgvis.errors import UserError  # noqa: E402
from sgvis.features.analysis import MelConfig  # noqa: E402

# A tiny CLIP: hidden 32, 2 layers, 32x32 images in 8x8 patches, 16-d embeddings.  The text vocabulary has
# 56 ids so that the tiny BPE tokenizer below fits it (ids 54 / 55 are its start / end tokens).
TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=56,
            max_position_embeddings=16, bos_token_id=54, eos_token_id=55, pad_token_id=55)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
              patch_size=8)
TINY = dict(projection_dim=16, text_config=TEXT, vision_config=VISION)


@pytest.fixture(scope="module")
def towers():
    return cm.load_clip({"config": TINY})


def _write_tiny_tokenizer(directory) -> None:
    """vocab.json / merges.txt of a byte-level BPE over a-z with two merges ('ca', 'cat</w>')."""
    vocab = {}
    for suffix in ("", "</w>"):
        for ch in string.ascii_lowercase:
            vocab[ch + suffix] = len(vocab)
    merges = [("c", "a"), ("ca", "t</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    assert len(vocab) == TEXT["vocab_size"]
    with open(os.path.join(directory, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(directory, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


# -- towers -------------------------------------------------------------------------------------------------
def test_towers_are_frozen_and_encode_images_differentiably(towers):
    assert towers.embed_dim == 16 and towers.image_size == 32
    assert not any(p.requires_grad for p in towers.parameters())
    towers.train()
    assert not towers.training and not towers.model.training
    for shape in [(2, 3, 32, 32), (2, 3, 64, 64), (1, 3, 20, 20), (2, 3, 48, 80)]:
        img = (torch.rand(shape) * 2 - 1).requires_grad_(True)
        e = towers.encode_image(img)
        assert e.shape == (shape[0], 16) and e.dtype == torch.float32
        assert torch.allclose(e.norm(dim=-1), torch.ones(shape[0]), atol=1e-5)
        e[:, 0].sum().backward()
        assert img.grad is not None and img.grad.abs().sum() > 0 and torch.isfinite(img.grad).all()
    # Out-of-range pixels are clipped like a saved frame would be, yet gradients still pass.
    img = torch.full((1, 3, 32, 32), 3.0, requires_grad=True)
    ref = towers.encode_image(torch.ones(1, 3, 32, 32))
    e = towers.encode_image(img)
    assert torch.allclose(e, ref, atol=1e-6)
    e.sum().backward()
    assert img.grad.abs().sum() > 0


def test_preprocess_matches_clip_normalisation(towers):
    x = torch.zeros(1, 3, 32, 32)                       # mid grey in [-1, 1]
    px = towers.preprocess(x)
    want = (0.5 - torch.tensor(cm.OPENAI_MEAN)) / torch.tensor(cm.OPENAI_STD)
    assert torch.allclose(px[0, :, 5, 5], want, atol=1e-5)


def test_encode_text_with_the_fallback_tokenizer(towers):
    e = towers.encode_text(["a red sunset", "a red sunset", "waves " * 40, "Waves"])
    assert e.shape == (4, 16)
    assert torch.allclose(e.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.allclose(e[0], e[1]) and not torch.allclose(e[0], e[3])
    ids, mask = towers.tokenizer(["waves " * 40])      # truncated to the context length, ends with eos
    assert ids.shape == (1, 16) and ids[0, 0] == 54 and ids[0, -1] == 55 and mask.sum() == 16
    assert towers.encode_text("one").shape == (1, 16)


def test_random_config_model_is_the_same_every_time(towers):
    again = cm.load_clip({"config": TINY})
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(towers.encode_image(x), again.encode_image(x))
    other = cm.load_clip({"config": TINY, "seed": 1})
    assert not torch.allclose(towers.encode_image(x), other.encode_image(x))


def test_load_clip_from_a_saved_hf_directory(towers, tmp_path):
    d = tmp_path / "clip"
    towers.model.save_pretrained(str(d))
    # Without tokenizer files the image tower still works; text is a one-line error.
    t = cm.load_clip({"path": str(d)})
    x = torch.rand(2, 3, 40, 40) * 2 - 1
    assert torch.allclose(t.encode_image(x), towers.encode_image(x), atol=1e-6)
    with pytest.raises(UserError, match="tokenizer") as err:
        t.encode_text(["a cat"])
    assert "\n" not in str(err.value)
    # With a (tiny) CLIP BPE tokenizer beside the weights, and custom normalisation in preprocessor_config.json.
    _write_tiny_tokenizer(str(d))
    with open(d / "preprocessor_config.json", "w") as f:
        json.dump({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}, f)
    t = cm.load_clip({"path": str(d), "prompt": "ignored here"})
    assert isinstance(t.tokenizer, cm._HFTokenizer)
    ids, mask = t.tokenizer(["a cat", "cat"])
    assert ids[1].tolist()[:3] == [54, 53, 55]          # <start> 'cat</w>' <end>: the BPE merges were used
    with torch.no_grad():
        ref = t.model.get_text_features(input_ids=ids, attention_mask=mask)
    ref = torch.nn.functional.normalize(cm._embedding(ref), dim=-1)
    e = t.encode_text(["a cat", "cat"])
    assert torch.allclose(e, ref, atol=1e-6) and not torch.allclose(e[0], e[1])
    assert torch.allclose(t.preprocess(torch.zeros(1, 3, 32, 32))[0, :, 0, 0], torch.zeros(3), atol=1e-6)


@pytest.mark.parametrize("cfg, needle", [
    ({"path": "/nonexistent/clip-dir"}, "/nonexistent/clip-dir"),
    ({"name": "openai/clip-vit-base-patch32", "cache_dir": None}, "openai/clip-vit-base-patch32"),
    ({}, "clip.path"),
    ({"path": "x", "name": "y"}, "only one"),
    ({"config": {"projection_dim": "big"}}, "clip.config"),
    ({"config": TINY, "dtype": "int8"}, "dtype"),
    ("clip.pt", "mapping"),
])
def test_load_clip_errors_are_one_line(cfg, needle, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(UserError) as err:
        cm.load_clip(cfg)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg


def test_load_clip_rejects_a_directory_without_clip(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UserError, match="not CLIP"):
        cm.load_clip({"path": str(tmp_path)})
    with pytest.raises(UserError, match="config.json"):
        cm.load_clip({"path": str(tmp_path / "..")})


def test_missing_transformers_is_a_user_error(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError("no transformers")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(UserError, match=r"pip install 'sgvis\[clip\]'"):
        cm.load_clip({"config": TINY})


# -- audio encoder ------------------------------------------------------------------------------------------
def _small_encoder(dim=16, **kw):
    torch.manual_seed(0)
    return cm.AudioClipEncoder(dim, MelConfig(n_mels=32, window_frames=20), channels=(8, 16), head_hidden=32, **kw)


def test_audio_encoder_shapes_and_round_trip(tmp_path):
    enc = _small_encoder()
    with torch.no_grad():
        enc.in_mean.fill_(-5.0)
        enc.logit_scale.fill_(2.0)
    mel = torch.randn(3, 32, 20) - 6
    e = enc(mel)
    assert e.shape == (3, 16) and torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert enc(torch.randn(32, 20)).shape == (1, 16)
    with pytest.raises(ValueError):
        enc(torch.randn(3, 31, 20))
    assert float(enc.scale().detach()) == pytest.approx(np.exp(2.0), rel=1e-5)
    with torch.no_grad():
        enc.logit_scale.fill_(10.0)
    assert float(enc.scale().detach()) == pytest.approx(100.0)
    path = str(tmp_path / "a.safetensors")
    cm.save_audio_encoder(enc, path, extra={"steps": 7, "clip": "tiny"})
    back = cm.load_audio_encoder(path, embed_dim=16)
    assert not back.training and not any(p.requires_grad for p in back.parameters())
    assert back.mel_config == enc.mel_config and back.channels == (8, 16) and back.head_hidden == 32
    assert torch.allclose(back(mel), enc(mel), atol=1e-6)
    meta = cm.read_audio_encoder_metadata(path)
    assert meta["format"] == cm.FORMAT_TAG and meta["steps"] == "7" and meta["clip"] == "tiny"
    assert [p for p in os.listdir(tmp_path) if p != "a.safetensors"] == []      # no temporary left


def test_audio_encoder_file_errors(tmp_path):
    from safetensors.torch import save_file
    enc = _small_encoder()
    good = str(tmp_path / "a.safetensors")
    cm.save_audio_encoder(enc, good)
    cases = {}
    cases["missing"] = str(tmp_path / "nope.safetensors")
    cases["garbage"] = str(tmp_path / "garbage.safetensors")
    with open(cases["garbage"], "wb") as f:
        f.write(b"not a safetensors file at all")
    cases["foreign"] = str(tmp_path / "foreign.safetensors")
    save_file({"w": torch.zeros(2)}, cases["foreign"], metadata={"format": "sgvis-steering"})
    cases["truncated"] = str(tmp_path / "trunc.safetensors")
    with open(good, "rb") as f, open(cases["truncated"], "wb") as g:
        g.write(f.read()[:-100])
    cases["bad_weights"] = str(tmp_path / "bad.safetensors")
    meta = cm.read_audio_encoder_metadata(good)
    save_file({"head.0.weight": torch.zeros(3, 3)}, cases["bad_weights"], metadata=meta)
    for name, path in cases.items():
        with pytest.raises(cm.AudioEncoderFileError) as err:
            cm.load_audio_encoder(path)
        assert "\n" not in str(err.value) and path in str(err.value), name
    with pytest.raises(cm.AudioEncoderMismatch, match="16") as err:
        cm.load_audio_encoder(good, embed_dim=512)
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)


def test_losses():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 16, generator=g), dim=-1)
    assert float(cm.clip_loss_av(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(cm.clip_loss_av(a, -a)) == pytest.approx(2.0, abs=1e-6)
    assert float(cm.clip_loss_av(a, a[:1])) > 0                      # broadcast of one embedding
    # Matching pairs give a low loss, shuffled pairs a high one; with labels, same-label rows are positives.
    low = cm.info_nce(a, a, torch.tensor(np.log(100.0)))
    high = cm.info_nce(a, a.roll(1, 0), torch.tensor(np.log(100.0)))
    assert float(low) < 0.1 < float(high)
    lab = torch.tensor([0, 0, 1, 1, 2, 2])
    b = a.clone()
    b[1] = a[0]
    assert torch.isfinite(cm.info_nce(a, b, 2.0, labels=lab))
    with pytest.raises(ValueError):
        cm.info_nce(a, a[:3], 1.0)


def test_info_nce_training_decreases_the_loss():
    torch.manual_seed(0)
    enc = _small_encoder()
    mels = torch.randn(8, 32, 20) * 2 - 6
    targets = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = cm.info_nce(enc(mels), targets, enc.logit_scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert enc.logit_scale.grad is not None


# -- sgvis train-audio-clip ---------------------------------------------------------------------------------
def _write_clip(path, seconds: float, freq: float, color, sr: int = 22050, fps: int = 8, size: int = 32) -> None:
    """An mp4 with a solid-colour picture and a pure tone."""
    import av
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(str(path), "w", format="mp4") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = size, size, "yuv420p"
        a = c.add_stream("aac", rate=sr, layout="mono")
        img = np.empty((size, size, 3), np.uint8)
        img[:] = color
        for _ in range(int(seconds * fps)):
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        t = np.arange(int(seconds * sr)) / sr
        x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)[None]
        for i in range(0, x.shape[1], 1024):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, i:i + 1024]), format="fltp", layout="mono")
            f.sample_rate, f.pts, f.time_base = sr, i, Fraction(1, sr)
            for p in a.encode(f):
                c.mux(p)
        for p in a.encode():
            c.mux(p)


@pytest.fixture(scope="module")
def clip_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    for i, (label, freq, color) in enumerate([("low_hum", 150, (200, 30, 30)), ("low_hum", 220, (230, 120, 20)),
                                              ("high_whistle", 2500, (20, 40, 220)),
                                              ("high_whistle", 3600, (30, 200, 60))]):
        _write_clip(root / "data" / label / f"clip{i}.mp4", 2.0, freq, color)
    with open(root / "tiny.yaml", "w") as f:
        import yaml
        yaml.safe_dump({"clip": {"config": TINY, "prompt": "the sound of {label}"},
                        "train_audio_clip": {"channels": [8, 16], "head_hidden": 32}}, f)
    return root


def _main(args):
    from sgvis.cli import main
    return main(args)


def _fixed_batch_loss(enc_path, root, towers):
    from sgvis.data.clip_data import ClipSet, ClipSetConfig, collate_clips
    ds = ClipSet(str(root / "data"), ClipSetConfig(fps=8, clip_frames=1, frame_size=32), progress=False)
    batch = collate_clips([ds[i] for i in range(0, len(ds), 2)])
    enc = cm.load_audio_encoder(enc_path, embed_dim=towers.embed_dim)
    with torch.no_grad():
        audio = enc(batch["mels"][:, 0])
        img = towers.encode_image(batch["frames"][:, 0].float() / 127.5 - 1)
        return float(cm.info_nce(audio, img, enc.logit_scale))


def test_train_audio_clip_end_to_end(clip_root, tmp_path, monkeypatch, capsys, towers):
    monkeypatch.setenv("SGVIS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "enc.safetensors"
    base = ["train-audio-clip", "--data", str(clip_root / "data"), "--out", str(out), "--config",
            str(clip_root / "tiny.yaml"), "--batch", "8", "--lr", "3e-3", "--quiet"]
    assert _main(base + ["--steps", "2"]) == 0
    assert "wrote" in capsys.readouterr().out
    first = tmp_path / "first.safetensors"
    shutil.copy(out, first)
    meta = cm.read_audio_encoder_metadata(str(first))
    assert meta["steps"] == "2" and json.loads(meta["labels"]) == ["high whistle", "low hum"]
    assert meta["prompt"] == "the sound of {label}"

    # The output exists: without --overwrite / --resume that is a one-line error.
    assert _main(base + ["--steps", "4"]) == 2
    assert "already exists" in capsys.readouterr().err

    # --resume continues the step count from the state beside --out.
    assert _main(base + ["--steps", "20", "--resume", "--save-every", "10"]) == 0
    with open(tmp_path / "enc.log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 21))
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert rows[0]["loss_frame"] and rows[0]["loss_text"]
    state = torch.load(tmp_path / "enc.state.pt", weights_only=True)
    assert state["step"] == 20
    assert cm.read_audio_encoder_metadata(str(out))["steps"] == "20"
    enc = cm.load_audio_encoder(str(out), embed_dim=16)
    assert enc.mel_config == MelConfig() and enc.channels == (8, 16)

    # Training lowered the audio <-> frame loss on a fixed batch.
    before, after = _fixed_batch_loss(str(first), clip_root, towers), _fixed_batch_loss(str(out), clip_root, towers)
    print("fixed-batch loss", before, after)
    assert np.isfinite(after) and after < before - 0.1, (before, after)
    assert sorted(os.listdir(tmp_path)) == ["cache", "enc.log.csv", "enc.safetensors", "enc.state.pt",
                                            "first.safetensors"]


def test_train_audio_clip_interrupt_keeps_a_valid_checkpoint(clip_root, tmp_path, monkeypatch, capsys):
    from sgvis.train import audio_clip as tac
    monkeypatch.setenv("SGVIS_CACHE", str(tmp_path / "cache"))
    real_step = tac.AudioClipTrainer.step

    def step(self, batch):
        if self.step_count == 3:
            raise KeyboardInterrupt
        return real_step(self, batch)
    monkeypatch.setattr(tac.AudioClipTrainer, "step", step)
    out = tmp_path / "enc.safetensors"
    rc = _main(["train-audio-clip", "--data", str(clip_root / "data"), "--out", str(out), "--config",
                str(clip_root / "tiny.yaml"), "--batch", "4", "--steps", "50", "--frame-weight", "0", "--quiet"])
    assert rc == 130
    assert "--resume" in capsys.readouterr().err
    assert cm.read_audio_encoder_metadata(str(out))["steps"] == "3"
    assert torch.load(tmp_path / "enc.state.pt", weights_only=True)["step"] == 3
    cm.load_audio_encoder(str(out), embed_dim=16)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".sgvis-")]


@pytest.mark.parametrize("case", ["missing", "empty", "no_clip", "bad_labels", "bad_resume", "bad_prompt", "nan"])
def test_train_audio_clip_bad_input(case, clip_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SGVIS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no media here")
    data = {"missing": tmp_path / "nope", "empty": tmp_path / "empty"}.get(case, clip_root / "data")
    out = tmp_path / "run" / "enc.safetensors"
    out.parent.mkdir()
    args = ["train-audio-clip", "--data", str(data), "--out", str(out), "--steps", "2", "--quiet"]
    if case != "no_clip":
        args += ["--config", str(clip_root / "tiny.yaml")]
    if case == "bad_labels":
        args += ["--labels", str(tmp_path / "nope.csv")]
    if case == "bad_resume":
        (tmp_path / "junk.pt").write_bytes(b"junk")
        args += ["--resume", str(tmp_path / "junk.pt")]
    if case == "bad_prompt":
        args += ["--prompt", "no placeholder"]
    if case == "nan":                       # the loss turns NaN at step 3: one line, and no log or checkpoint left
        calls = []
        real = cm.info_nce

        def info_nce(*a, **kw):
            calls.append(1)
            loss = real(*a, **kw)
            return loss * float("nan") if len(calls) > 4 else loss
        monkeypatch.setattr(cm, "info_nce", info_nce)
        args += ["--steps", "5", "--batch", "4"]
    assert _main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sgvis: error:") and "\n" not in err, err
    if case == "nan":
        assert "at step 3" in err and "--lr" in err, err
    assert os.listdir(out.parent) == []
