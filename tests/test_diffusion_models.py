"""BEATs and the TempoTokens mapper (sgvis.diffusion): tiny random checkpoints in the published layouts, checked
against naive float64 computations written here (loops over frames, heads and positions), and the Kaldi fbank
against an independent implementation (kaldi-native-fbank, when installed) and a naive one."""
import math

import numpy as np
import pytest
import torch

from sgvis.diffusion import load_beats, load_mapper
from sgvis.diffusion.beats import kaldi_fbank
from sgvis.errors import UserError


def close(ours, ref):
    ours = np.asarray(ours.detach().double() if torch.is_tensor(ours) else ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape
    tol = 1e-4 * np.abs(ref).max() + 1e-6
    assert np.abs(ours - ref).max() <= tol, (np.abs(ours - ref).max(), tol)


# --- naive references ---------------------------------------------------------------------------------------

def naive_fbank(wave: np.ndarray, bins=128, sr=16000) -> np.ndarray:
    """Kaldi's recipe, one frame at a time (float64)."""
    length, shift, n_fft = 400, 160, 512
    n = 1 + (len(wave) - length) // shift
    window = np.array([(0.5 - 0.5 * math.cos(2 * math.pi * i / (length - 1))) ** 0.85 for i in range(length)])

    def mel(f):
        return 1127.0 * math.log(1.0 + f / 700.0)
    lo, hi = mel(20.0), mel(sr / 2)
    delta = (hi - lo) / (bins + 1)
    banks = np.zeros((bins, n_fft // 2 + 1))
    for m in range(bins):
        left, centre, right = lo + m * delta, lo + (m + 1) * delta, lo + (m + 2) * delta
        for k in range(n_fft // 2):
            f = mel(k * sr / n_fft)
            if left < f < right:
                banks[m, k] = (f - left) / (centre - left) if f <= centre else (right - f) / (right - centre)
    out = np.zeros((n, bins))
    for i in range(n):
        frame = wave[i * shift:i * shift + length].astype(np.float64)
        frame = frame - frame.mean()
        frame = np.concatenate([[frame[0] - 0.97 * frame[0]], frame[1:] - 0.97 * frame[:-1]])
        padded = np.zeros(n_fft)
        padded[:length] = frame * window
        power = np.abs(np.fft.rfft(padded)) ** 2
        out[i] = np.log(np.maximum(banks @ power, np.finfo(np.float32).eps))
    return out


def bucket(rel: int, num_buckets: int, max_distance: int) -> int:
    half = num_buckets // 2
    out = half if rel > 0 else 0
    d = abs(rel)
    exact = half // 2
    if d < exact:
        return out + d
    far = exact + int(math.log(d / exact) / math.log(max_distance / exact) * (half - exact))
    return out + min(far, half - 1)


def layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def naive_beats(ckpt: dict, wave: np.ndarray) -> np.ndarray:
    cfg, sd = ckpt["cfg"], {k: v.double().numpy() for k, v in ckpt["model"].items()}
    bank = (naive_fbank(wave * 2 ** 15) - 15.41663) / (2 * 6.55582)
    w = sd["patch_embedding.weight"]                                    # [E, 1, P, P]
    e, p = w.shape[0], w.shape[-1]
    tp, fp = bank.shape[0] // p, bank.shape[1] // p
    tokens = []
    for t in range(tp):                                                 # time-major patch order
        for f in range(fp):
            patch = bank[t * p:(t + 1) * p, f * p:(f + 1) * p]
            tokens.append([(w[c, 0] * patch).sum() for c in range(e)])
    x = layer_norm(np.array(tokens), sd["layer_norm.weight"], sd["layer_norm.bias"])
    x = x @ sd["post_extract_proj.weight"].T + sd["post_extract_proj.bias"]
    n, d = x.shape
    g, v = sd["encoder.pos_conv.0.weight_g"], sd["encoder.pos_conv.0.weight_v"]   # weight norm over dim 2
    kernel = np.stack([g[0, 0, j] * v[:, :, j] / np.sqrt((v[:, :, j] ** 2).sum()) for j in range(v.shape[2])], 2)
    groups = d // kernel.shape[1]
    per = d // groups
    k_len = kernel.shape[2]
    conv = np.zeros((n, d))
    for o in range(d):
        grp = o // per
        for t in range(n):                                              # padding K//2, the extra last output dropped
            acc = sd["encoder.pos_conv.0.bias"][o]
            for j in range(k_len):
                src = t + j - k_len // 2
                if 0 <= src < n:
                    acc += (kernel[o, :, j] * x[src, grp * per:(grp + 1) * per]).sum()
            conv[t, o] = acc
    x = layer_norm(x + gelu(conv), sd["encoder.layer_norm.weight"], sd["encoder.layer_norm.bias"])
    heads, layers = cfg["encoder_attention_heads"], cfg["encoder_layers"]
    hd = d // heads
    table = sd["encoder.layers.0.self_attn.relative_attention_bias.weight"]
    raw_bias = np.array([[[table[bucket(j - i, cfg["num_buckets"], cfg["max_distance"]), h] for j in range(n)]
                          for i in range(n)] for h in range(heads)])
    alpha = (2 * layers) ** 0.25
    outputs = []
    for li in range(layers):
        pre = f"encoder.layers.{li}."

        def lin(name, y):
            return y @ sd[pre + name + ".weight"].T + sd[pre + name + ".bias"]
        q, k, vv = lin("self_attn.q_proj", x), lin("self_attn.k_proj", x), lin("self_attn.v_proj", x)
        attn = np.zeros((n, d))
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            for i in range(n):
                gate_in = q[i, sl] @ sd[pre + "self_attn.grep_linear.weight"].T + sd[pre + "self_attn.grep_linear.bias"]
                ga = 1 / (1 + math.exp(-gate_in[:4].sum()))
                gb = 1 / (1 + math.exp(-gate_in[4:].sum()))
                gate = ga * (gb * sd[pre + "self_attn.grep_a"][0, h, 0, 0] - 1.0) + 2.0
                scores = np.array([q[i, sl] @ k[j, sl] / math.sqrt(hd) + gate * raw_bias[h, i, j] for j in range(n)])
                prob = np.exp(scores - scores.max())
                prob /= prob.sum()
                attn[i, sl] = prob @ vv[:, sl]
        attn = lin("self_attn.out_proj", attn)
        x = layer_norm(x * alpha + attn, sd[pre + "self_attn_layer_norm.weight"], sd[pre + "self_attn_layer_norm.bias"])
        ffn = lin("fc2", gelu(lin("fc1", x)))
        x = layer_norm(x * alpha + ffn, sd[pre + "final_layer_norm.weight"], sd[pre + "final_layer_norm.bias"])
        outputs.append(x)
    return np.concatenate(outputs, axis=-1)


def naive_mapper(sd: dict, feats: np.ndarray, frames: int):
    sd = {k: v.double().numpy() for k, v in sd.items()}

    def lin(name, y):
        return y @ sd[name + ".weight"].T + sd[name + ".bias"]
    x = lin("fc3", gelu(lin("fc2", gelu(lin("fc1", feats)))))          # [T, D]
    per = x.shape[0] // frames
    x = np.stack([x[i * per:(i + 1) * per].mean(0) for i in range(frames)])
    temporal = lin("fc4", gelu(x))
    locals_ = [np.stack([temporal[max(i - k, 0):min(i + k, frames)].mean(0) for i in range(frames)])
               for k in (1, 2, 4, 8)]
    conv = lambda name, y: y @ sd[name + ".weight"][:, :, 0].T + sd.get(name + ".bias", 0)   # noqa: E731
    unary = conv("fga.un_models.0.feature_reduce", np.maximum(conv("fga.un_models.0.embed", temporal), 0))[:, 0]
    a = conv("fga.pp_models.0.embed_X", temporal)
    b = conv("fga.pp_models.0.embed_Y", temporal)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    pair = np.array([np.mean([a[i] @ b[j] for j in range(frames)]) for i in range(frames)])
    mix = sd["fga.reduce_potentials.0.weight"][0, :, 0]
    score = mix[0] * unary + mix[1] * pair
    weight = np.exp(score - score.max())
    weight /= weight.sum()
    return temporal, locals_, weight @ temporal


# --- tiny checkpoints in the published layouts ----------------------------------------------------------------

def tiny_beats_checkpoint(path, seed=0, embed=12, dim=16, heads=2, layers=3, ffn=24, kernel=8, groups=4):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.3):
        return torch.randn(*shape, generator=g) * scale
    sd = {"patch_embedding.weight": r(embed, 1, 16, 16, scale=0.05),
          "layer_norm.weight": 1 + r(embed, scale=0.1), "layer_norm.bias": r(embed, scale=0.1),
          "post_extract_proj.weight": r(dim, embed), "post_extract_proj.bias": r(dim, scale=0.1),
          "encoder.pos_conv.0.bias": r(dim, scale=0.1),
          "encoder.pos_conv.0.weight_g": 0.5 + r(1, 1, kernel, scale=0.1).abs(),
          "encoder.pos_conv.0.weight_v": r(dim, dim // groups, kernel),
          "encoder.layer_norm.weight": 1 + r(dim, scale=0.1), "encoder.layer_norm.bias": r(dim, scale=0.1),
          "predictor.weight": r(527, dim), "predictor.bias": r(527)}
    table = r(320, heads, scale=1.0)
    for i in range(layers):
        p = f"encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd[p + f"self_attn.{name}.weight"] = r(dim, dim)
            sd[p + f"self_attn.{name}.bias"] = r(dim, scale=0.1)
        sd[p + "self_attn.relative_attention_bias.weight"] = table           # shared, saved under every layer
        sd[p + "self_attn.grep_linear.weight"] = r(8, dim // heads)
        sd[p + "self_attn.grep_linear.bias"] = r(8, scale=0.1)
        sd[p + "self_attn.grep_a"] = 1 + r(1, heads, 1, 1, scale=0.2)
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            sd[p + f"{ln}.weight"] = 1 + r(dim, scale=0.1)
            sd[p + f"{ln}.bias"] = r(dim, scale=0.1)
        sd[p + "fc1.weight"], sd[p + "fc1.bias"] = r(ffn, dim), r(ffn, scale=0.1)
        sd[p + "fc2.weight"], sd[p + "fc2.bias"] = r(dim, ffn), r(dim, scale=0.1)
    cfg = {"input_patch_size": 16, "embed_dim": embed, "conv_bias": False, "encoder_layers": layers,
           "encoder_embed_dim": dim, "encoder_ffn_embed_dim": ffn, "encoder_attention_heads": heads,
           "activation_fn": "gelu", "deep_norm": True, "layer_norm_first": False,
           "relative_position_embedding": True, "num_buckets": 320, "max_distance": 800, "gru_rel_pos": True,
           "conv_pos": kernel, "conv_pos_groups": groups, "finetuned_model": True, "predictor_class": 527}
    ckpt = {"cfg": cfg, "model": sd}
    torch.save(ckpt, path)
    return ckpt


def tiny_mapper_state(path, seed=0, in_dim=48, hidden=20, out=16):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.3):
        return torch.randn(*shape, generator=g) * scale
    sd = {"fc1.weight": r(hidden, in_dim), "fc1.bias": r(hidden), "fc2.weight": r(hidden, hidden),
          "fc2.bias": r(hidden), "fc3.weight": r(out, hidden), "fc3.bias": r(out), "fc4.weight": r(out, out),
          "fc4.bias": r(out),
          "fga.un_models.0.embed.weight": r(out, out, 1), "fga.un_models.0.embed.bias": r(out),
          "fga.un_models.0.feature_reduce.weight": r(1, out, 1), "fga.un_models.0.feature_reduce.bias": r(1),
          "fga.pp_models.0.embed_X.weight": r(out, out, 1), "fga.pp_models.0.embed_X.bias": r(out),
          "fga.pp_models.0.embed_Y.weight": r(out, out, 1), "fga.pp_models.0.embed_Y.bias": r(out),
          "fga.reduce_potentials.0.weight": r(1, 2, 1, scale=2.0)}
    torch.save(sd, path)
    return sd


def make_audio(seconds=2.0, seed=1):
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal(t.size)).astype(np.float32)


# --- tests ----------------------------------------------------------------------------------------------------

def test_fbank_matches_naive_kaldi_recipe():
    wave = make_audio(0.5) * 2 ** 15
    ours = kaldi_fbank(torch.from_numpy(wave)[None])[0]
    assert ours.shape == (1 + (wave.size - 400) // 160, 128)
    close(ours, naive_fbank(wave))


def test_fbank_matches_kaldi_native_fbank():
    knf = pytest.importorskip("kaldi_native_fbank")
    wave = make_audio(0.5, seed=3) * 2 ** 15
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = 16000
    opts.mel_opts.num_bins = 128
    online = knf.OnlineFbank(opts)
    online.accept_waveform(16000, wave.tolist())
    online.input_finished()
    ref = np.stack([np.array(online.get_frame(i)) for i in range(online.num_frames_ready)])
    close(kaldi_fbank(torch.from_numpy(wave)[None])[0], ref)


def test_relative_position_buckets_released_sizes():
    from sgvis.diffusion.beats import relative_position_buckets
    ours = relative_position_buckets(200, 320, 800)
    ref = [[bucket(j - i, 320, 800) for j in range(200)] for i in range(200)]
    assert ours.tolist() == ref


def test_beats_layer_features_match_naive(tmp_path):
    ckpt = tiny_beats_checkpoint(tmp_path / "beats.pt")
    beats = load_beats(str(tmp_path / "beats.pt"))
    s = beats.shape
    assert (s.layers, s.dim, s.heads, s.ffn, s.embed_dim, s.patch) == (3, 16, 2, 24, 12, 16)
    assert s.gated_rel_pos and s.deep_norm and s.rel_buckets == 320 and s.rel_max_distance == 800
    assert (s.pos_conv_kernel, s.pos_conv_groups) == (8, 4)
    assert not beats.training
    wave = make_audio(2.0)
    with torch.no_grad():
        ours = beats.layer_features(torch.from_numpy(np.stack([wave, wave[::-1].copy()])))
    assert ours.shape == (2, 96, 3 * 16)                       # 2 s: 12 time x 8 frequency patches
    close(ours[0], naive_beats(ckpt, wave))
    close(ours[1], naive_beats(ckpt, wave[::-1].copy()))


def test_mapper_matches_naive_and_is_deterministic(tmp_path):
    sd = tiny_mapper_state(tmp_path / "mapper.pth")
    mapper = load_mapper(str(tmp_path / "mapper.pth"))
    assert (mapper.in_dim, mapper.out_dim, mapper.frames) == (48, 16, 24) and not mapper.training
    feats = torch.randn(2, 96, 48, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = mapper(feats)
        again = mapper(feats)
    assert len(out) == 6
    for a, b in zip(out, again):
        assert torch.equal(a, b)                                # no dropout in eval
    for i in range(2):
        temporal, locals_, class_token = naive_mapper(sd, feats[i].double().numpy(), 24)
        close(out[0][i], temporal)
        for k in range(4):
            close(out[1 + k][i], locals_[k])
        close(out[5][i], class_token)
    assert out[0].shape == (2, 24, 16) and out[5].shape == (2, 16)


def test_missing_and_wrong_files_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="not found.*bring your own copy"):
        load_beats(str(tmp_path / "nope.pt"))
    with pytest.raises(UserError, match="not found.*TempoTokens README"):
        load_mapper(str(tmp_path / "nope.pth"))
    tiny_mapper_state(tmp_path / "mapper.pth")
    with pytest.raises(UserError, match="not a BEATs checkpoint"):
        load_beats(str(tmp_path / "mapper.pth"))
    tiny_beats_checkpoint(tmp_path / "beats.pt")
    with pytest.raises(UserError, match="not a TempoTokens mapper"):
        load_mapper(str(tmp_path / "beats.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    for loader in (load_beats, load_mapper):
        with pytest.raises(UserError) as e:
            loader(str(tmp_path / "junk.pt"))
        assert "\n" not in str(e.value)


def test_checkpoint_with_code_is_refused(tmp_path):
    """weights_only loading: a pickle that would call a function is refused, not run."""
    import pickle
    ckpt = tiny_beats_checkpoint(tmp_path / "beats.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("ran code from the checkpoint",))
    ckpt["cfg"]["evil"] = Evil()
    torch.save(ckpt, tmp_path / "evil.pt", pickle_module=pickle)
    with pytest.raises(UserError, match="cannot read"):
        load_beats(str(tmp_path / "evil.pt"))
