"""Steering: reactive (W principal directions + audio routing) and learned (sound inversion + GRUs)."""
import os

import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_generator
from sgvis.steer import directions as dirs_mod
from sgvis.errors import UserError
from sgvis.features.analysis import Features, MelConfig
from sgvis.steer.learned import (LearnedSteering, LearnedSteeringModel, SteeringFileError, SteeringMismatch,
                                    load_steering, save_steering)
from sgvis.steer import Steering, make_steering
from sgvis.steer.reactive import (DEFAULTS, GROUPS, ReactiveSteering, resolve_config,
                            resolve_groups)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FPS = 30.0


@pytest.fixture(scope="module")
def G():
    return tiny_generator(resolution=16)          # StyleGAN2, num_ws 6, w_dim 32


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("sgvis-cache"))


def seq(n, fps=FPS, **series):
    """n Features at `fps`; each keyword is a constant or a function of the frame index."""
    out = []
    for i in range(n):
        kw = {k: (v(i) if callable(v) else v) for k, v in series.items()}
        if "onset_peak" not in kw:        # an onset given here is a picked one (what the features stage marks)
            kw["onset_peak"] = kw.get("onset", 0.0) > 0 or any(v > 0 for v in (kw.get("band_onsets") or {}).values())
        out.append(Features(time=i / fps, **kw))
    return out


def run(steer, feats):
    return torch.stack([steer.step(f) for f in feats])


def row_motion(a, b, rows):
    return float((a[:, rows[0]:rows[1]] - b[:, rows[0]:rows[1]]).norm(dim=-1).mean())


# -- configuration -----------------------------------------------------------------------------------------------
def test_default_yaml_matches_defaults_and_presets_resolve():
    with open(os.path.join(ROOT, "configs", "default.yaml")) as f:
        assert yaml.safe_load(f)["steer"] == DEFAULTS
    for preset in ("calm", "energetic"):
        with open(os.path.join(ROOT, "configs", f"{preset}.yaml")) as f:
            steer = yaml.safe_load(f)["steer"]
        c = resolve_config(steer)
        assert c != DEFAULTS and set(c) == set(DEFAULTS)


def test_bad_config_is_one_line_user_error():
    with pytest.raises(UserError, match="unknown config key steer.bass.'amout'"):
        resolve_config({"bass": {"amout": 1}})
    with pytest.raises(UserError, match="steer.mode"):
        resolve_config({"mode": "psychic"})
    with pytest.raises(UserError, match="steer.onset.threshold"):
        resolve_config({"onset": {"threshold": 3}})
    assert resolve_config({"steer": {"intensity": 0.5}})["intensity"] == 0.5      # a whole config works too


def test_groups_clamped_for_small_models():
    g = DEFAULTS["groups"]
    assert resolve_groups(g, 18) == {"coarse": (0, 3), "mid": (3, 6), "fine": (6, 18)}
    assert resolve_groups(g, 14) == {"coarse": (0, 3), "mid": (3, 6), "fine": (6, 14)}
    assert resolve_groups(g, 6) == {"coarse": (0, 2), "mid": (2, 4), "fine": (4, 6)}
    for n in (1, 2, 3, 4, 5):
        r = resolve_groups(g, n)
        assert all(0 <= s < e <= n for s, e in r.values())


# -- reactive ---------------------------------------------------------------------------------------------------------
def test_reactive_shape_dtype_and_determinism(G, cache):
    feats = seq(40, low=lambda i: (i % 8 == 0) * 1.0, onset=lambda i: (i % 8 == 0) * 1.0,
                beat=lambda i: i % 16 == 0, high=0.3)
    a = make_steering(G, {}, seed=3, cache_dir=cache)
    assert isinstance(a, ReactiveSteering) and isinstance(a, Steering) and a.name == "reactive"
    wa = run(a, feats)
    assert wa.shape == (40, G.num_ws, G.w_dim) and wa.dtype == torch.float32 and wa.device == G.device
    assert torch.isfinite(wa).all()
    wb = run(make_steering(G, {}, seed=3, cache_dir=cache), feats)
    assert torch.equal(wa, wb)
    a.reset(3)
    assert torch.equal(run(a, feats), wa)                       # reset restores the start
    wc = run(make_steering(G, {}, seed=4, cache_dir=cache), feats)
    assert not torch.allclose(wa, wc)


def test_set_intensity_keeps_the_motion_going(G, cache):
    """Live control: intensity changes on the fly, without a reset (no jump back to the start)."""
    feats = seq(40, low=0.5, onset=lambda i: float(i % 10 == 0))
    a = ReactiveSteering(G, {}, 3, cache_dir=cache)
    wa = run(a, feats)
    b = ReactiveSteering(G, {}, 3, cache_dir=cache)
    wb = run(b, feats[:20])
    assert torch.equal(wa[:20], wb)
    b.set_intensity(0.0)
    still = run(b, feats[20:])
    assert b.cfg["intensity"] == 0.0 and not torch.equal(still[0], still[-1])      # the drift goes on
    assert float((still[0] - wb[-1]).norm()) < float((wa[0] - wa[-1]).norm())       # from where it was
    hits = (wa[21:] - wa[20:-1]).norm(dim=(1, 2))
    calm = (still[1:] - still[:-1]).norm(dim=(1, 2))
    assert float(calm.max()) < float(hits.max())                                    # hits no longer move it


def test_bass_moves_coarse_highs_move_fine(G, cache):
    groups = resolve_groups(DEFAULTS["groups"], G.num_ws)
    same = {"drift": {"silence_pace": 1.0}}      # the silent reference drifts as the others do
    quiet = run(ReactiveSteering(G, same, 1, cache_dir=cache), seq(60))
    bass = run(ReactiveSteering(G, same, 1, cache_dir=cache), seq(60, low=lambda i: 0.5 + 0.5 * np.sin(i / 3) ** 2))
    high = run(ReactiveSteering(G, same, 1, cache_dir=cache), seq(60, high=lambda i: 0.5 + 0.5 * np.sin(i / 3) ** 2))
    assert row_motion(bass, quiet, groups["coarse"]) > 3 * row_motion(bass, quiet, groups["fine"])
    assert row_motion(high, quiet, groups["fine"]) > 3 * row_motion(high, quiet, groups["coarse"])


def test_band_onsets_route_hits(G, cache):
    """A bass onset kicks the coarse rows and a treble onset the fine rows (same Features.onset in both)."""
    groups = resolve_groups(DEFAULTS["groups"], G.num_ws)

    def frames(band):
        quiet = {"bass": 0.0, "mid": 0.0, "high": 0.0}
        return [Features(time=i / FPS, onset=1.0 if i == 15 else 0.0, onset_peak=i == 15,
                         band_onsets={**quiet, **({band: 1.0} if band and i == 15 else {})}) for i in range(30)]

    quiet = run(ReactiveSteering(G, {}, 2, cache_dir=cache), frames(None))
    kick = run(ReactiveSteering(G, {}, 2, cache_dir=cache), frames("bass"))
    hat = run(ReactiveSteering(G, {}, 2, cache_dir=cache), frames("high"))
    assert row_motion(kick, quiet, groups["coarse"]) > 2 * row_motion(kick, quiet, groups["fine"])
    assert row_motion(hat, quiet, groups["fine"]) > 2 * row_motion(hat, quiet, groups["coarse"])


def test_features_stage_measures_onsets_per_band():
    """A low thump registers as a bass onset, a burst of hiss as a high one."""
    from sgvis.features.analysis import FeatureExtractor, frame_features
    sr = MelConfig().sample_rate
    t = np.arange(int(0.25 * sr)) / sr
    thump = np.sin(2 * np.pi * 60 * t) * np.exp(-t * 12) * np.minimum(t / 0.01, 1.0)
    hiss = np.random.default_rng(0).standard_normal(len(t)) * np.exp(-t * 30) * 0.3
    hiss = hiss - np.convolve(hiss, np.ones(8) / 8, mode="same")          # keep the treble only
    out = {}
    for name, burst in (("thump", thump), ("hiss", hiss)):
        y = 0.003 * np.random.default_rng(1).standard_normal(2 * sr).astype(np.float32)   # a room's hiss
        y[sr:sr + len(burst)] += burst.astype(np.float32)
        feats = list(frame_features(FeatureExtractor(), [y], 60, 30.0))
        out[name] = {b: max(f.band_onsets[b] for f in feats[28:34]) for b in ("bass", "mid", "high")}
    assert out["thump"]["bass"] > 0.5 and out["thump"]["bass"] > 2 * out["thump"]["high"]
    assert out["hiss"]["high"] > 0.5 and out["hiss"]["high"] > 2 * out["hiss"]["bass"]


def test_onsets_increase_frame_to_frame_change(G, cache):
    hits = {20, 45, 70}
    plain = run(ReactiveSteering(G, {}, 5, cache_dir=cache), seq(90, low=0.3, mid=0.3))
    kicked = run(ReactiveSteering(G, {}, 5, cache_dir=cache),
                 seq(90, low=0.3, mid=0.3, onset=lambda i: 1.0 if i in hits else 0.0))
    d_plain = (plain[1:] - plain[:-1]).norm(dim=(1, 2))
    d_kick = (kicked[1:] - kicked[:-1]).norm(dim=(1, 2))
    for h in hits:
        assert d_kick[h - 1] > 3 * d_plain[h - 1]                     # the jump lands on the onset frame
        assert d_kick[h - 1] > d_kick[h] > d_kick[h + 3]              # then eases out (release)
        assert d_kick[h - 1:h + 9].mean() > 1.5 * d_plain[h - 1:h + 9].mean()


def test_quiet_input_drifts_slowly_and_steps_are_bounded(G, cache):
    steer = ReactiveSteering(G, {}, 6, cache_dir=cache)
    ws = run(steer, seq(300, rms=0.05))                                # 10 s of a quiet sound (silence: below)
    d = (ws[1:] - ws[:-1]).norm(dim=-1).square().mean(dim=-1).sqrt() / steer.sigma     # rms row step / sigma_W
    assert (d > 0).all()                                               # always moving
    assert float(d.max()) < 0.05                                       # slowly
    travelled = float((ws[-1] - ws[0]).norm(dim=-1).mean()) / steer.sigma
    assert travelled > 0.1                                             # but going somewhere
    # Even absurd input cannot jump more than the per-frame bound (max_step * sigma at 30 fps).
    loud = ReactiveSteering(G, {"intensity": 20.0}, 6, cache_dir=cache)
    ws = run(loud, seq(60, low=lambda i: float(i % 2), high=lambda i: float(i % 2), onset=lambda i: float(i % 2),
                       beat=lambda i: i % 2 == 0, chroma=lambda i: np.eye(12, dtype=np.float32)[i % 12]))
    d = (ws[1:] - ws[:-1]).norm(dim=-1).square().mean(dim=-1).sqrt() / loud.sigma
    assert float(d.max()) <= DEFAULTS["max_step"] * 1.0001


def test_quiet_passages_breathe_with_the_beat(G, cache):
    """With a tempo and no hits, the slow motion glides once per breath cycle (default: two beats) and then
    holds perfectly still."""
    steer = ReactiveSteering(G, {}, 6, cache_dir=cache)
    n = DEFAULTS["drift"]["breath_beats"]
    glide = DEFAULTS["drift"]["glide"]
    phase = lambda i: (i / 15) % 1.0                                    # 120 BPM at 30 fps: 15 frames a beat
    ws = run(steer, seq(120, tempo=120.0, beat_phase=phase, beat=lambda i: i % 15 == 0, low=0.2, mid=0.2,
                        onset_peak=lambda i: i % 15 == 0))             # the beats sound (too softly for hits)
    d = (ws[1:] - ws[:-1]).norm(dim=(1, 2))
    moving = holding = 0
    for i in range(1, 120):
        cycle = ((i // 15) % n + phase(i)) / n
        if 0.0 < cycle < glide - 0.05:
            assert d[i - 1] > 0, i                                       # gliding
            moving += 1
        elif cycle > glide + 0.05:
            assert d[i - 1] == 0, i                                      # holding: identical latents
            holding += 1
    assert moving > 30 and holding > 20


def test_a_beat_that_does_not_sound_starts_no_glide(G, cache):
    """Sparse music: the beat grid goes on where nothing sounds.  A breath cycle whose beat has no picked onset
    near it holds still (no jolt that no sound explains); one whose beat sounds, a little late, glides.  With
    drift.glide_on_onsets false every cycle glides on its tick."""
    phase = lambda i: (i / 15) % 1.0                                    # 120 BPM at 30 fps: 15 frames a beat
    sounding = lambda i: i % 60 == 2                                     # every other cycle's beat, 2 frames late
    feats = seq(240, tempo=120.0, beat_phase=phase, beat=lambda i: i % 15 == 0, low=0.2, mid=0.2,
                onset_peak=sounding)
    d = {}
    for gated in (True, False):
        steer = ReactiveSteering(G, {"drift": {"glide_on_onsets": gated}}, 6, cache_dir=cache)
        ws = run(steer, feats)
        d[gated] = (ws[1:] - ws[:-1]).norm(dim=(1, 2)).numpy()           # d[i - 1]: the step onto frame i
    for start in (60, 120, 180):
        glide = slice(start + 3, start + 15)                             # inside the first beat of the cycle
        assert (d[False][glide] > 0).all()                               # ungated: every cycle glides
        if start % 60 == 0 and (start // 30) % 2 == 0:                   # cycles start every 30 frames
            assert (d[True][glide] > 0).all(), start                    # its beat sounds: a glide
    silent = [c for c in range(30, 240, 30) if c % 60 == 30]
    for start in silent:
        assert (d[True][start + 3:start + 27] == 0).all(), start        # a silent beat: the cycle holds still


def test_silence_holds_the_picture_still_and_the_sound_brings_it_back(G, cache):
    """In a break (every level 0) the tracker's beat grid goes on, but nothing glides on it: by default
    (drift.silence_pace 0) the slow motions slow to a stop and the latent holds exactly still until the sound
    returns, which brings the drift and the breath back; with silence_pace 1 the drift runs on steadily instead."""
    phase = lambda i: (i / 15) % 1.0                                    # 120 BPM at 30 fps
    level = lambda i: 0.0 if 60 <= i < 150 else 0.2                      # a 3 s break
    feats = seq(210, tempo=120.0, beat_phase=phase, beat=lambda i: i % 15 == 0, low=level, mid=level)
    d = {}
    for pace in (0.0, 1.0):
        ws = run(ReactiveSteering(G, {"drift": {"silence_pace": pace}}, 6, cache_dir=cache), feats)
        d[pace] = (ws[1:] - ws[:-1]).norm(dim=(1, 2)).numpy()           # d[i - 1]: the step onto frame i
    assert (d[0.0][40:58] > 0).any()                                     # before the break it moves
    assert (d[0.0][85:148] == 0).all()                                   # under a second into the break: still
    assert (d[0.0][150:165] > 0).any()                                   # the sound brings the motion back
    assert (d[0.0][160:209] == 0).any()                                  # and the breath's holds with it
    silent = d[1.0][75:148]
    assert silent.min() > 0                                              # silence_pace 1: still drifting
    assert np.abs(np.diff(silent)).max() < 0.1 * silent.max()            # smoothly: no glide starting on a beat


def test_frame_rate_independent(G, cache):
    """Envelopes and drift use the real frame interval: 30 and 60 fps agree at common times."""
    def feats(fps):
        n = int(2.0 * fps)
        return seq(n, fps=fps, low=lambda i: 1.0 if 0.5 <= i / fps < 1.0 else 0.2,
                   onset=lambda i: 1.0 if int(round(i / fps * 30)) in (15, 40) and (i / fps * 30) % 1 == 0 else 0.0)
    w30 = run(ReactiveSteering(G, {}, 7, cache_dir=cache), feats(30.0))
    w60 = run(ReactiveSteering(G, {}, 7, cache_dir=cache), feats(60.0))
    ref = float((w30[1:] - w30[0]).norm(dim=-1).mean())
    for k in (10, 30, 50):
        assert float((w30[k] - w60[2 * k]).norm(dim=-1).mean()) < 0.15 * ref


def test_chroma_returns_to_the_same_place(G, cache):
    c_major = np.zeros(12, np.float32)
    c_major[[0, 4, 7]] = 1 / 3
    a_minor = np.zeros(12, np.float32)
    a_minor[[9, 0, 4]] = 1 / 3
    cfg = {"drift": {"period_s": 0.0}}
    steer = ReactiveSteering(G, cfg, 8, cache_dir=cache)
    chords = lambda i: c_major if (i // 180) % 2 == 0 else a_minor       # noqa: E731
    ws = run(steer, seq(540, chroma=chords, mid=0.5))
    # After settling, the same chord gives the same latent; a different chord a different one.
    apart = float((ws[179] - ws[359]).norm())
    assert apart > 0.1 * steer.sigma
    assert float((ws[179] - ws[539]).norm()) < 0.01 * apart


def test_directions_cached_by_model_hash(tmp_path):
    G = tiny_generator(resolution=16, seed=11)
    before = dirs_mod.compute_calls
    s1 = ReactiveSteering(G, {}, 0, cache_dir=str(tmp_path))
    assert dirs_mod.compute_calls == before + 1
    files = [f for f in os.listdir(tmp_path) if f.endswith(".npz")]
    assert len(files) == 1 and dirs_mod.model_hash(G)[:24] in files[0]
    s2 = ReactiveSteering(G, {}, 0, cache_dir=str(tmp_path))
    assert dirs_mod.compute_calls == before + 1                           # reused, not recomputed
    assert np.array_equal(s1.U, s2.U) and s1.sigma == s2.sigma
    d = s1.dirs
    assert torch.allclose(d.components @ d.components.T, torch.eye(d.num_components), atol=1e-4)
    assert bool((d.std[:-1] >= d.std[1:]).all())
    # A corrupt cache file is recomputed and replaced; another model gets its own file.
    with open(tmp_path / files[0], "wb") as f:
        f.write(b"garbage")
    ReactiveSteering(G, {}, 0, cache_dir=str(tmp_path))
    assert dirs_mod.compute_calls == before + 2
    ReactiveSteering(tiny_generator(resolution=16, seed=12), {}, 0, cache_dir=str(tmp_path))
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".npz")]) == 2


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SGVIS_CACHE", str(tmp_path / "a"))
    assert dirs_mod.default_cache_dir() == str(tmp_path / "a")
    monkeypatch.delenv("SGVIS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert dirs_mod.default_cache_dir() == os.path.join(str(tmp_path / "x"), "sgvis")


def test_stylegan3_and_conditional_models(cache):
    G3 = tiny_generator("stylegan3", resolution=16)
    ws = run(make_steering(G3, {}, 0, cache_dir=cache), seq(5, onset=1.0))
    assert ws.shape[1:] == (G3.num_ws, G3.w_dim)
    Gc = tiny_generator(c_dim=3, resolution=16)
    ws = run(make_steering(Gc, {"class_idx": 2}, 0, cache_dir=cache), seq(5))
    assert ws.shape[1:] == (Gc.num_ws, Gc.w_dim)
    with pytest.raises(UserError, match="class_idx"):
        make_steering(Gc, {"class_idx": 3}, 0, cache_dir=cache)


# -- learned --------------------------------------------------------------------------------------------------------
SMALL = dict(hidden=16, channels=(4, 8), head_hidden=16)


def small_model(G, seed=0, randomize=False):
    torch.manual_seed(seed)
    m = LearnedSteeringModel(G.num_ws, G.w_dim, MelConfig(), None, SMALL["hidden"], SMALL["channels"],
                             SMALL["head_hidden"])
    if randomize:
        with torch.no_grad():
            for mod in [m.encoder.head[-1]] + list(m.outs.values()):
                mod.weight.normal_(0, 0.05)
                mod.bias.normal_(0, 0.05)
    return m.eval()


def mel_seq(n, seed):
    rng = np.random.default_rng(seed)
    mc = MelConfig()
    return [Features(time=i / FPS, rms=0.5, mel=rng.normal(-6, 3, (mc.n_mels, mc.window_frames)).astype(np.float32))
            for i in range(n)]


def test_untrained_learned_steering_is_the_base_latent(G):
    """The paper's w^ = E(x) + w with E untrained: the base latent w, the seed's (learned.drift off) or the drift's
    walk (on: the same base as the reactive steering's drift, so the picture moves between the model's hits)."""
    steer = LearnedSteering(G, small_model(G), {"truncation_psi": 0.7, "learned": {"drift": False}}, seed=4)
    assert steer.name == "learned" and steer.mel_config == MelConfig()
    z = torch.from_numpy(np.random.default_rng([4, 0x5EED]).standard_normal(G.z_dim)).float()[None]
    w = G.mapping(z, None, truncation_psi=0.7)[0]
    for f in mel_seq(4, 0):
        ws = steer.step(f)
        assert ws.shape == (G.num_ws, G.w_dim) and ws.dtype == torch.float32
        assert torch.allclose(ws, w, atol=1e-6)
    cfg = {"truncation_psi": 1.0, "drift": {"period_s": 0.5}}
    # (ease_s 0: the model's W+ itself, not the eased path to it that the picture takes by default)
    walking = LearnedSteering(G, small_model(G), {**cfg, "learned": {"drift": True, "ease_s": 0.0}}, seed=4)
    drift = ReactiveSteering(G, {**cfg, "intensity": 0.0}, 4)
    feats = mel_seq(30, 0)
    out = []
    for f in feats:
        drift.step(f)
        ws = walking.step(f)
        out.append(ws)
        assert torch.allclose(ws, torch.from_numpy(drift.base).float().expand_as(ws), atol=1e-5)
    assert float((out[-1] - out[0]).norm()) > 0                          # and it walks


def test_learned_steps_batch_the_encoder_and_give_the_same_states(G):
    """An offline render steers a generator batch at a time: steps() runs the encoder once over the batch, and the
    states are those of step() frame by frame (the recurrent part, the ease and the silence hold unchanged)."""
    m = small_model(G, randomize=True)
    feats = mel_seq(20, 3)
    for i in (4, 11):
        feats[i].onset, feats[i].onset_peak = 0.9, True
    one, batched = LearnedSteering(G, m, {}, 6), LearnedSteering(G, m, {}, 6)
    seen = []
    real_encoder = m.encoder.forward
    m.encoder.forward = lambda mel: (seen.append(mel.shape[0]), real_encoder(mel))[1]
    frame_by_frame = [one.step(f) for f in feats]
    calls = len(seen)
    by_batch = batched.steps(feats[:8]) + batched.steps(feats[8:16]) + batched.steps(feats[16:])
    assert seen[:calls] == [1] * 20 and seen[calls:] == [8, 8, 4]
    assert len(by_batch) == 20
    for a, b in zip(frame_by_frame, by_batch):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert float((frame_by_frame[-1] - frame_by_frame[0]).norm()) > 0     # (the states move: a real comparison)


def test_zero_out_layers_give_the_papers_sound_inversion(G):
    m = small_model(G, randomize=True)
    for out in m.outs.values():
        torch.nn.init.zeros_(out.weight)
        torch.nn.init.zeros_(out.bias)
    mels = torch.from_numpy(np.stack([f.mel for f in mel_seq(3, 1)]))[None]     # [1, 3, n_mels, window]
    w = torch.randn(1, G.num_ws, G.w_dim)
    with torch.no_grad():
        out = m(mels, w)
        e = m.encoder(mels[0])
    assert torch.allclose(out[0], w + e, atol=1e-6)                               # w^ = E(x) + w
    assert e.abs().max() > 0


def test_recurrent_step_depends_on_audio_and_history(G):
    m = small_model(G, randomize=True)
    w = torch.randn(G.num_ws, G.w_dim)
    a, b = mel_seq(5, 2), mel_seq(5, 3)
    with torch.no_grad():
        out_a, st = [], None
        for f in a:
            y, st = m.step(f.mel, w, st)
            out_a.append(y)
        out_b, st = [], None
        for f in b:
            y, st = m.step(f.mel, w, st)
            out_b.append(y)
        assert not torch.allclose(out_a[-1], out_b[-1])                          # audio matters
        same, st = [], None
        for _ in range(3):
            y, st = m.step(a[0].mel, w, st)
            same.append(y)
        assert not torch.allclose(same[0], same[2])                              # hidden state matters
        # The batched training forward equals stepping.
        mels = torch.from_numpy(np.stack([f.mel for f in a]))[None]
        seq_out = m(mels, w[None])[0]
    assert torch.allclose(seq_out, torch.stack(out_a), atol=1e-5)


def test_checkpoint_round_trip_and_errors(G, tmp_path):
    import stylegan
    m = small_model(G, randomize=True)
    path = str(tmp_path / "steer.safetensors")
    save_steering(m, path, model_hash=dirs_mod.model_hash(G))
    loaded = load_steering(path, G)
    assert loaded.config() == m.config()
    feats = mel_seq(4, 5)
    s1, s2 = LearnedSteering(G, m, {}, 9), make_steering(G, {}, 9, learned_path=path)
    assert isinstance(s2, LearnedSteering)
    for f in feats:
        assert torch.equal(s1.step(f), s2.step(f))

    other = tiny_generator(resolution=32)                  # num_ws 8
    with pytest.raises(SteeringMismatch) as e:
        load_steering(path, other)
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)
    assert f"num_ws={G.num_ws}, w_dim={G.w_dim}; this model has num_ws={other.num_ws}" in str(e.value)

    with pytest.raises(SteeringFileError, match="not found"):
        load_steering(str(tmp_path / "missing.safetensors"), G)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(SteeringFileError, match="not a steering checkpoint"):
        load_steering(str(junk), G)
    gen = str(tmp_path / "gen.safetensors")
    stylegan.save(G, gen)
    with pytest.raises(SteeringFileError, match="sgvis generator"):
        load_steering(gen, G)
    with pytest.raises(UserError, match="no steering checkpoint"):
        make_steering(G, {"mode": "learned"}, 0)


def test_onset_input_kicks_the_recurrent_state_on_picked_onsets_and_round_trips(G, tmp_path):
    import dataclasses
    torch.manual_seed(3)
    m = LearnedSteeringModel(G.num_ws, G.w_dim, MelConfig(), None, SMALL["hidden"], SMALL["channels"],
                             SMALL["head_hidden"], onset_input=True).eval()
    feats = mel_seq(6, 7)
    picked = [dataclasses.replace(f, onset=0.8, onset_peak=k == 3) for k, f in enumerate(feats)]
    # Untrained (Out_g zero): still exactly w^ = E(x) + w, whatever the onsets.
    a, b = LearnedSteering(G, m, {}, 2), LearnedSteering(G, small_model(G), {}, 2)
    for f in picked:
        assert torch.allclose(a.step(f), b.step(f), atol=1e-6)
    with torch.no_grad():
        for out in m.outs.values():
            out.weight.normal_(0, 0.05)
    plain, kicked = LearnedSteering(G, m, {}, 2), LearnedSteering(G, m, {}, 2)
    for k in range(6):
        x, y = plain.step(feats[k]), kicked.step(picked[k])
        # Frames before the pick are the same; from the picked frame on the kicked state differs.  An onset
        # strength without a picked peak is no kick (only picked onsets drive it).
        assert torch.equal(x, y) == (k < 3)
    path = str(tmp_path / "onset.safetensors")
    save_steering(m, path)
    loaded = load_steering(path, G)
    assert loaded.onset_input and loaded.config() == m.config()
    s1, s2 = LearnedSteering(G, m, {}, 5), LearnedSteering(G, loaded, {}, 5)
    for f in picked:
        assert torch.allclose(s1.step(f), s2.step(f), atol=1e-6)
    # The batched training forward with onsets equals stepping.
    mels = torch.from_numpy(np.stack([f.mel for f in picked]))[None]
    onsets = torch.tensor([[0.8 if f.onset_peak else 0.0 for f in picked]])
    with torch.no_grad():
        seq = m(mels, s1.w[None], onsets=onsets)[0]
        st, stepped = None, []
        for f, o in zip(picked, onsets[0]):
            y, st = m.step(f.mel, s1.w, st, float(o))
            stepped.append(y)
    assert torch.allclose(seq, torch.stack(stepped), atol=1e-5)
    # A checkpoint from before the onset input loads as one without it.
    old = str(tmp_path / "old.safetensors")
    save_steering(small_model(G, randomize=True), old)
    assert load_steering(old, G).onset_input is False


def test_learned_steering_checks_the_mel_window(G):
    steer = LearnedSteering(G, small_model(G), {}, 0)
    with pytest.raises(ValueError, match="mel"):
        steer.step(Features(time=0.0))
    with pytest.raises(ValueError, match="shape"):
        steer.step(Features(time=0.0, mel=np.zeros((40, 10), np.float32)))


def test_every_group_has_rows(G):
    m = small_model(G)
    rows = sorted(r for g in GROUPS for r in range(*m.groups[g]))
    assert rows == list(range(G.num_ws))


def test_truncation_psi_auto_leaves_latent_bank_models_untruncated(cache):
    from sgvis.steer.reactive import AUTO_PSI, resolve_psi
    plain = tiny_generator(resolution=16)
    banked = tiny_generator(resolution=16)
    banked.set_latent_bank(torch.randn(10, banked.z_dim), sharpness=50.0)
    assert resolve_psi(plain, "auto") == AUTO_PSI == 0.7 and resolve_psi(banked, "auto") == 1.0
    assert resolve_psi(banked, 0.5) == 0.5                    # a number is a number, bank or not
    with pytest.raises(UserError, match="truncation_psi"):
        resolve_psi(plain, "wide")
    # The default config says auto; reactive steering of the banked model then starts from the seed's w itself,
    # and of the plain one from that w pulled toward w_avg.
    assert DEFAULTS["truncation_psi"] == "auto"
    for G_, psi in ((plain, 0.7), (banked, 1.0)):
        s = make_steering(G_, {}, seed=3, cache_dir=cache)
        assert s.psi == psi


def test_space_auto_drifts_bank_models_through_their_learned_images(cache):
    """A latent-bank model's learned images sit at scattered points of W; the W-space drift blends four keyframes'
    w and lands between them, the z-space drift (auto for bank models) maps a z each frame, so it passes through
    the bank's w."""
    from sgvis.steer.reactive import resolve_space
    plain = tiny_generator(resolution=16)
    banked = tiny_generator(resolution=16, seed=1)
    banked.set_latent_bank(torch.randn(10, banked.z_dim), sharpness=200.0)   # about one learned latent per z
    assert resolve_space(plain, "auto") == "w" and resolve_space(banked, "auto") == "z"
    assert resolve_space(banked, "w") == "w"
    with pytest.raises(UserError, match="steer.space"):
        resolve_config({"space": "q"})
    with torch.no_grad():
        bank_w = banked.mapping(banked.mapping.z_bank, None)[:, 0]                       # the learned images' w
    spread = float(torch.cdist(bank_w, bank_w).sum() / (len(bank_w) * (len(bank_w) - 1)))
    feats = seq(240, rms=0.5)
    still = {"orbit": {"radius": 1e-3}, "drift": {"period_s": 1.0, "even_pace": False}, "intensity": 0.0}
    gaps = {}                                       # the drift alone, at the spline's own pace
    for space in ("w", "z"):
        s = make_steering(banked, {**still, "space": space}, seed=5, cache_dir=cache)
        assert s.space == space
        ws = run(s, feats)
        assert torch.isfinite(ws).all() and ws.shape == (240, banked.num_ws, banked.w_dim)
        gaps[space] = float(torch.cdist(ws[:, 0], bank_w).min(dim=1).values.median()) / spread
    assert gaps["w"] > 0.2 and gaps["z"] < 0.05, gaps     # measured: w 0.36, z 0.005


def test_even_pace_drift_moves_a_bank_model_steadily(cache):
    """A bank model maps long stretches of z to one learned latent and then switches: at the spline's own pace the
    base holds and lurches (no sound asks for either); drift.even_pace follows the spline by W distance, so the
    base moves by about the same amount every frame."""
    banked = tiny_generator(resolution=16, seed=1)
    banked.set_latent_bank(torch.randn(10, banked.z_dim), sharpness=200.0)
    feats = seq(240, rms=0.5)
    spread = {}
    for even in (False, True):
        still = {"orbit": {"radius": 1e-3}, "drift": {"period_s": 1.0, "even_pace": even, "breath": 0.0},
                 "intensity": 0.0}
        ws = run(make_steering(banked, still, seed=5, cache_dir=cache), feats)
        step = (ws[1:, 0] - ws[:-1, 0]).norm(dim=-1).numpy()[5:]
        assert step.max() > 0
        spread[even] = float(np.percentile(step, 95) / max(np.median(step), 1e-12))
    assert spread[False] > 5 and spread[True] < 2.5, spread          # measured: 10.5 and 1.7


def test_learned_steering_holds_still_in_silence_and_rejoins_without_a_jump(G):
    import dataclasses
    torch.manual_seed(5)
    m = small_model(G)
    with torch.no_grad():                                  # a "trained" model: every weight away from its init
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    feats = mel_seq(90, 11)
    # 1 s of sound, 1 s of silence (levels 0; the mel is still noise, as the model's input would be), 1 s of sound.
    feats = [dataclasses.replace(f, rms=0.0) if 30 <= k < 60 else f for k, f in enumerate(feats)]
    held = LearnedSteering(G, m, {}, 2)
    free = LearnedSteering(G, m, {"learned": {"hold_in_silence": False}}, 2)
    a = torch.stack([held.step(f) for f in feats])
    b = torch.stack([free.step(f) for f in feats])
    step_a = (a[1:] - a[:-1]).flatten(1).norm(dim=1)
    step_b = (b[1:] - b[:-1]).flatten(1).norm(dim=1)
    assert torch.equal(a[:30], b[:30])                     # with sound: the model's own W+, bit for bit
    assert step_b[35:59].min() > 1e-3                      # the model alone keeps moving in silence
    assert step_a[55:59].max() == 0                        # held: still, once the gate's release has run out
    assert step_a[30:50].max() > 0                         # (it eases into the hold over that release)
    assert step_a[30:35].max() <= step_b[30:35].max()      # and it slows down into the silence, no jolt
    # Sound again: the picture moves from where it held and catches up with the model, never in one jump.
    assert step_a[59:].max() < 3 * step_b[59:].max()
    assert (a[89] - b[89]).norm() < 0.5 * (a[60] - b[60]).norm()


class ScriptedSteeringModel(torch.nn.Module):
    """Stands in for a trained LearnedSteeringModel: frame k's W+ is w + path[k] (the state counts frames)."""

    def __init__(self, G, path: torch.Tensor):
        super().__init__()
        self.num_ws, self.w_dim, self.mel_config = G.num_ws, G.w_dim, MelConfig()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.path = path

    def step(self, mel, w, state=None, onset=0.0, offset=None):
        k = 0 if state is None else state + 1
        return w + self.path[k], k


def test_learned_ease_peaks_on_hits_and_slows_down_between_them(G):
    """steer.learned.ease_s: the picture sets off toward the model's latent on each picked onset and slows down
    until the next; the model's own after-swings become part of that glide, and the picture still gets there."""
    import dataclasses
    rng = np.random.default_rng(3)
    n, hits = 150, {k for k in range(150) if k % 15 == 3}
    # A model like the built-in one: on each hit its latent jumps (over 3 frames), and 5 frames later it swings
    # again, less far, another way; a little jitter on every frame.
    steps = torch.from_numpy(rng.normal(0, 0.001, (n, G.num_ws, G.w_dim))).float()
    for h in sorted(hits):
        d = torch.from_numpy(rng.normal(0, 1, (2, G.num_ws, G.w_dim))).float()
        d = d / d.flatten(1).norm(dim=1)[:, None, None]
        for j, share in enumerate((0.5, 0.3, 0.2)):
            steps[h + j] += share * d[0]
        if h + 6 < n:
            steps[h + 5] += 0.15 * d[1]
            steps[h + 6] += 0.15 * d[1]
    steps[110:] = 0                                       # and from frame 110 on it holds still
    model = ScriptedSteeringModel(G, torch.cumsum(steps, 0))
    feats = [dataclasses.replace(f, onset=1.0, onset_peak=k in hits) for k, f in enumerate(mel_seq(n, 7))]
    eased = LearnedSteering(G, model, {"learned": {"ease_s": 0.2, "hold_in_silence": False, "drift": False}}, 2)
    own = LearnedSteering(G, model, {"learned": {"ease_s": 0.0, "hold_in_silence": False, "drift": False}}, 2)
    a = torch.stack([eased.step(f) for f in feats])
    b = torch.stack([own.step(f) for f in feats])
    assert torch.allclose(b - b[0], torch.cumsum(steps, 0) - steps[0], atol=1e-5)   # ease_s 0: the model's W+
    step_a = (a[1:] - a[:-1]).flatten(1).norm(dim=1).numpy()      # step_a[k - 1]: frame k - 1 -> k
    step_b = (b[1:] - b[:-1]).flatten(1).norm(dim=1).numpy()

    def peaks(s):
        return {k + 1 for k in range(1, len(s) - 1) if s[k] > s[k - 1] and s[k] > s[k + 1]}
    # The model's steps peak on the hits and again on each after-swing.  Eased, they peak on the hits (while the
    # model moves)...
    moving = {h for h in hits if 3 < h < 110}
    after = {h + j for h in hits for j in range(1, 10)}
    assert len((peaks(step_b) & after) - hits) >= len(moving)
    assert moving <= peaks(step_a) and not (peaks(step_a) & after) - hits
    # ...and for a third of a second after each hit they only shrink.
    for h in sorted(moving):
        assert all(step_a[k] <= step_a[k - 1] * (1 + 1e-6) for k in range(h, h + 10))
    # It follows the model: never far behind (less than one hit's jump), and it comes to rest where the model did.
    gap = (a - b).flatten(1).norm(dim=1).numpy()
    assert gap.max() < 1.0 and gap[-1] < 0.02 * gap[105]
