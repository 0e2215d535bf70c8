"""Spatial motion: warps that move content where they say, hits that kick it, silence that stays calm, and a
render whose frames optical flow sees moving."""
import numpy as np
import pytest
import torch

import stylegan
from audio_fixtures import click_track, write_audio
from conftest import tiny_generator
from test_safety_and_errors import run_cli


def spot_centre(img: torch.Tensor) -> tuple[float, float]:
    ys, xs = torch.nonzero(img > 0.5, as_tuple=True)
    return float(xs.float().mean()), float(ys.float().mean())


def test_warp_moves_content_by_its_pan_turn_and_zoom():
    from sgvis.backends.warp import warp
    x = torch.zeros(3, 1, 64, 64)
    x[:, 0, 30:34, 40:44] = 1                                     # a spot right of the centre (31.5, 31.5)
    params = torch.tensor([[0.0, 0.0, 0.25, 0.0],                 # pan: a quarter of the half-width = 8 px
                           [0.0, np.pi / 2, 0.0, 0.0],            # a quarter turn about the centre
                           [np.log(2.0), 0.0, 0.0, 0.0]])         # twice as close
    y = warp(x, params)
    assert spot_centre(y[0, 0]) == pytest.approx((49.5, 31.5), abs=0.6)
    assert spot_centre(y[1, 0]) == pytest.approx((31.5, 41.5), abs=0.6)
    assert spot_centre(y[2, 0]) == pytest.approx((51.5, 31.5), abs=0.6)
    assert torch.equal(warp(x, torch.zeros(3, 4)), x)             # identity is exact
    still = params.clone()
    still[1] = 0                                                   # a batch with one still sample
    y2 = warp(x, still)
    assert torch.equal(y2[1], x[1])
    torch.testing.assert_close(y2[[0, 2]], y[[0, 2]])


def test_sampling_grid_is_affine_grid():
    import torch.nn.functional as F
    from sgvis.backends.warp import affine_matrices, sampling_grid
    m = affine_matrices(torch.tensor([[0.1, 0.3, -0.2, 0.05], [-0.2, -1.0, 0.3, 0.0]]))
    for h, w in ((16, 16), (48, 80), (256, 256), (48, 80)):        # the last: from the kept base grid
        torch.testing.assert_close(sampling_grid(m, h, w), F.affine_grid(m, [2, 1, h, w], align_corners=False),
                                   rtol=0, atol=1e-6)


def features_of(samples, sr, seconds, fps=30.0):
    from sgvis.features.analysis import FeatureExtractor, MelConfig, frame_features
    mel = MelConfig()
    import av
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=mel.sample_rate)
    frame = av.AudioFrame.from_ndarray(samples[None].astype(np.float32), format="fltp", layout="mono")
    frame.sample_rate = sr
    y = np.concatenate([f.to_ndarray()[0] for f in resampler.resample(frame)] +
                       [f.to_ndarray()[0] for f in resampler.resample(None)])
    blocks = (y[None, i:i + 2048] for i in range(0, len(y), 2048))
    return list(frame_features(FeatureExtractor(mel), blocks, int(seconds * fps), fps, 0.046))


def test_hits_kick_the_motion_and_silence_stays_calm():
    from sgvis.steer.motion import MotionDriver
    sr = 22050
    clicks, times = click_track(4.0, sr, bpm=120)
    silence = np.zeros(4 * sr, np.float32)
    motion = MotionDriver({}, seed=3)
    moves = [np.concatenate([m["bend"], m["camera"]]) for m in map(motion.step, features_of(
        np.concatenate([clicks, silence]), sr, 8.0))]
    speed = np.abs(np.diff(np.array(moves), axis=0)).sum(1)          # how far the transforms move per frame
    # A hit lands on every click; the only others are where the sound starts and stops (digital silence to
    # sound and back reads as an onset to the analysis).
    assert len(times) <= motion.hits <= len(times) + 2
    # The motion peaks on the clicks: most clicks have a speed peak within a frame of them.
    peaks = {k + 1 for k in range(1, len(speed) - 1) if speed[k] > speed[k - 1] and speed[k] >= speed[k + 1]}
    on_click = [any(abs(int(round(t * 30)) - p) <= 1 for p in peaks) for t in times]
    assert sum(on_click) >= 0.75 * len(times)
    loud, quiet = speed[: 4 * 30], speed[5 * 30:]                  # a second after the music stops
    assert quiet.max() < 0.1 * loud.max()
    assert speed[-30:].max() < 1e-3                                 # and in the end it rests


def test_motion_controls_scale_and_switch_off_each_source():
    from sgvis.features.analysis import Features
    from sgvis.steer.motion import MotionDriver
    runs = {}
    for name, value in [(None, None), ("motion.bend", 0.0), ("motion.camera", 0.0), ("motion.amount", 2.0)]:
        m = MotionDriver({}, seed=1)
        if name:
            assert m.apply_control(name, value)
        out = [m.step(Features(time=k / 30, onset=1.0 if k % 15 == 0 else 0.0, onset_peak=k % 15 == 0,
                                        rms=0.6)) for k in range(60)]
        runs[name] = (np.abs([o["bend"] for o in out]).sum(), np.abs([o["camera"] for o in out]).sum())
    assert runs[None][0] > 0 and runs[None][1] > 0
    assert runs["motion.bend"][0] == 0 and runs["motion.bend"][1] == pytest.approx(runs[None][1])
    assert runs["motion.camera"][1] == 0
    assert runs["motion.amount"][0] == pytest.approx(2 * runs[None][0])
    assert not MotionDriver({}).apply_control("warp", 1.0)


def test_unknown_motion_setting_names_the_key():
    from sgvis.errors import UserError
    from sgvis.steer.motion import resolve_motion
    with pytest.raises(UserError, match="motion.bend.travle"):
        resolve_motion({"bend": {"travle": 1}})
    with pytest.raises(UserError, match="number"):
        resolve_motion({"amount": "lots"})


def test_the_backend_bends_layers_and_moves_the_camera():
    from sgvis.backends.stylegan import StyleGANBackend
    G = tiny_generator("stylegan2", resolution=64)
    backend = StyleGANBackend(G, torch.device("cpu"), precision="fp32")
    backend.bend_resolution = 16
    ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(0)), None).repeat(3, 1, 1)
    motion = torch.zeros(3, 8)
    motion[1, 6] = 0.25                                  # camera pan right by 8 px
    motion[2, 2] = 0.25                                  # bend: the layout at 16x16 moves right
    still, panned, bent = backend.frames(ws, motion=motion).float()
    assert torch.allclose(panned[8:56, 16:56], still[8:56, 8:48], atol=3)      # the picture moved 8 px
    assert (bent - still).abs().mean() > 5 and not torch.allclose(bent[:, 16:56], still[:, 8:48], atol=3)
    assert torch.equal(backend.frames(ws[:1], motion=torch.zeros(1, 8)), backend.frames(ws[:1]))


@pytest.fixture(scope="module")
def textured(tmp_path_factory):
    """A random-weight generator: rich texture, so optical flow sees the motion."""
    d = tmp_path_factory.mktemp("motion")
    model = d / "m.safetensors"
    stylegan.save(tiny_generator("stylegan2", resolution=64), model)
    samples, _ = click_track(3.0, 22050, bpm=120)
    wav = d / "clicks.wav"
    write_audio(wav, samples, 22050)
    return str(model), str(wav)


def test_render_with_motion_moves_what_optical_flow_measures(tmp_path, textured):
    from sgvis.eval.av_align import flow_trajectory
    model, wav = textured
    flows = {}
    for amount in ("0", "1"):
        frames_dir = tmp_path / f"png{amount}"
        result = run_cli("render", wav, "-o", str(tmp_path / f"o{amount}.mp4"), "--model", model, "--fps", "30",
                         "--png-dir", str(frames_dir), "--set", f"motion.amount={amount}",
                         "--set", "steer.intensity=0", "--set", "steer.drift.period_s=0")
        assert result.returncode == 0, result.stderr
        from PIL import Image
        frames = [np.asarray(Image.open(p)) for p in sorted(frames_dir.glob("frame_*.png"))]
        flows[amount] = flow_trajectory(frames)[0]
    assert flows["0"].max() < 0.05                          # still latents, no motion: a still picture
    assert flows["1"].max() > 0.5 and np.mean(flows["1"] >= 0.1) > 0.2


def test_offline_onsets_are_librosas_and_the_causal_picker_finds_each_click_once():
    """Render picks the whole track's onsets as AV-Align does (librosa's peak picking); live picks them causally.
    Either way Features.onset_peak marks the video frame each onset falls in."""
    import librosa
    from sgvis.features.analysis import FeatureExtractor, MelConfig, frame_features, offline_onset_times
    mel = MelConfig()
    sr = mel.sample_rate
    clicks, times = click_track(4.0, sr, bpm=150)
    y = np.concatenate([np.zeros(sr // 2, np.float32), clicks])      # sound starts and stops inside
    times = times + 0.5
    ex = FeatureExtractor(mel, record_onsets=True)
    ex.push(y)
    offline = offline_onset_times(np.asarray(ex.onsets), mel)
    reference = librosa.frames_to_time(librosa.onset.onset_detect(y=y, sr=sr), sr=sr)
    assert len(offline) == len(reference)
    assert np.abs(offline - reference).max() <= 1.01 * mel.hop / sr     # within one analysis frame
    for onset_times in (offline, None):
        blocks = (y[None, i:i + 4096] for i in range(0, len(y), 4096))
        feats = list(frame_features(FeatureExtractor(mel, onset_times=onset_times), blocks, 135, 30.0, 0.046))
        marked = np.array([f.time for f in feats if f.onset_peak])
        for t in times:                                                  # each click: one mark, on its frame
            near = marked[np.abs(marked - t) < 1.5 / 30]
            assert len(near) == 1, (onset_times is None, t, marked)
        assert len(marked) <= len(times) + 2                             # besides: sound starting / stopping


def test_offline_onsets_of_a_clip_that_starts_in_full_sound_are_librosas():
    """A clip cut from the middle of a song starts at full level: the first window's rise out of the zero padding
    must not set the envelope's normalisation (it hid every onset here: 1 picked against librosa's 31)."""
    import librosa

    from sgvis.eval.av_align import intersection_over_union
    from sgvis.features.analysis import FeatureExtractor, MelConfig, offline_onset_times
    mel = MelConfig()
    sr = mel.sample_rate
    rng = np.random.default_rng(0)
    n = 6 * sr
    t = np.arange(n) / sr
    y = 0.1 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * 220 * t)      # a noisy pad, loud from sample 0
    for k, at in enumerate(np.arange(0.5, 6, 0.37)):                             # soft plucks of varying level
        i = int(at * sr)
        m = min(n - i, sr // 5)
        y[i:i + m] += (0.05 + 0.04 * (k % 3)) * rng.standard_normal(m) * np.exp(-np.arange(m) / (0.02 * sr))
    y = y.astype(np.float32)
    ex = FeatureExtractor(mel, record_onsets=True)
    ex.push(y)
    offline = offline_onset_times(np.asarray(ex.onsets), mel)
    reference = librosa.frames_to_time(librosa.onset.onset_detect(y=y, sr=sr), sr=sr)
    iou, hits = intersection_over_union(reference, offline, 30.0)
    assert len(reference) >= 14 and hits >= 0.9 * len(reference) and iou > 0.8, (len(offline), len(reference))


def test_hits_follow_picked_onsets_or_with_picked_0_the_adaptive_level():
    from sgvis.features.analysis import Features
    from sgvis.steer.motion import MotionDriver
    feats = [Features(time=k / 30, onset=1.0 if k % 15 == 0 else 0.05, onset_peak=k == 30, rms=0.5)
             for k in range(60)]
    picked, adaptive = MotionDriver({}, seed=0), MotionDriver({"hit": {"picked": 0}}, seed=0)
    for f in feats:
        picked.step(f)
        adaptive.step(f)
    assert picked.hits == 1                   # only the frame the features stage picked
    assert adaptive.hits == 4                 # every onset standing out of the recent level


def hit_train(step: float, seconds: float = 4.0, fps: float = 30.0):
    """Features with a full-strength picked onset every `step` seconds (off the beat grid: no accent)."""
    from sgvis.features.analysis import Features
    every = int(round(step * fps))
    return [Features(time=k / fps, onset=1.0 if k % every == 0 else 0.0, onset_peak=k % every == 0, rms=0.6)
            for k in range(int(seconds * fps))]


def hit_decay(moves, fps: float = 30.0, every: int = 15) -> float:
    """How much of a hit's layout speed is left 3 frames after it (median over the hits after the first two)."""
    bend = np.array([m["bend"] for m in moves])
    speed = np.abs(np.diff(bend, axis=0)).sum(1)
    hits = [k for k in range(2 * every, len(speed) - 4, every)]
    return float(np.median([speed[k + 2] / speed[k - 1] for k in hits]))     # speed[k - 1]: frames k-1 -> k


def test_release_share_lets_sparse_hits_flow_longer_and_keeps_dense_hits_short():
    from sgvis.steer.motion import MotionDriver
    decay = {}
    for share in (0.0, 0.7):
        for step in (0.5, 0.2):
            m = MotionDriver({"hit": {"release_share": share}}, seed=2)
            every = int(round(step * 30))
            decay[share, step] = hit_decay([m.step(f) for f in hit_train(step)], every=every)
    # Fixed release (share 0): a hit's speed falls the same way whatever the time between hits.
    assert decay[0.0, 0.5] == pytest.approx(decay[0.0, 0.2], rel=0.1)
    # With a share of the time between hits: hits half a second apart keep more of their speed 3 frames on
    # (a 0.35 s release: ~0.71 left) than with the fixed 0.15 s (~0.48); hits 0.2 s apart ease out over 0.15 s
    # (0.7 x 0.2 s is shorter than release_s, the floor), so they stay as sharp as before.
    assert decay[0.7, 0.5] > 1.25 * decay[0.0, 0.5]
    assert decay[0.7, 0.2] == pytest.approx(decay[0.0, 0.2], rel=0.02)
    # The step's own release_share wins over the setting (a steering's motion style).
    a = MotionDriver({"hit": {"release_share": 0.0}}, seed=2)
    b = MotionDriver({"hit": {"release_share": 0.7}}, seed=2)
    feats = hit_train(0.5)
    assert all(np.array_equal(a.step(f, release_share=0.7)["bend"], b.step(f)["bend"]) for f in feats)


def test_motion_scale_multiplies_every_move():
    from sgvis.steer.motion import MotionDriver
    a, b = MotionDriver({}, seed=5), MotionDriver({}, seed=5)
    for f in hit_train(0.4, seconds=2.0):
        x, y = a.step(f), b.step(f, scale=1.5)
        assert np.allclose(y["bend"], 1.5 * x["bend"]) and np.allclose(y["camera"], 1.5 * x["camera"])
