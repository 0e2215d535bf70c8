"""`sgvis demo`: synthesize a short piece of music (no download, no licence question) and render it with the
default model, so a fresh install shows what sgvis does.  The same track is the AV-Align benchmark's music."""
from __future__ import annotations

import os

import numpy as np

SR = 22050
BPM = 120.0
# (name, bars, parts): parts drawn from kick, snare, hat, bass, chords
SECTIONS = [
    ("intro", 2, {"hat", "chords"}),
    ("verse", 4, {"kick", "snare", "hat", "bass", "chords"}),
    ("breakdown", 3, {"chords", "pad_bass"}),
    ("silence", 1, set()),
    ("drop", 4, {"kick", "snare", "hat", "bass", "chords"}),
    ("outro", 1, {"chords"}),
]
CHORDS = [(57, 60, 64), (53, 57, 60), (48, 52, 55), (55, 59, 62)]      # Am F C G (MIDI)
BASS = [45, 41, 36, 43]


def _hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _add(y: np.ndarray, start_s: float, x: np.ndarray) -> None:
    s = int(round(start_s * SR))
    if s >= len(y):
        return
    n = min(len(x), len(y) - s)
    y[s:s + n] += x[:n]


def synth_track(seed: int = 0) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Mono float32 at SR and the section boundaries (name, start, end) in seconds."""
    rng = np.random.default_rng(seed)
    beat = 60.0 / BPM
    bar = 4 * beat
    total = sum(b for _, b, _ in SECTIONS) * bar
    y = np.zeros(int(total * SR) + SR, np.float64)

    def t_(dur):
        return np.arange(int(dur * SR)) / SR

    t = t_(0.5)
    kick = np.sin(2 * np.pi * np.cumsum(50 + 110 * np.exp(-t / 0.03)) / SR) * np.exp(-t / 0.18)
    kick += 0.3 * rng.standard_normal(len(t)) * np.exp(-t / 0.002)
    t = t_(0.3)
    noise = rng.standard_normal(len(t))
    snare = (0.45 * np.diff(noise, prepend=0) * np.exp(-t / 0.07)
             + 0.35 * np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.05))
    t = t_(0.12)
    hat = np.diff(rng.standard_normal(len(t) + 2), 2) * np.exp(-t / 0.018) * 0.12

    sections = []
    pos = 0.0
    for name, bars, parts in SECTIONS:
        sections.append((name, pos, pos + bars * bar))
        for b in range(bars):
            t0 = pos + b * bar
            chord_i = b % 4
            if "chords" in parts:
                t = t_(bar + 0.4)
                env = (np.minimum(t / 0.03, 1) * np.exp(-np.maximum(t - bar, 0) / 0.1)
                       * (0.9 + 0.1 * np.cos(2 * np.pi * 0.5 * t)))
                x = sum(sum(np.sin(2 * np.pi * _hz(m) * h * t) / h ** 1.5 for h in (1, 2, 3)) for m in CHORDS[chord_i])
                _add(y, t0, 0.06 * env * x)
            if "pad_bass" in parts:
                t = t_(bar)
                env = np.minimum(t / 0.3, 1) * np.minimum((bar - t) / 0.3, 1)
                _add(y, t0, 0.15 * env * np.sin(2 * np.pi * _hz(BASS[chord_i]) * t))
            for k in range(4):
                tb = t0 + k * beat
                if "kick" in parts:
                    _add(y, tb, 0.9 * kick)
                if "snare" in parts and k in (1, 3):
                    _add(y, tb, 0.7 * snare)
                if "hat" in parts:
                    _add(y, tb, 0.5 * hat)
                    _add(y, tb + beat / 2, 0.9 * hat)
                if "bass" in parts:
                    for e in range(2):
                        t = t_(beat / 2)
                        f = _hz(BASS[chord_i] + (12 if (k == 3 and e == 1) else 0))
                        env = np.minimum(t / 0.005, 1) * np.exp(-t / 0.12)
                        tone = np.sin(2 * np.pi * f * t) + 0.3 * np.sin(4 * np.pi * f * t)
                        _add(y, tb + e * beat / 2, 0.3 * env * tone)
        pos += bars * bar
    y = y[: int(total * SR)]
    y = 0.9 * y / np.abs(y).max()
    return y.astype(np.float32), sections



def write_demo_track(path: str, seed: int = 0) -> float:
    """Write the demo track as a 16-bit wav; returns its duration in seconds."""
    import av
    from fractions import Fraction
    y, _ = synth_track(seed)
    with av.open(path, "w", format="wav") as c:
        stream = c.add_stream("pcm_s16le", rate=SR, layout="mono")
        for i in range(0, len(y), 4096):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(y[None, i:i + 4096]), format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = SR, i, Fraction(1, SR)
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    return len(y) / SR


def cmd_demo(args) -> int:
    from sgvis.render import RENDER_DEFAULTS, RenderJob, render
    from sgvis.sinks import check_output_path
    from sgvis.config import load_config
    check_output_path(args.output, args.overwrite)
    track = os.path.splitext(args.output)[0] + ".wav"
    check_output_path(track, args.overwrite)
    seconds = write_demo_track(track, args.seed)
    print(f"wrote {track}: {seconds:.0f} s of synthesized music ({BPM:.0f} BPM)")
    job = RenderJob(audio=track, output=args.output, model=args.model, fps=30.0, seed=args.seed,
                    overwrite=args.overwrite, config=load_config(None, None, [], defaults=RENDER_DEFAULTS))
    stats = render(job)
    print(f"wrote {args.output}: {stats['frames']} frames in {stats['wall_seconds']:.1f}s "
          f"({stats['frames_per_second']:.1f} frames/s, {stats['generator']})")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("demo", help="synthesize a demo track and render it with the default model",
                              description="Writes OUTPUT (mp4) and the track next to it (same name, .wav).")
    p.add_argument("output", nargs="?", default="sgvis-demo.mp4", help="output video (default sgvis-demo.mp4)")
    p.add_argument("--model", help="StyleGAN checkpoint (default: the model shipped with sgvis)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_demo)
