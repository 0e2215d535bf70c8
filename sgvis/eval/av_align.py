"""AV-Align (audio-video alignment of peaks, from TempoTokens) plus motion, smoothness and silence figures.

    from sgvis.eval.av_align import av_align
    r = av_align("clip.mp4")                          # audio from the video's own stream
    r = av_align(frames, (samples, sr), fps=30)       # frames: iterable of HxWx3 uint8 RGB (or HxW gray)
    r["av_align"], r["av_align_unthresholded"], r["motion"]["frozen"], r["flags"]

    sgvis eval av-align clip.mp4 [track.wav] [--json out.json]

AV-Align, as defined by TempoTokens (Yariv et al., "Diverse and Aligned Audio-to-Video Generation via
Text-to-Video Model Adaptation"), following the facts of its current public `av_align.py` (guyyariv/TempoTokens,
revised February 2025):

* video: per frame, the mean Farneback optical-flow magnitude between consecutive grayscale frames,
  `cv2.calcOpticalFlowFarneback(prev, next, None, 0.5, 3, 15, 3, 5, 1.2, 0)` (pyr_scale 0.5, 3 levels,
  window 15, 3 iterations, poly_n 5, poly_sigma 1.2, no flags), magnitude by `cv2.magnitude`, averaged by
  `cv2.mean` (we round it to 1e-4 px so ties between near-identical frames are decided the same way every
  run).  The trajectory has one value per frame: frame i >= 1 gets flow(frame i-1 -> frame i) and frame 0
  repeats frame 1's value (as in their `detect_video_peaks`).  Frames are converted to gray as cv2 does for a
  video it reads (BGR2GRAY of BGR pixels; RGB frames given here are converted with RGB2GRAY, the same thing).
* video peaks: strict local maxima, trajectory[i-1] < trajectory[i] > trajectory[i+1] for 1 <= i <= n-2, at
  time i / fps, **whose flow is at least PEAK_MIN_FLOW = 0.1 px**: smaller maxima are ignored, "to prevent
  static scenes from being counted as peaks due to very small optical flow" (their note).  Without it, the
  codec noise of a still picture makes a peak every few frames and scores well above 0.
* audio peaks: `librosa.load` (22050 Hz mono, librosa's default resampling), then
  `librosa.onset.onset_strength(y=y, sr=sr)`, `librosa.onset.onset_detect(onset_envelope=..., sr=sr)`,
  `librosa.frames_to_time(..., sr=sr)`; all librosa defaults (hop 512).  Audio given as (samples, sr) is mixed
  to mono and resampled to 22050 Hz with `librosa.resample` (what `librosa.load` does).  Audio taken from a
  video container is decoded with PyAV and resampled to 22050 Hz mono by its resampler.
* hits: audio peaks are taken in order; each is matched to the first video peak v not matched before with
  v - 1/fps < a < v + 1/fps (strict), so a video peak answers at most one audio peak (their current code; the
  first release let one video peak count for several audio peaks).
  IoU = hits / (audio peaks + video peaks - hits).  With no peaks at all we report 0.

`av_align` is that score; `av_align_unthresholded` is the same computation with every strict local maximum a
peak (no 0.1 px floor), the figure this module reported before, kept as a second column: the gap between the
two shows how much of a score came from motion too small to see.  Only the per-video score is computed here;
TempoTokens' script averages it over a folder of videos.

AV-Align rewards motion peaks at onsets but cannot see *how* things move: cutting to a new image on every
onset scores perfectly, and a still picture with codec noise scores above 0 without the threshold.  So these
come with it (sgvis.eval.motion has the definitions and thresholds):

* `motion`: flow mean and p95 (px per frame step), the share of steps that move (flow >= 0.1 px), `frozen`
  (fewer than 10% of the steps move), `cuts` (steps whose gray-level change is as large as a cut's);
* `silence`: the flow while the audio is silent (RMS below -45 dBFS for at least 0.5 s) and
  `pulses_in_silence` (the picture jolts there instead of staying calm);
* `smoothness`: mean / median / p95 / max flow, max/mean, the fraction of visible spikes (> 3x the median and
  >= 0.1 px), the jerk (mean |second difference of the flow| / mean flow), flow as a percentage of the frame
  diagonal, and the mean absolute gray-level change between frames, raw (0..255) and relative to the frame's
  gray-level standard deviation (`frame_change`: a cut between two unrelated images of the same kind reads
  about 1.1, smooth motion a fraction of that).  `strobe_flags` names the figures beyond the limits in
  STROBE_LIMITS, plus "cuts" when there is one; the ratio figures (max/mean, jerk) are not judged on a frozen
  picture, where they only measure noise.  An empty list reads as "smooth";
* `flags`: one list of what is wrong (frozen, cuts, strobe:..., pulses-in-silence); empty reads as fine.
"""
from __future__ import annotations

import json
import math
import os
from typing import Iterable

import numpy as np

from sgvis.errors import UserError

__all__ = ["av_align", "flow_trajectory", "video_peaks", "audio_peaks", "intersection_over_union",
           "smoothness", "score_peaks", "load_audio", "register_cli", "FARNEBACK", "STROBE_LIMITS",
           "SAMPLE_RATE", "PEAK_MIN_FLOW"]

FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
SAMPLE_RATE = 22050       # librosa.load's default
PEAK_MIN_FLOW = 0.1       # TempoTokens: flow maxima below this (px) are not video peaks

# Heuristic limits for `strobe_flags` (a smooth music video stays inside all of them).
STROBE_LIMITS = {
    "spike_fraction": 0.10,       # frames with flow > 3x the median and >= PEAK_MIN_FLOW
    "max_over_mean": 12.0,        # the biggest jolt versus the typical motion
    "jerk": 1.0,                  # mean |f[i+1] - 2 f[i] + f[i-1]| / mean f
    "flow_mean_pct_diag": 3.0,    # mean flow per frame, % of the frame diagonal
    "frame_change_p95": 0.6,      # 95th percentile of mean |gray change| / gray std of the frame: 1.1 is a cut
}


# -- video -----------------------------------------------------------------------------------------------
def _to_gray(frame, channel_order: str) -> np.ndarray:
    import cv2
    a = frame.detach().cpu().numpy() if hasattr(frame, "detach") else np.asarray(frame)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
        a = np.transpose(a, (1, 2, 0))                      # CHW -> HWC
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)   # floats in [0, 1]
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return np.ascontiguousarray(a)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise UserError(f"a video frame must be HxW, HxWx3 or HxWx4; got shape {a.shape}")
    a = np.ascontiguousarray(a[:, :, :3])
    return cv2.cvtColor(a, cv2.COLOR_BGR2GRAY if channel_order == "bgr" else cv2.COLOR_RGB2GRAY)


def _flow_magnitude(prev: np.ndarray, cur: np.ndarray) -> float:
    import cv2
    p = FARNEBACK
    flow = cv2.calcOpticalFlowFarneback(prev, cur, None, p["pyr_scale"], p["levels"], p["winsize"],
                                        p["iterations"], p["poly_n"], p["poly_sigma"], p["flags"])
    # Rounded to 1e-4 px: OpenCV's result varies in the last bits from run to run (threading), which would
    # otherwise decide near-ties between equal-looking frames (e.g. a still start) at random.
    return round(float(cv2.mean(cv2.magnitude(flow[..., 0], flow[..., 1]))[0]), 4)


def flow_trajectory(frames: Iterable, channel_order: str = "rgb") -> tuple[np.ndarray, dict]:
    """Per-frame mean flow magnitude (TempoTokens' trajectory: entry 0 repeats entry 1) and frame stats
    (count, size, mean |gray change| per frame pair).  Streams: holds two frames at a time."""
    traj, diffs, rel = [], [], []
    prev = None
    n = 0
    shape = None
    for frame in frames:
        g = _to_gray(frame, channel_order)
        if shape is None:
            shape = g.shape
        elif g.shape != shape:
            raise UserError(f"video frames change size ({shape} -> {g.shape}) at frame {n}")
        if prev is not None:
            traj.append(_flow_magnitude(prev, g))
            d = float(np.abs(g.astype(np.int16) - prev.astype(np.int16)).mean())
            diffs.append(d)
            rel.append(d / (float(prev.std()) + 1.0))
        prev = g
        n += 1
    if n < 3:
        raise UserError(f"AV-Align needs at least 3 video frames; got {n}")
    traj = [traj[0]] + traj
    return np.asarray(traj, np.float64), {"frames": n, "height": shape[0], "width": shape[1],
                                          "frame_diffs": np.asarray(diffs, np.float64),
                                          "frame_diffs_rel": np.asarray(rel, np.float64)}


def video_peaks(trajectory: np.ndarray, fps: float, min_flow: float = PEAK_MIN_FLOW) -> np.ndarray:
    """Times (s) of strict local maxima of the flow trajectory with flow >= `min_flow`, i / fps for
    1 <= i <= n-2 (min_flow=0: every strict local maximum)."""
    a = np.asarray(trajectory, np.float64)
    if len(a) < 3:
        return np.zeros(0)
    mid = a[1:-1]
    i = np.nonzero((mid > a[:-2]) & (mid > a[2:]) & (mid >= float(min_flow)))[0] + 1
    return i / float(fps)


# -- audio -----------------------------------------------------------------------------------------------
def audio_peaks(y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """librosa onsets (seconds), all defaults, as TempoTokens computes them."""
    import librosa
    env = librosa.onset.onset_strength(y=np.asarray(y, np.float32), sr=sr)
    frames = librosa.onset.onset_detect(onset_envelope=env, sr=sr)
    return np.asarray(librosa.frames_to_time(frames, sr=sr), np.float64)


def _prepare_audio(samples, sr: int) -> np.ndarray:
    import librosa
    y = np.asarray(samples, np.float32)
    if y.ndim == 2:                                         # [channels, n] or [n, channels]
        y = y.mean(axis=0) if y.shape[0] <= 8 and y.shape[0] < y.shape[1] else y.mean(axis=1)
    y = np.nan_to_num(y.reshape(-1))
    if int(sr) != SAMPLE_RATE:
        y = librosa.resample(y, orig_sr=int(sr), target_sr=SAMPLE_RATE)
    return y


def _decode_audio_pyav(path: str) -> np.ndarray | None:
    """Mono float32 at SAMPLE_RATE from the first audio stream, or None when there is none."""
    import av

    from sgvis.audio.decode import decode_blocks
    with av.open(path) as container:
        if not container.streams.audio:
            return None
    chunks = [block[0] for block in decode_blocks(path, SAMPLE_RATE, "mono")]
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def _load_audio_file(path: str) -> np.ndarray:
    import librosa
    if not os.path.isfile(path):
        raise UserError(f"audio file not found: {path}")
    try:
        y, _ = librosa.load(path)                              # exactly TempoTokens' call
        return y
    except Exception:
        pass
    try:
        y = _decode_audio_pyav(path)
    except Exception as e:
        raise UserError(f"cannot read audio from {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if y is None:
        raise UserError(f"{path} has no audio stream")
    return y


# -- scores ----------------------------------------------------------------------------------------------
def intersection_over_union(a_peaks, v_peaks, fps: float) -> tuple[float, int]:
    """(IoU, hits); a hit is an audio peak with a video peak strictly within one frame of it that no earlier
    audio peak has taken (audio peaks in order, the first free video peak in order)."""
    a_peaks = np.asarray(a_peaks, np.float64)
    v_peaks = np.asarray(v_peaks, np.float64)
    tol = 1.0 / float(fps)
    free = np.ones(len(v_peaks), bool)
    hits = 0
    for a in a_peaks:
        near = np.nonzero(free & (v_peaks - tol < a) & (a < v_peaks + tol))[0]
        if len(near):
            free[near[0]] = False
            hits += 1
    denom = len(a_peaks) + len(v_peaks) - hits
    return (hits / denom if denom > 0 else 0.0), hits


def smoothness(trajectory: np.ndarray, frame_diffs: np.ndarray | None = None,
               size: tuple[int, int] | None = None, frame_diffs_rel: np.ndarray | None = None) -> dict:
    """Figures of the frame-to-frame flow distribution (the real pairs: the repeated entry 0 is dropped).
    A spike is a step with flow above 3x the median that is visible (>= PEAK_MIN_FLOW); "cuts" joins
    `strobe_flags` when a step's gray change reads as a cut; on a frozen picture (sgvis.eval.motion) the
    ratio limits (max/mean, jerk) are not judged, as they only measure noise there."""
    from sgvis.eval.motion import motion_figures
    f = np.asarray(trajectory, np.float64)[1:]
    mean = float(f.mean()) if len(f) else 0.0
    median = float(np.median(f)) if len(f) else 0.0
    out = {
        "flow_mean": mean,
        "flow_median": median,
        "flow_p95": float(np.percentile(f, 95)) if len(f) else 0.0,
        "flow_max": float(f.max()) if len(f) else 0.0,
        "max_over_mean": float(f.max() / mean) if mean > 0 else 0.0,
        "p95_over_median": float(np.percentile(f, 95) / median) if median > 0 else 0.0,
        "spike_fraction": float(np.mean((f > 3 * median) & (f >= PEAK_MIN_FLOW))) if len(f) else 0.0,
        "jerk": float(np.abs(np.diff(f, 2)).mean() / mean) if len(f) >= 3 and mean > 0 else 0.0,
    }
    if size is not None:
        out["flow_mean_pct_diag"] = 100.0 * mean / math.hypot(*size)
    if frame_diffs is not None and len(frame_diffs):
        out["frame_diff_mean"] = float(np.mean(frame_diffs))
        out["frame_diff_p95"] = float(np.percentile(frame_diffs, 95))
    if frame_diffs_rel is not None and len(frame_diffs_rel):
        out["frame_change_p95"] = float(np.percentile(frame_diffs_rel, 95))
    motion = motion_figures(trajectory, frame_diffs_rel)
    ratios = ("max_over_mean", "jerk")
    out["strobe_flags"] = [k for k, lim in STROBE_LIMITS.items()
                           if out.get(k, 0.0) > lim and not (motion["frozen"] and k in ratios)]
    if motion.get("cuts"):
        out["strobe_flags"].append("cuts")
    return out


def _open_video(path: str):
    """(frame iterator of BGR uint8 arrays, fps, container) for a video file read with PyAV."""
    import av
    if not os.path.isfile(path):
        raise UserError(f"video file not found: {path}")
    try:
        container = av.open(path)
    except Exception as e:
        raise UserError(f"cannot open video {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if not container.streams.video:
        container.close()
        raise UserError(f"{path} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        container.close()
        raise UserError(f"{path}: the video stream has no frame rate")

    def frames():
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="bgr24")
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"cannot decode video {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        finally:
            container.close()

    return frames(), float(rate)


def load_audio(audio, video: str | None = None) -> np.ndarray:
    """Mono float32 at SAMPLE_RATE, as av_align scores it: `audio` is a path (read as librosa.load does), a
    (samples, sample_rate) pair, or None for the first audio stream of the video file `video`."""
    if audio is None:
        if not isinstance(video, str):
            raise UserError("no audio given: pass an audio file or (samples, sample_rate) with frames")
        try:
            y = _decode_audio_pyav(video)
        except Exception as e:
            raise UserError(f"cannot read the audio stream of {video}: {str(e).splitlines()[0] if str(e) else e}")
        if y is None:
            raise UserError(f"{video} has no audio stream; give the audio file as the second argument")
    elif isinstance(audio, (str, os.PathLike)):
        y = _load_audio_file(os.fspath(audio))
    else:
        try:
            samples, sr = audio
        except (TypeError, ValueError):
            raise UserError("audio must be a path or a (samples, sample_rate) pair") from None
        y = _prepare_audio(samples, sr)
    if len(y) == 0:
        raise UserError("the audio is empty")
    return y


def score_peaks(a_peaks, trajectory, fps: float) -> dict:
    """AV-Align with the 0.1 px peak floor (TempoTokens' current definition) and without it."""
    out = {}
    for suffix, floor in (("", PEAK_MIN_FLOW), ("_unthresholded", 0.0)):
        v = video_peaks(trajectory, fps, floor)
        iou, hits = intersection_over_union(a_peaks, v, fps)
        out[f"av_align{suffix}"] = float(iou)
        out[f"hits{suffix}"] = int(hits)
        out[f"video_peaks{suffix}"] = int(len(v))
        out[f"video_peak_times{suffix}"] = [round(float(t), 4) for t in v]
    return out


def av_align(video, audio=None, fps: float | None = None, channel_order: str = "rgb") -> dict:
    """AV-Align (thresholded and not), motion, silence and smoothness figures for a video and its audio.

    video: a path (read with PyAV; fps from the file unless given) or an iterable of frames (HxWx3 uint8 in
    `channel_order`, HxW gray, or floats in [0, 1]; `fps` required).  audio: a path, a (samples, sample_rate)
    pair, or None to use the video file's own audio stream.
    """
    from sgvis.eval.motion import motion_figures, silence_figures
    if isinstance(video, (str, os.PathLike)):
        video = os.fspath(video)
        frames, file_fps = _open_video(video)
        fps = float(fps or file_fps)
        channel_order = "bgr"
    else:
        if not fps or fps <= 0:
            raise UserError("fps is required (and > 0) when frames are given instead of a video file")
        frames = iter(video)
    y = load_audio(audio, video if isinstance(video, str) else None)

    traj, info = flow_trajectory(frames, channel_order)
    a = audio_peaks(y, SAMPLE_RATE)
    scores = score_peaks(a, traj, fps)
    smooth = smoothness(traj, info["frame_diffs"], (info["height"], info["width"]), info["frame_diffs_rel"])
    motion = motion_figures(traj, info["frame_diffs_rel"])
    silence = silence_figures(traj, y, SAMPLE_RATE, fps)
    flags = (["frozen"] if motion["frozen"] else []) + (["cuts"] if motion.get("cuts") else [])
    strobe = [k for k in smooth["strobe_flags"] if k != "cuts"]
    flags += [f"strobe:{','.join(strobe)}"] if strobe else []
    flags += ["pulses-in-silence"] if silence["pulses"] else []
    return {
        **{k: scores[k] for k in ("av_align", "av_align_unthresholded", "hits", "hits_unthresholded")},
        "audio_peaks": int(len(a)),
        "video_peaks": scores["video_peaks"],
        "video_peaks_unthresholded": scores["video_peaks_unthresholded"],
        "peak_min_flow": PEAK_MIN_FLOW,
        "fps": float(fps),
        "frames": int(info["frames"]),
        "video_seconds": info["frames"] / float(fps),
        "audio_seconds": len(y) / SAMPLE_RATE,
        "motion": motion,
        "silence": silence,
        "smoothness": smooth,
        "flags": flags,
        "audio_peak_times": [round(float(t), 4) for t in a],
        "video_peak_times": scores["video_peak_times"],
        "video_peak_times_unthresholded": scores["video_peak_times_unthresholded"],
        "flow": [round(float(x), 5) for x in traj],
    }


# -- command line ------------------------------------------------------------------------------------------
def format_report(r: dict) -> str:
    s, m, q = r["smoothness"], r["motion"], r["silence"]
    if q["flow_mean"] is None:
        quiet = f"no silence ({q['silence_seconds']:.1f} s measured)"
    else:
        quiet = (f"{q['silence_seconds']:.1f} s: flow mean {q['flow_mean']:.3g}, pulse (p95 - median) "
                 f"{q['pulse_px']:.3g} px" + ("  PULSES" if q["pulses"] else ", calm"))
    lines = [
        f"AV-Align      {r['av_align']:.3f}  (hits {r['hits']}, audio peaks {r['audio_peaks']}, video peaks "
        f"{r['video_peaks']} with flow >= {r['peak_min_flow']:g} px; {r['frames']} frames at {r['fps']:.3g} fps)",
        f"unthresholded {r['av_align_unthresholded']:.3f}  (hits {r['hits_unthresholded']}, video peaks "
        f"{r['video_peaks_unthresholded']}: every flow maximum)",
        f"motion        mean {m['flow_mean']:.3g} px/frame ({s.get('flow_mean_pct_diag', 0):.2f}% of the diagonal), "
        f"p95 {m['flow_p95']:.3g}, moving (>= 0.1 px) {100 * m['moving_share']:.0f}% of steps, cuts {m.get('cuts', 0)}"
        + ("  FROZEN" if m["frozen"] else ""),
        f"flow          median {s['flow_median']:.3g}, max {s['flow_max']:.3g}",
        f"smoothness    max/mean {s['max_over_mean']:.2f}, spikes (>3x median) {100 * s['spike_fraction']:.1f}%, "
        f"jerk {s['jerk']:.2f}, gray change p95 {s.get('frame_diff_p95', 0):.1f}/255 "
        f"({s.get('frame_change_p95', 0):.2f} of the contrast)",
        f"silence       {quiet}",
        "verdict       " + ("fine" if not r["flags"] else ", ".join(r["flags"])),
    ]
    return "\n".join(lines)


def cmd_av_align(args) -> int:
    r = av_align(args.video, args.audio, fps=args.fps)
    print(format_report(r))
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(directory):
            raise UserError(f"cannot write {args.json}: directory {directory} does not exist")
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


def register_cli(subparsers) -> None:
    """Add `eval av-align VIDEO [AUDIO] [--json PATH] [--fps FPS]` to an argparse subparsers object."""
    p = subparsers.add_parser("eval", help="evaluate a rendered video, or compare steerings on test audio")
    sub = p.add_subparsers(dest="eval_command", metavar="METRIC")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    q = sub.add_parser("av-align", help="AV-Align (TempoTokens) audio-video peak alignment + motion figures",
                       description="AV-Align as TempoTokens defines it now (video peaks need >= 0.1 px of flow) and "
                                   "without that floor, plus motion (frozen, cuts), smoothness and silence figures.")
    q.add_argument("video", help="video file (any format PyAV reads)")
    q.add_argument("audio", nargs="?", default=None,
                   help="audio file (default: the video's own audio stream)")
    q.add_argument("--json", metavar="PATH", help="also write every figure (and the flow trajectory) as JSON")
    q.add_argument("--fps", type=float, default=None, help="override the video's frame rate")
    q.set_defaults(func=cmd_av_align)
    from sgvis.eval.steering import add_report_parser, add_steering_parser
    add_steering_parser(sub)
    add_report_parser(sub)
