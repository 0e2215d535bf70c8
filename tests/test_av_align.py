"""AV-Align (TempoTokens' definition) and the smoothness figures, on synthetic video with known motion."""
import argparse
import json

import cv2
import numpy as np
import pytest

from sgvis.eval.av_align import (av_align, flow_trajectory, intersection_over_union, register_cli, smoothness,
                            video_peaks)
from sgvis.errors import UserError

SR = 22050
FPS = 30.0
N = 150                                                   # 5 s
CLICKS = [12, 27, 40, 58, 71, 90, 104, 118, 133]          # frames; at least 9 frames apart


def click_track(frames, seconds=N / FPS):
    rng = np.random.default_rng(0)
    y = np.zeros(int(seconds * SR), np.float32)
    n = int(0.03 * SR)
    for k in frames:
        s = int(round(k / FPS * SR))
        y[s:s + n] += 0.8 * rng.standard_normal(n).astype(np.float32) * np.exp(-np.arange(n) / (0.004 * SR))
    return y


_TEX = None


def texture():
    global _TEX
    if _TEX is None:
        rng = np.random.default_rng(1)
        t = cv2.GaussianBlur(rng.random((256, 256)).astype(np.float32), (0, 0), 4)
        _TEX = (t - t.min()) / (t.max() - t.min())
    return _TEX


def moving_frames(spike_frames, base_speed=0.0, size=64, release=2.5):
    """A smooth texture panning right; at each spike frame the speed jumps by 3 px/frame and eases out
    (time constant `release` frames)."""
    tex = texture()
    x = 0.0
    for i in range(N):
        v = base_speed + sum(3.0 * np.exp(-(i - k) / release) for k in spike_frames if i >= k)
        x += v
        m = np.float32([[1, 0, -(x % 256)], [0, 1, 0]])        # the texture repeats every 256 px
        g = cv2.warpAffine(tex, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        yield np.repeat((g * 255).astype(np.uint8)[..., None], 3, axis=2)


def test_motion_spikes_at_the_clicks_align():
    r = av_align(moving_frames(CLICKS), (click_track(CLICKS), SR), fps=FPS)
    assert r["audio_peaks"] == len(CLICKS)
    assert r["av_align"] > 0.8, r
    assert r["frames"] == N and len(r["flow"]) == N


def test_motion_spikes_elsewhere_do_not_align():
    rng = np.random.default_rng(3)
    near = {c + d for c in CLICKS for d in range(-3, 4)}
    others = sorted(rng.choice([i for i in range(5, N - 5) if i not in near], len(CLICKS), replace=False))
    r = av_align(moving_frames(others), (click_track(CLICKS), SR), fps=FPS)
    assert r["av_align"] < 0.25, r


def test_smooth_pulses_pass_and_strobes_fail():
    smooth = av_align(moving_frames(CLICKS, base_speed=0.3, release=8.0), (click_track(CLICKS), SR), fps=FPS)
    assert smooth["av_align"] > 0.6
    assert smooth["smoothness"]["strobe_flags"] == [], smooth["smoothness"]

    rng = np.random.default_rng(5)
    imgs = [(rng.random((64, 64, 3)) * 255).astype(np.uint8) for _ in range(2)]
    blurred = [cv2.GaussianBlur(i, (0, 0), 2) for i in imgs]
    # A strobe cutting to a new image on every click, still in between: perfect alignment, awful motion.
    cuts = []
    cur = 0
    for i in range(N):
        if i in CLICKS:
            cur = 1 - cur
        cuts.append(blurred[cur])
    r = av_align(cuts, (click_track(CLICKS), SR), fps=FPS)
    assert r["smoothness"]["strobe_flags"], r["smoothness"]
    assert r["smoothness"]["max_over_mean"] > 2 * smooth["smoothness"]["max_over_mean"]
    # A constant strobe alternating two images every frame: flow is large and even, gray levels jump.
    r = av_align([blurred[i % 2] for i in range(N)], (click_track(CLICKS), SR), fps=FPS)
    s = r["smoothness"]
    assert "frame_change_p95" in s["strobe_flags"]
    assert s["frame_change_p95"] > 1.5 * smooth["smoothness"]["frame_change_p95"]


def test_tempotokens_definitions():
    # Strict local maxima only (plateaus are not peaks), at i / fps.
    assert list(video_peaks([0, 1, 0, 2, 2, 0, 3, 1], 10)) == [0.1, 0.6]
    # A hit needs |video - audio| < 1 frame, strictly; each audio peak counts once.
    iou, hits = intersection_over_union([1.0, 2.0], [1.0 + 0.5 / 30, 2.0 + 1.5 / 30], 30)
    assert hits == 1 and iou == pytest.approx(1 / 3)
    assert intersection_over_union([], [], 30) == (0.0, 0)
    # The trajectory's first entry repeats the first flow (one value per frame).
    traj, info = flow_trajectory(list(moving_frames([3]))[:6])
    assert len(traj) == 6 and traj[0] == traj[1] and info["frames"] == 6
    s = smoothness(np.array([1.0, 1.0, 1.0, 10.0, 1.0, 1.0]))
    assert s["flow_median"] == 1.0 and s["spike_fraction"] == pytest.approx(0.2)


def test_one_video_peak_answers_one_audio_peak():
    # TempoTokens' current matching: two audio peaks within a frame of one video peak make one hit, not two.
    iou, hits = intersection_over_union([1.0, 1.01], [1.0], 30)
    assert hits == 1 and iou == pytest.approx(1 / 2)
    iou, hits = intersection_over_union([1.0, 1.01], [0.99, 1.02], 30)
    assert hits == 2 and iou == 1.0


def textured_still(size=64):
    return np.repeat((texture()[:size, :size] * 255).astype(np.uint8)[..., None], 3, axis=2)


def noisy_still(n=N, sigma=1.5, seed=7):
    """One picture with fresh sensor/codec-like noise on every frame: flow far below 0.1 px, but maxima."""
    rng = np.random.default_rng(seed)
    base = textured_still().astype(np.float32)
    for _ in range(n):
        yield np.clip(np.rint(base + rng.normal(0, sigma, base.shape)), 0, 255).astype(np.uint8)


def test_the_peak_threshold_scores_a_still_noisy_picture_zero():
    r = av_align(noisy_still(), (click_track(CLICKS), SR), fps=FPS)
    assert r["smoothness"]["flow_max"] < 0.1, r["smoothness"]
    assert r["video_peaks"] == 0 and r["av_align"] == 0.0
    # Without the 0.1 px floor the noise makes peaks everywhere and some land on the clicks by chance.
    assert r["video_peaks_unthresholded"] > 20 and r["hits_unthresholded"] > 0
    assert r["av_align_unthresholded"] > 0.02
    assert r["peak_min_flow"] == 0.1
    # Real motion keeps its score under the threshold.
    moving = av_align(moving_frames(CLICKS), (click_track(CLICKS), SR), fps=FPS)
    assert moving["av_align"] > 0.8 and moving["av_align"] >= moving["av_align_unthresholded"] - 1e-9
    assert list(video_peaks([0.0, 0.05, 0.0, 0.2, 0.0], 10)) == [0.3]
    assert list(video_peaks([0.0, 0.05, 0.0, 0.2, 0.0], 10, min_flow=0)) == [0.1, 0.3]


def test_frozen_detector():
    still = av_align(noisy_still(), (click_track(CLICKS), SR), fps=FPS)
    assert still["motion"]["frozen"] and still["motion"]["moving_share"] < 0.1
    assert "frozen" in still["flags"]
    exact = av_align([textured_still()] * 40, (click_track([12, 27], 40 / FPS), SR), fps=FPS)
    assert exact["motion"]["frozen"] and exact["motion"]["flow_p95"] < 0.01
    moving = av_align(moving_frames(CLICKS, base_speed=0.3, release=8.0), (click_track(CLICKS), SR), fps=FPS)
    m = moving["motion"]
    assert not m["frozen"] and m["moving_share"] > 0.9 and m["flow_p95"] > 1.0 and m["cuts"] == 0
    assert moving["flags"] == []
    # Pulses on the beats only (still in between) move in about a third of the steps: not frozen either.
    pulses = av_align(moving_frames(CLICKS), (click_track(CLICKS), SR), fps=FPS)
    assert not pulses["motion"]["frozen"]


def test_cuts_are_flagged_fast_smooth_motion_is_not():
    rng = np.random.default_rng(5)
    imgs = [cv2.GaussianBlur((rng.random((64, 64, 3)) * 255).astype(np.uint8), (0, 0), 2) for _ in range(2)]
    frames = [imgs[0]] * 50 + [imgs[1]] * 50 + [imgs[0]] * 50
    r = av_align(frames, (click_track(CLICKS), SR), fps=FPS)
    assert r["motion"]["cuts"] == 2 and r["motion"]["cut_frames"] == [50, 100]
    assert "cuts" in r["flags"] and "cuts" in r["smoothness"]["strobe_flags"]
    fast = av_align(moving_frames(CLICKS, base_speed=3.0, release=8.0), (click_track(CLICKS), SR), fps=FPS)
    assert fast["smoothness"]["frame_change_p95"] > 0.7 and fast["motion"]["cuts"] == 0


SILENT_FROM = 60                                          # frame: clicks every 10 frames before, silence after


def speed_frames(speeds, size=64):
    tex = texture()
    x = 0.0
    for v in speeds:
        x += v
        m = np.float32([[1, 0, -(x % 256)], [0, 1, 0]])
        g = cv2.warpAffine(tex, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        yield np.repeat((g * 255).astype(np.uint8)[..., None], 3, axis=2)


def pulse_speeds(pulse_frames, base=0.5, release=2.5):
    return [base + sum(3.0 * np.exp(-(i - k) / release) for k in pulse_frames if i >= k) for i in range(N)]


def test_silence_check_flags_pulses_in_silence_and_passes_calm():
    beats = list(range(10, SILENT_FROM, 10))
    audio = (click_track(beats), SR)
    calm = av_align(speed_frames(pulse_speeds(beats)), audio, fps=FPS)
    q = calm["silence"]
    assert 2.8 < q["silence_seconds"] < 3.2, q              # after the last click (1.7 s), less 0.25 s grace
    assert not q["pulses"] and q["pulse_px"] < 0.1 and 0.4 < q["flow_mean"] < 0.6
    assert "pulses-in-silence" not in calm["flags"]
    jolting = av_align(speed_frames(pulse_speeds(beats + [80, 95, 110, 125])), audio, fps=FPS)
    q = jolting["silence"]
    assert q["pulses"] and q["pulse_px"] > 1.0, q
    assert "pulses-in-silence" in jolting["flags"]
    # No silence at all: nothing to judge.
    loud = av_align(speed_frames(pulse_speeds(beats)), (np.full(int(N / FPS * SR), 0.1, np.float32), SR), fps=FPS)
    assert loud["silence"]["silence_seconds"] == 0 and loud["silence"]["pulse_px"] is None
    assert not loud["silence"]["pulses"]


def test_bad_input_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        av_align(str(tmp_path / "missing.mp4"))
    with pytest.raises(UserError, match="fps"):
        av_align([np.zeros((8, 8), np.uint8)] * 3, (np.zeros(100), SR))
    with pytest.raises(UserError, match="at least 3"):
        av_align([np.zeros((8, 8), np.uint8)] * 2, (np.zeros(1000), SR), fps=30)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(UserError, match="bad.mp4"):
        av_align(str(bad))


def write_mp4(path, frames, audio=None):
    import av
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=int(FPS))
        vs.width, vs.height, vs.pix_fmt = 64, 64, "yuv444p"
        vs.options = {"crf": "0", "preset": "ultrafast"}
        a = None
        if audio is not None:
            a = c.add_stream("aac", rate=SR)
            a.layout = "mono"
        for fr in frames:
            for p in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(fr), format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if a is not None:
            af = av.AudioFrame.from_ndarray(audio[None].astype(np.float32), format="flt", layout="mono")
            af.sample_rate = SR
            af.pts = 0                    # without it the AAC priming (1024 samples) stays in: audio 46 ms late
            for p in a.encode(af):
                c.mux(p)
            for p in a.encode():
                c.mux(p)


def cli(argv):
    parser = argparse.ArgumentParser(prog="sgvis")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_eval_av_align(tmp_path, capsys):
    import soundfile
    y = click_track(CLICKS)
    video = tmp_path / "clip.mp4"
    write_mp4(video, moving_frames(CLICKS), y)
    out = tmp_path / "r.json"
    assert cli(["eval", "av-align", str(video), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "AV-Align" in printed and "smoothness" in printed
    r = json.loads(out.read_text())
    assert r["fps"] == FPS and r["frames"] == N and r["av_align"] > 0.6        # audio from the video (AAC)

    wav = tmp_path / "clicks.wav"
    soundfile.write(str(wav), y, SR)
    silent = tmp_path / "silent.mp4"
    write_mp4(silent, moving_frames(CLICKS))
    assert cli(["eval", "av-align", str(silent), str(wav), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["av_align"] > 0.8
    with pytest.raises(UserError, match="no audio stream"):
        cli(["eval", "av-align", str(silent)])
    with pytest.raises(UserError, match="not found"):
        cli(["eval", "av-align", str(silent), str(tmp_path / "nope.wav")])
