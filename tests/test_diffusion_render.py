"""The tempotokens backend end to end on CPU: a tiny diffusers text-to-video folder made here (UNet3DConditionModel,
AutoencoderKL, CLIPTextModel with a minimal offline BPE vocabulary, a DDIM scheduler config), tiny BEATs and mapper
files in the published layouts; no network."""
import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from audio_fixtures import read_video, write_audio                     # noqa: E402
from test_diffusion_models import tiny_beats_checkpoint, tiny_mapper_state   # noqa: E402
from test_safety_and_errors import run_cli                              # noqa: E402

WIDTH = 16           # CLIP width = mapper output = UNet cross-attention width


def bytes_to_unicode_chars():
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = keep[:], 0
    for b in range(256):
        if b not in keep:
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def write_tiny_t2v(folder):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(0)
    UNet3DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, cross_attention_dim=WIDTH, attention_head_dim=4,
    ).save_pretrained(os.path.join(folder, "unet"))
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                  up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(4, 4, 4), latent_channels=4,
                  norm_num_groups=4, sample_size=16).save_pretrained(os.path.join(folder, "vae"))
    chars = bytes_to_unicode_chars()
    vocab = chars + [c + "</w>" for c in chars] + ["ca", "cat</w>", "<|startoftext|>", "<|endoftext|>"]
    CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=WIDTH, intermediate_size=32,
                                 num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                                 projection_dim=WIDTH, bos_token_id=len(vocab) - 2, eos_token_id=len(vocab) - 1,
                                 pad_token_id=len(vocab) - 1)
                  ).save_pretrained(os.path.join(folder, "text_encoder"))
    tok = os.path.join(folder, "tokenizer")
    os.makedirs(tok)
    with open(os.path.join(tok, "vocab.json"), "w") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f)
    with open(os.path.join(tok, "merges.txt"), "w") as f:
        f.write("#version: 0.2\nc a\nca t</w>\n")
    with open(os.path.join(tok, "tokenizer_config.json"), "w") as f:
        json.dump({"model_max_length": 77, "tokenizer_class": "CLIPTokenizer", "bos_token": "<|startoftext|>",
                   "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}, f)
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                  set_alpha_to_one=False).save_pretrained(os.path.join(folder, "scheduler"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tempotokens")
    write_tiny_t2v(str(d / "t2v"))
    tiny_beats_checkpoint(d / "beats.pt")                       # 3 layers x 16 = 48-wide features
    tiny_mapper_state(d / "mapper.pth", in_dim=48, out=WIDTH)
    sr = 22050
    t = np.arange(int(sr * 2.5)) / sr
    write_audio(d / "track.wav", (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 2 * t))
                                  ).astype(np.float32), sr)
    return {k: str(d / name) for k, name in
            (("t2v", "t2v"), ("beats", "beats.pt"), ("mapper", "mapper.pth"), ("audio", "track.wav"))}


@pytest.fixture(scope="module")
def t2v(files):
    from sgvis.diffusion.t2v import load_t2v
    return load_t2v(files["t2v"])


def test_unet_per_frame_equals_diffusers_forward_for_shared_embeddings(t2v):
    from sgvis.diffusion.t2v import unet_per_frame
    unet = t2v["unet"]
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 3, 8, 6, generator=g)          # 6 is not a multiple of 4: forwarded upsample size
    states = torch.randn(2, 77, WIDTH, generator=g)
    with torch.no_grad():
        ref = unet(sample, 10, encoder_hidden_states=states).sample
        ours = unet_per_frame(unet, sample, 10, states.repeat_interleave(3, dim=0))
        per_frame = states.repeat_interleave(3, dim=0).clone()
        per_frame[1] += 1.0                                    # batch 0, frame 1 gets another embedding
        other = unet_per_frame(unet, sample, 10, per_frame)
    assert (ours - ref).abs().max() <= 1e-4 * ref.abs().max() + 1e-6
    assert (other - ours).abs().amax(dim=(1, 3, 4))[0, 1] > 1e-4      # that frame changes ...
    assert torch.equal(other[1], ours[1])                              # ... the other batch item does not


def test_placeholder_tokens_replace_input_embeddings_per_frame(t2v):
    """Against the textual-inversion way: extra vocabulary rows holding the audio vectors."""
    import copy

    from sgvis.diffusion.t2v import PLACEHOLDERS, TextConditioner
    tokenizer = copy.deepcopy(t2v["tokenizer"])
    encoder = t2v["text_encoder"]
    cond = TextConditioner(tokenizer, encoder, prompt="a cat")
    g = torch.Generator().manual_seed(1)
    tokens = [torch.randn(3, WIDTH, generator=g) for _ in range(5)] + [torch.randn(WIDTH, generator=g)]
    ours = cond.encode(tokens)
    assert ours.shape == (3, 77, WIDTH)
    ids = tokenizer(" ".join(PLACEHOLDERS) + " a cat", padding="max_length", max_length=77,
                    return_tensors="pt").input_ids
    grown = copy.deepcopy(encoder)
    grown.resize_token_embeddings(len(tokenizer))
    table = grown.get_input_embeddings().weight
    for f in range(3):
        with torch.no_grad():
            for k, name in enumerate(PLACEHOLDERS):
                table[tokenizer.convert_tokens_to_ids(name)] = tokens[k][f] if k < 5 else tokens[5]
            ref = grown(ids).last_hidden_state[0]
        assert (ours[f] - ref).abs().max() <= 1e-4 * ref.abs().max() + 1e-6
    assert (ours[0] - ours[1]).abs().max() > 1e-3                  # each frame its own embedding


def test_window_layout_covers_every_frame_once(files, t2v):
    from sgvis.diffusion import load_beats, load_mapper
    from sgvis.diffusion.backend import TempoTokensBackend
    backend = TempoTokensBackend(t2v, load_beats(files["beats"]), load_mapper(files["mapper"]), torch.device("cpu"),
                                 torch.float32, size=(16, 16), steps=2, overlap=4)
    assert backend.native_fps == 12
    for fps, n in ((12, 30), (12, 24), (12, 5), (10, 61)):
        layout = backend.window_layout(fps, n)
        assert layout[0][0] == 0 and sum(emit for _, _, emit in layout) == n
        for (s0, length, emit), (s1, _, _) in zip(layout, layout[1:]):
            assert s1 == s0 + emit and length - emit == min(4, length - 1)     # overlap frames
        assert all(length == round(2 * fps) for _, length, _ in layout)


def test_render_tempotokens_mp4_with_audio(files, tmp_path):
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    args = ["render", files["audio"], "-o", str(out), "--backend", "tempotokens", "--t2v", files["t2v"],
            "--beats", files["beats"], "--mapper", files["mapper"], "--size", "16x16", "--steps", "2",
            "--guidance", "3", "--prompt", "a cat", "--seed", "3", "--stats", str(stats), "--device", "cpu"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    frames, vdur, adur, codec = read_video(out)
    assert frames.shape == (30, 16, 16, 3)                   # 2.5 s at the native 12 fps: two windows
    assert codec == "aac" and abs(adur - 2.5) < 0.1 and abs(vdur - 2.5) < 0.1
    info = json.loads(stats.read_text())
    assert info["backend"] == "tempotokens" and info["frames"] == 30 and info["fps"] == 12
    assert frames.std() > 1                                  # not a blank picture
    again = tmp_path / "again.mp4"
    assert run_cli(*[str(again) if a == str(out) else a for a in args if a not in ("--stats", str(stats))]
                   ).returncode == 0
    # Same seed, same video: up to float rounding (BLAS kernels may sum in another order from one process to
    # the next, and H.264 turns a changed pixel into a changed block), so compare with a tolerance far below
    # what another seed changes.
    same = np.abs(read_video(again)[0].astype(np.int16) - frames).mean()
    other = tmp_path / "other.mp4"
    other_args = [str(other) if a == str(out) else a for a in args if a not in ("--stats", str(stats))]
    other_args[other_args.index("--seed") + 1] = "4"
    assert run_cli(*other_args).returncode == 0
    differs = np.abs(read_video(other)[0].astype(np.int16) - frames).mean()
    assert same < 1.0 and differs > 5 * max(same, 1.0), (same, differs)


def test_render_draft_is_refused_by_the_diffusion_backend(files, tmp_path):
    out = tmp_path / "d.mp4"
    result = run_cli("render", files["audio"], "-o", str(out), "--backend", "tempotokens", "--t2v", files["t2v"],
                     "--beats", files["beats"], "--mapper", files["mapper"], "--size", "16x16", "--steps", "1",
                     "--set", "render.draft=8", "--device", "cpu")
    assert result.returncode == 2 and "render.draft: the tempotokens backend cannot draft" in result.stderr
    assert not out.exists()


def one_line_error(result, *expected):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def test_bad_inputs_are_one_line(files, tmp_path):
    base = ["render", files["audio"], "-o", str(tmp_path / "x.mp4"), "--backend", "tempotokens"]
    full = ["--t2v", files["t2v"], "--beats", files["beats"], "--mapper", files["mapper"]]
    one_line_error(run_cli(*base, "--beats", files["beats"]), "needs --t2v DIR", "--mapper")
    one_line_error(run_cli(*base, "--t2v", files["t2v"], "--beats", str(tmp_path / "none.pt"), "--mapper",
                           files["mapper"]), "none.pt not found", "bring your own copy")
    one_line_error(run_cli(*base, "--t2v", str(tmp_path / "nodir"), "--beats", files["beats"], "--mapper",
                           files["mapper"]), "nodir not found", "zeroscope")
    one_line_error(run_cli(*base, *full, "--size", "18x16"), "multiple of 4")
    one_line_error(run_cli("render", files["audio"], "-o", str(tmp_path / "y.mp4"), "--t2v", files["t2v"]),
                   "--backend tempotokens")
    assert not os.path.exists(tmp_path / "x.mp4")


def test_windows_join_by_carried_noise_pinned_frames_and_crossfade(files, t2v, monkeypatch):
    """Window 2 starts from window 1's noise for the shared frames, is given window 1's latents for them, and the
    emitted shared frames fade from window 1's latents to window 2's."""
    import sgvis.diffusion.t2v as t2v_module
    from sgvis.diffusion import load_beats, load_mapper
    from sgvis.diffusion.backend import TempoTokensBackend
    backend = TempoTokensBackend(t2v, load_beats(files["beats"]), load_mapper(files["mapper"]), torch.device("cpu"),
                                 torch.float32, size=(16, 16), steps=2, overlap=4)
    calls, decoded = [], []
    real_render = backend.render_window

    def spy_render(audio, noise, carry=None, progress=None):
        out = real_render(audio, noise, carry, progress)
        calls.append((noise, carry, out))
        return out
    monkeypatch.setattr(backend, "render_window", spy_render)
    real_decode = t2v_module.decode
    monkeypatch.setattr(t2v_module, "decode", lambda vae, latents: decoded.append(latents) or real_decode(vae, latents))
    frames = torch.cat(list(backend.frames_from_audio(torch.zeros(16000 * 3), fps=12, n_frames=36, seed=1)))
    assert frames.shape == (36, 16, 16, 3) and len(calls) == 2
    (noise1, carry1, out1), (noise2, carry2, out2) = calls
    assert carry1 is None and torch.equal(noise2[:, :, :4], noise1[:, :, -4:])
    assert torch.equal(carry2, out1[:, :, -4:])
    assert torch.equal(decoded[0], out1[:, :, :20])                     # window 1 keeps its last 4 frames back
    ramp = torch.tensor([0.2, 0.4, 0.6, 0.8]).view(1, 1, 4, 1, 1)
    assert torch.allclose(decoded[1][:, :, :4], out1[:, :, -4:] * (1 - ramp) + out2[:, :, :4] * ramp)
    assert torch.equal(decoded[1][:, :, 4:], out2[:, :, 4:16])


def test_denoise_pins_carried_frames_at_every_step(t2v, monkeypatch):
    import sgvis.diffusion.t2v as t2v_module
    seen = []

    def spy_unet(unet, sample, t, states):
        seen.append((t, sample.clone()))
        return torch.zeros_like(sample)
    monkeypatch.setattr(t2v_module, "unet_per_frame", spy_unet)
    g = torch.Generator().manual_seed(2)
    noise, carry = torch.randn(1, 4, 6, 4, 4, generator=g), torch.randn(1, 4, 2, 4, 4, generator=g)
    cond = torch.randn(6, 77, WIDTH, generator=g)
    scheduler = t2v["scheduler"]
    t2v_module.denoise(None, scheduler, cond, cond, noise, 3, 5.0, carry=carry)
    assert len(seen) == 3
    for t, sample in seen:
        assert sample.shape[0] == 2                                      # guided: unconditional + conditional
        expected = scheduler.add_noise(carry, noise[:, :, :2], t.reshape(1))
        assert torch.allclose(sample[:1, :, :2], expected) and torch.allclose(sample[1:, :, :2], expected)


def test_eval_compares_the_stylegan_and_tempotokens_backends_on_the_same_audio(files, tmp_path):
    report_path = tmp_path / "both.json"
    diffusion = ["--t2v", files["t2v"], "--beats", files["beats"], "--mapper", files["mapper"], "--steps", "2",
                 "--guidance", "3"]
    result = run_cli("eval", "steering", files["audio"], "--steering", "reactive", "--steering", "tempotokens",
                     "--size", "16x16", "--compute", "cpu", "--json", str(report_path), *diffusion)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    rows = {r["steering"]: r for r in report["results"]}
    assert set(rows) == {"reactive", "tempotokens"}
    # Each at its own frame rate, both over the whole 2.5 s, both scored as rendered and lossless.
    assert rows["tempotokens"]["render"]["fps"] == 12 and rows["tempotokens"]["render"]["frames"] == 30
    assert rows["tempotokens"]["render"]["backend"] == "tempotokens"
    assert rows["reactive"]["render"]["fps"] == 30 and rows["reactive"]["render"]["frames"] == 75
    for row in rows.values():
        for key in ("av_align", "av_align_lossless", "flow_mean"):
            assert isinstance(row["scores"][key], float), (row["steering"], key)
    assert rows["tempotokens"]["scores"]["flow_mean"] > 0                   # a picture that changes
    assert report["steerings"][1]["options"]["t2v"] == files["t2v"]
    assert "tempotokens" in result.stdout and "reactive" in result.stdout  # both in the printed tables
    # The column needs its files; the files need the column: one line each, exit 2.
    missing = run_cli("eval", "steering", files["audio"], "--steering", "tempotokens")
    assert missing.returncode == 2 and "--steering tempotokens needs --t2v, --beats, --mapper" in missing.stderr
    stray = run_cli("eval", "steering", files["audio"], "--steering", "reactive", "--t2v", files["t2v"])
    assert stray.returncode == 2 and "are for a --steering tempotokens column" in stray.stderr


def test_eval_clipsim_for_both_backends(files):
    pytest.importorskip("transformers")
    from test_evaluate import TINY_CLIP
    from sgvis.eval.steering import evaluate_steering
    report = evaluate_steering([files["audio"]], ["reactive", "tempotokens"], size=16, seconds=2.0, device="cpu",
                               clip={"config": TINY_CLIP}, text="a cat", progress=False,
                               diffusion={"t2v": files["t2v"], "beats": files["beats"], "mapper": files["mapper"],
                                          "steps": 2, "guidance": 1.0})
    rows = {r["steering"]: r for r in report["results"]}
    assert rows["tempotokens"]["clip"]["frames"] == 24 and rows["reactive"]["clip"]["frames"] == 60
    for label, row in rows.items():
        assert -1 <= row["clip"]["clipsim"] <= 1
        assert report["summary"][label]["mean_clipsim"] == pytest.approx(row["clip"]["clipsim"])
