"""`sgvis demo`: synthesize a short piece of music (no download, no licence question) and render it with the
default model, so a fresh install shows what sgvis does.  The same track is the AV-Align benchmark's music."""
from __future__ import annotations

import os

import numpy as np

from sgvis.audio.synth import DEMO_SECTIONS, Song, render_song, write_wav

SR = 22050
DEMO_SONG = Song()              # 120 BPM, Am F C G: intro, verse, breakdown, a bar of silence, drop, outro
BPM = DEMO_SONG.bpm
SECTIONS = [(s.name, s.bars, set(s.parts)) for s in DEMO_SECTIONS]
CHORDS = list(DEMO_SONG.chords)
BASS = list(DEMO_SONG.bass)


def synth_track(seed: int = 0) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Mono float32 at SR and the section boundaries (name, start, end) in seconds."""
    return render_song(DEMO_SONG, np.random.default_rng(seed), SR)


def write_demo_track(path: str, seed: int = 0) -> float:
    """Write the demo track as a 16-bit wav; returns its duration in seconds."""
    y, _ = synth_track(seed)
    write_wav(path, y, SR)
    return len(y) / SR


def cmd_demo(args) -> int:
    from sgvis.config import load_config
    from sgvis.outputs.files import check_output_path, video_format
    from sgvis.render import RENDER_DEFAULTS, RenderJob, check_render_settings, render
    from sgvis.steer import choose_steering
    config = load_config(None, None, [], defaults=RENDER_DEFAULTS)
    config["render"] = check_render_settings(config["render"])
    mode, steering_path = choose_steering(args.steer, args.steering, config, args.model)
    output = args.output or ("sgvis-demo.mp4" if mode == "reactive" else f"sgvis-demo-{mode}.mp4")
    video_format(output)
    check_output_path(output, args.overwrite)
    track = os.path.splitext(output)[0] + ".wav"
    check_output_path(track, args.overwrite)
    before = _identity(track)
    try:
        seconds = write_demo_track(track, args.seed)
        print(f"wrote {track}: {seconds:.0f} s of synthesized music ({BPM:.0f} BPM)")
        job = RenderJob(audio=track, output=output, model=args.model, fps=30.0, seed=args.seed,
                        overwrite=args.overwrite, steer=mode, steering_path=steering_path, config=config)
        stats = render(job)
    except BaseException:
        # The track is this run's own output: no half-finished demo stays behind.  Only a file this run wrote
        # goes (a new one, not one that was there before the interruption came).
        now = _identity(track)
        if now is not None and now != before:
            os.unlink(track)
        raise
    print(f"wrote {stats['output']}: {stats['frames']} frames in {stats['wall_seconds']:.1f}s "
          f"({stats['frames_per_second']:.1f} frames/s, {stats['generator']})")
    return 0


def _identity(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns)


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("demo", help="synthesize a demo track and render it with the default model",
                              description="Writes OUTPUT (a video) and the track next to it (same name, .wav).")
    p.add_argument("output", nargs="?", help="output video (default sgvis-demo.mp4, or sgvis-demo-learned.mp4 "
                                             "with --steer learned)")
    p.add_argument("--model", help="StyleGAN checkpoint (default: the model shipped with sgvis)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steer", metavar="MODE",
                   help="reactive (default) or learned (the built-in steering checkpoint with the built-in model)")
    p.add_argument("--steering", help="learned-steering checkpoint (implies --steer learned)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_demo)
