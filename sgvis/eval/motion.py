"""Motion figures that AV-Align cannot give: does the picture move at all, does it jump, and does it keep calm
while the music is silent.  All work on the per-frame flow trajectory of sgvis.eval.av_align (mean Farneback
flow in px; entry i is the step from frame i-1 to frame i, entry 0 repeats entry 1).

    motion_figures(trajectory, frame_change)   -> {"flow_mean", "flow_p95", "moving_share", "frozen", "cuts", ...}
    silence_figures(trajectory, y, sr, fps)    -> {"silence_seconds", "flow_mean", "pulse_px", "pulses", ...}

Thresholds (module constants; docs/evaluation.md explains the choices):

* STILL_FLOW = 0.1 px: a step with less mean flow is near-still.  It is TempoTokens' peak floor, below which
  optical flow measures noise (x264 at crf 18 gives a still picture 0.002-0.05 px of flow).
* frozen: fewer than FROZEN_MOVING_SHARE = 10% of the steps reach STILL_FLOW.  Music videos move most of the
  time; a picture that moves in under a tenth of its steps reads as a still image to a viewer.
* cut: a single-step jump: a step whose mean |gray change| is at least CUT_CHANGE = 0.7 of the frame's
  gray-level standard deviation and at least CUT_CONTRAST = 2 times the change of either neighbouring step.
  A cut between two unrelated images of the same kind gives about 1.1, smooth motion a fraction (reactive
  steering's p95 is 0.06-0.12); very fast smooth motion can reach 1 too, but then its neighbouring steps
  change almost as much, where a cut stands alone.  Any cut is flagged: sgvis should morph, never cut.
  (Jumps that come too often are the strobe limits of sgvis.eval.av_align.)
* silence: the audio's RMS over SILENCE_WINDOW = 0.1 s around a frame is below SILENCE_DBFS = -45 dBFS (full
  scale 1.0) for at least SILENCE_MIN_SECONDS = 0.5 s; the first SILENCE_GRACE_SECONDS = 0.25 s of each such
  passage is left out (a motion may ease out after the last sound).
* pulses in silence: somewhere in a silent passage the flow rises at least PULSE_PX = 0.25 px above the
  lowest flow of that passage so far (`pulse_px` is the largest such rise).  A steady drift (any speed) is
  flat and a motion easing out after the last sound only falls, so both pass; a picture that jolts while
  nothing plays fails.
"""
from __future__ import annotations

import numpy as np

__all__ = ["STILL_FLOW", "FROZEN_MOVING_SHARE", "CUT_CHANGE", "CUT_CONTRAST", "SILENCE_DBFS", "SILENCE_WINDOW",
           "SILENCE_MIN_SECONDS", "SILENCE_GRACE_SECONDS", "PULSE_PX", "motion_figures", "frame_rms_dbfs",
           "silent_steps", "silence_figures"]

STILL_FLOW = 0.1
FROZEN_MOVING_SHARE = 0.10
CUT_CHANGE = 0.7
CUT_CONTRAST = 2.0
SILENCE_DBFS = -45.0
SILENCE_WINDOW = 0.1
SILENCE_MIN_SECONDS = 0.5
SILENCE_GRACE_SECONDS = 0.25
PULSE_PX = 0.25


def _steps(trajectory) -> np.ndarray:
    """The real frame steps of a trajectory (entry 0, a repeat, dropped)."""
    return np.asarray(trajectory, np.float64)[1:]


def motion_figures(trajectory, frame_change=None) -> dict:
    """How much the picture moves: flow mean / p95 (px per step), share of steps with flow >= STILL_FLOW,
    `frozen`, and `cuts` (single-step jumps of the relative gray change, see the module's notes; needs
    `frame_change`, one value per step as av_align's flow_trajectory gives)."""
    f = _steps(trajectory)
    moving = float(np.mean(f >= STILL_FLOW)) if len(f) else 0.0
    out = {
        "flow_mean": float(f.mean()) if len(f) else 0.0,
        "flow_p95": float(np.percentile(f, 95)) if len(f) else 0.0,
        "moving_share": moving,
        "frozen": bool(moving < FROZEN_MOVING_SHARE),
    }
    if frame_change is not None:
        c = np.asarray(frame_change, np.float64)
        padded = np.concatenate([[0.0], c, [0.0]])
        neighbours = np.maximum(padded[:-2], padded[2:])
        cuts = np.nonzero((c >= CUT_CHANGE) & (c >= CUT_CONTRAST * neighbours))[0] + 1   # frame the cut lands on
        out["cuts"] = int(len(cuts))
        out["cut_frames"] = [int(i) for i in cuts[:100]]
    return out


def frame_rms_dbfs(y, sr: int, n_frames: int, fps: float, window: float = SILENCE_WINDOW) -> np.ndarray:
    """Audio RMS in dBFS over `window` seconds centred on each frame's time i / fps (silence past the end)."""
    y = np.asarray(y, np.float64).reshape(-1)
    half = max(1, int(round(window * sr / 2)))
    c = np.concatenate([[0.0], np.cumsum(y * y)])
    centres = np.rint(np.arange(n_frames) / float(fps) * sr).astype(np.int64)
    lo = np.clip(centres - half, 0, len(y))
    hi = np.clip(centres + half, 0, len(y))
    energy = (c[hi] - c[lo]) / float(2 * half)
    return 10.0 * np.log10(np.maximum(energy, 1e-20))


def silent_steps(rms_dbfs, fps: float) -> np.ndarray:
    """Boolean per frame: inside a silent passage (RMS < SILENCE_DBFS for >= SILENCE_MIN_SECONDS), past its
    first SILENCE_GRACE_SECONDS."""
    quiet = np.asarray(rms_dbfs) < SILENCE_DBFS
    out = np.zeros(len(quiet), bool)
    min_len = int(np.ceil(SILENCE_MIN_SECONDS * fps))
    grace = int(round(SILENCE_GRACE_SECONDS * fps))
    i = 0
    while i < len(quiet):
        if not quiet[i]:
            i += 1
            continue
        j = i
        while j < len(quiet) and quiet[j]:
            j += 1
        if j - i >= min_len:
            out[i + grace:j] = True
        i = j
    return out


def silence_figures(trajectory, y, sr: int, fps: float) -> dict:
    """Flow while the audio is silent: seconds of silence measured, mean / p95 flow there and in the rest,
    `pulse_px` (the largest rise of the flow above its running minimum within a silent passage) and `pulses`
    (pulse_px >= PULSE_PX).  Without silence the figures are None and `pulses` is False."""
    traj = np.asarray(trajectory, np.float64)
    silent = silent_steps(frame_rms_dbfs(y, sr, len(traj), fps), fps)
    silent[0] = False                                      # entry 0 is a repeat, not a step
    f_sil, f_sound = traj[silent], traj[1:][~silent[1:]]
    out = {"silence_seconds": float(silent.sum() / fps), "flow_mean": None, "flow_p95": None,
           "sound_flow_mean": float(f_sound.mean()) if len(f_sound) else None, "pulse_px": None,
           "pulses": False}
    if len(f_sil) >= 2:
        rise = 0.0
        low = None
        for i in range(len(traj)):
            if not silent[i]:
                low = None                                 # a new passage starts its own minimum
                continue
            low = traj[i] if low is None else min(low, traj[i])
            rise = max(rise, traj[i] - low)
        out.update(flow_mean=float(f_sil.mean()), flow_p95=float(np.percentile(f_sil, 95)), pulse_px=float(rise),
                   pulses=bool(rise >= PULSE_PX))
    return out
