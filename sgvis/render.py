"""`sgvis render`: audio file -> audio-driven video with the sound muxed in.

Stages (each its own package, reused unchanged by live mode):
    sgvis.audio (decode) -> sgvis.features (causal analysis) -> sgvis.steer (a state per frame)
        -> sgvis.backends (frames) -> sgvis.outputs (sinks: the video, --png-dir, --out SPEC ...)
Analysis + steering run in one thread, the generator in the main thread, encoding in a third, with bounded
queues between them, so the generator never waits on the encoder.
"""
from __future__ import annotations

import json
import math
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field

from sgvis.errors import UserError, write_failure
from sgvis.steer import motion_style_of

# The stages (numpy, torch, PyAV, librosa) are imported when a render starts, not when the command line is
# parsed: `sgvis render --help` and argument errors answer at once.

RENDER_DEFAULTS = {
    "render": {
        "fps": 30.0,              # output frame rate
        "crf": 18,                # H.264 constant rate factor (lower = better quality, bigger file)
        "preset": "medium",       # x264 speed/size trade-off
        "batch": "auto",          # frames generated per generator call: a number, or auto (the fastest per frame of
                                  #   BATCH_CANDIDATES, measured once per machine and model; sgvis.backends.tuning)
        "threads": "auto",        # CPU threads of the generator: a number, or auto (measured with the batch)
        "precision": "auto",      # auto | fp32 | bf16 | fp16 (auto on a CPU: measured once, sgvis.backends.tuning)
        "fit": "crop",            # a --size of another aspect than the model's: crop | letterbox | stretch
        "beats": "offline",       # offline: whole-track beat tracking; causal: the live tracker
        "draft": None,            # a quick preview: the synthesis stops at the block of this resolution (e.g. 128) and
                                  #   the picture is scaled up to the model's (None: the full synthesis)
        "lookahead": None,        # seconds the analysis runs ahead of each frame offline (None: the steering's
                                  #   OFFLINE_LOOKAHEAD_S, which lands onsets on their frame)
    },
}
_DONE = object()
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
BEAT_MODES = ("offline", "causal")
MAX_FPS = 240.0
MAX_BATCH = 1024
BATCH_CANDIDATES = [4, 8, 16]
JUDGE_MIN_FRAMES = 64            # a render this long tells whether the cached settings trial ran on a busy machine
DEFAULT_BATCH = 8                 # render.batch auto where nothing is measured (a GPU, another backend)
MAX_LOOKAHEAD_S = 2.0
# A file holding this much less audio than its header says is rendered to its real end (with a warning); smaller
# differences are codec padding.
SHORTFALL_S = 0.1


def check_number(value, name: str, lo: float, hi: float, whole: bool = False):
    """`value` as a float (or int with `whole`) in [lo, hi]; anything else (text, nan, inf, out of range) is one
    UserError line naming the setting."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and lo <= value <= hi and (not whole or float(value).is_integer())
    if not ok:
        kind = "a whole number" if whole else "a number"
        raise UserError(f"{name} must be {kind} from {lo:g} to {hi:g}, got {value!r}")
    return int(value) if whole else float(value)


def check_render_settings(rcfg: dict, where: str = "render") -> dict:
    """Validate every render.* setting (from defaults, a preset, --config or --set) before anything is written;
    returns a copy with numbers as numbers.  Each problem is one UserError line naming the setting."""
    out = dict(rcfg)
    out["fps"] = check_number(rcfg.get("fps"), f"{where}.fps", 1, MAX_FPS)
    out["crf"] = check_number(rcfg.get("crf"), f"{where}.crf", 0, 51, whole=True)
    for key, top in (("batch", MAX_BATCH), ("threads", 4096)):
        if rcfg.get(key) != "auto":
            out[key] = check_number(rcfg.get(key), f"{where}.{key}", 1, top, whole=True)
    for key, allowed in (("precision", PRECISIONS), ("preset", X264_PRESETS), ("beats", BEAT_MODES)):
        if rcfg.get(key) not in allowed:
            raise UserError(f"{where}.{key} must be one of {', '.join(allowed)}; got {rcfg.get(key)!r}")
    if rcfg.get("lookahead") is not None:
        out["lookahead"] = check_number(rcfg["lookahead"], f"{where}.lookahead", 0, MAX_LOOKAHEAD_S)
    if rcfg.get("draft") is not None:
        out["draft"] = check_number(rcfg["draft"], f"{where}.draft", 4, 8192, whole=True)
    return out


def crf_arg(text: str) -> int:
    """argparse type of --crf: a whole number 0-51."""
    import argparse
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to 51, got {text!r}") from None
    if not 0 <= value <= 51:
        raise argparse.ArgumentTypeError(f"must be from 0 (lossless) to 51 (smallest), got {value}")
    return value


@dataclass
class RenderJob:
    audio: str
    output: str
    model: str | None = None
    fps: float | None = 30.0            # None: the backend's native_fps, else the config's render.fps
    size: tuple[int, int] | None = None
    fit: str | None = None              # crop | letterbox | stretch; None: the config's render.fit
    seed: int = 0
    start: float = 0.0
    end: float | None = None
    png_dir: str | None = None
    outputs: list[str] = field(default_factory=list)     # extra sinks, NAME:TARGET (sgvis.outputs.SINKS)
    stats: str | None = None
    overwrite: bool = False
    device: str = "auto"
    steer: str | None = None            # steering mode; None: the config's steer.mode
    steering_path: str | None = None
    backend: str = "stylegan"
    backend_options: dict = field(default_factory=dict)  # extra factory arguments (tempotokens: t2v, beats, ...)
    config: dict = field(default_factory=lambda: json.loads(json.dumps(RENDER_DEFAULTS)))


class _Stage(threading.Thread):
    """A worker thread that records its busy time and re-raises its error in the main thread."""

    def __init__(self, name, target):
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self.error: BaseException | None = None
        self.busy = 0.0

    def run(self):
        try:
            self._target_fn(self)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            self.error = e


def render(job: RenderJob, backend=None, steering=None) -> dict:
    """Render `job`.  `backend` and `steering`, when given, are used instead of building them from the job (an
    evaluation renders many tracks with one loaded model); a given steering is reset to the job's seed."""
    called = time.perf_counter()
    from sgvis.audio import decode as audio_in
    from sgvis.backends import BACKENDS
    from sgvis.features.analysis import MelConfig
    from sgvis.outputs import check_sink_spec
    from sgvis.outputs.files import check_output_path, even
    cfg = job.config
    rcfg = check_render_settings(cfg["render"])
    # fps None: the backend's own frame rate (a diffusion model's), else render.fps
    fps = None if job.fps is None else check_number(job.fps, "--fps", 1, MAX_FPS)
    if job.start is not None and not math.isfinite(job.start):
        raise UserError(f"--start must be a number of seconds, got {job.start!r}")
    if job.end is not None and math.isnan(job.end):
        raise UserError(f"--end must be a number of seconds, got {job.end!r}")
    inputs = (job.audio, job.model, job.steering_path,
              *(v for v in job.backend_options.values() if isinstance(v, str) and os.path.exists(v)))
    specs = [f"video:{job.output}"] + ([f"png:{job.png_dir}"] if job.png_dir else []) + list(job.outputs)
    for spec in specs:
        check_sink_spec(spec, job.overwrite, inputs)
    if job.stats:
        check_output_path(job.stats, job.overwrite, inputs=inputs)
    info = audio_in.probe(job.audio)
    start = max(0.0, job.start or 0.0)
    end = info.duration if job.end is None else min(job.end, info.duration)
    if start >= info.duration:
        raise UserError(f"--start {start:g}s is beyond the end of {job.audio} ({info.duration:.2f}s)")
    if end <= start:
        raise UserError(f"--end {job.end:g}s must be after --start {start:g}s")

    size = job.size
    if size is not None:
        size = (even(size[0]), even(size[1]))
    from sgvis.outputs.framing import check_fit
    fit = check_fit(job.fit) if job.fit is not None else check_fit(rcfg.get("fit"), "render.fit")
    if backend is None:
        backend = BACKENDS.create(job.backend, model=job.model, device=job.device, precision=rcfg["precision"],
                                  size=size, fit=fit, **job.backend_options)
    if fps is None:
        fps = check_number(getattr(backend, "native_fps", None) or rcfg["fps"], "--fps", 1, MAX_FPS)
    if rcfg["draft"] is not None:
        if not getattr(backend, "supports_draft", False):
            raise UserError(f"render.draft: the {backend.name} backend cannot draft (the fast StyleGAN2 path can)")
        backend.draft_resolution = int(rcfg["draft"])
    if getattr(backend, "consumes", "states") == "audio":     # frames straight from the audio (sgvis.render_audio)
        from sgvis.render_audio import render_from_audio
        return render_from_audio(job, backend, start, end, fps, info, inputs)
    if size is None and any(v % 2 for v in backend.output_size):
        backend.size = tuple(even(v) for v in backend.output_size)
    if steering is None:
        from sgvis.steer import make_steering
        steer_cfg = dict(cfg.get("steer", {}))
        if job.steer:
            steer_cfg["mode"] = job.steer
        try:
            steering = make_steering(backend, steer_cfg, seed=job.seed, learned_path=job.steering_path)
        except (ValueError, FileNotFoundError) as e:
            raise UserError(str(e).splitlines()[0]) from None
    else:
        steering.reset(job.seed)
    from sgvis.steer.motion import MotionDriver
    motion = MotionDriver(cfg.get("motion"), seed=job.seed)
    backend.bend_resolution = int(motion.cfg["bend"]["resolution"])
    from sgvis.backends.look import Look
    from sgvis.backends.stylegan import is_builtin_model
    backend.look = Look(cfg.get("look"), builtin_model=is_builtin_model(job.model))

    mel = steering.mel_config or MelConfig()      # the features the steering was made for
    # The range is decoded once: the scan below reads it as it is decoded, the frame analysis and the video's
    # sound read the copies the track keeps.
    from sgvis.audio.track import DecodedTrack
    from sgvis.outputs.files import sound_format
    track = DecodedTrack(job.audio, start, end, mel.sample_rate,
                         mux=sound_format(job.output, info.sample_rate, min(info.channels, 2)))
    import torch
    threads_before = torch.get_num_threads()
    try:
        rcfg = dict(rcfg, batch=_generator_settings(backend, rcfg))
        return _render_track(job, backend, steering, motion, track, mel, rcfg, info, inputs, specs, fps, start,
                             end, fit, called)
    finally:
        track.close()
        torch.set_num_threads(threads_before)


def _generator_settings(backend, rcfg: dict) -> int:
    """Set the generator's thread count and measured settings for this render; returns its batch size."""
    import torch
    if rcfg["threads"] != "auto":
        torch.set_num_threads(int(rcfg["threads"]))
    auto_batch = rcfg["batch"] == "auto"
    batch = DEFAULT_BATCH if auto_batch else int(rcfg["batch"])
    tune = getattr(backend, "tune", None)
    if tune is not None:
        from sgvis.backends.tuning import thread_candidates
        # OMP_NUM_THREADS set by the user is their choice: threads auto then keeps it
        auto_threads = rcfg["threads"] == "auto" and not os.environ.get("OMP_NUM_THREADS")
        record = tune(batch, threads=thread_candidates() if auto_threads else None,
                      batches=BATCH_CANDIDATES if auto_batch else None)
        if record and auto_batch:
            batch = int(record["settings"]["batch"])
        # (a backend tuned before, as in an evaluation's renders, returns its first record: threads set again)
        if auto_threads and any(t["axis"] == "threads" for t in (record or {}).get("trials", [])):
            torch.set_num_threads(int(record["settings"]["threads"]))
    return batch


def _render_track(job, backend, steering, motion, track, mel, rcfg, info, inputs, specs, fps, start, end, fit,
                  called) -> dict:
    import numpy as np
    import torch
    from tqdm import tqdm

    from sgvis.features.analysis import FeatureExtractor, frame_features
    from sgvis.outputs import SinkContext, SourceAudio, open_sinks, sink_target
    held, beat_times, onset_times = scan_audio(track.decode(), mel, offline_beats=rcfg["beats"] == "offline",
                                               offline_onsets=rcfg["beats"] == "offline")
    if held <= 0:
        raise UserError(f"{job.audio}: no audio could be decoded from {start:g}s on (its header says "
                        f"{info.duration:.2f}s; the file may be truncated or damaged)")
    if held < end - start - SHORTFALL_S:
        # The header claimed more than the file holds (a truncated file): render what it holds, so that the video
        # never runs on past its sound.
        print(f"sgvis: warning: {job.audio}: holds audio up to {start + held:.2f}s, but its header says "
              f"{info.duration:.2f}s (a truncated file?); rendering the {held:.2f}s it holds", file=sys.stderr)
        end = start + held
    duration = end - start
    n_frames = max(1, int(round(duration * fps)))

    width, height = backend.output_size
    context = SinkContext(fps=fps, size=(width, height), overwrite=job.overwrite, settings=rcfg,
                          audio=SourceAudio(job.audio, start, end, info.sample_rate, info.channels, track=track),
                          inputs=tuple(p for p in inputs if p))
    sinks = open_sinks(specs, context)

    batch = max(1, int(rcfg["batch"]))
    ws_queue: queue.Queue = queue.Queue(maxsize=4)
    frame_queue: queue.Queue = queue.Queue(maxsize=4)
    stop = threading.Event()
    from sgvis.steer.reactive import OFFLINE_LOOKAHEAD_S
    lookahead = OFFLINE_LOOKAHEAD_S if rcfg["lookahead"] is None else float(rcfg["lookahead"])

    def analyse(stage: _Stage):
        extractor = FeatureExtractor(mel, beat_times=beat_times, onset_times=onset_times)
        blocks = track.analysis_blocks()
        pending: list = []
        moves: list[np.ndarray] = []
        steps = getattr(steering, "steps", None) or (lambda fs: [steering.step(f) for f in fs])
        t0 = time.perf_counter()
        for k, features in enumerate(frame_features(extractor, blocks, n_frames, fps, lookahead)):
            if stop.is_set():
                return
            pending.append(features)
            move = motion.step(features, **motion_style_of(steering))
            moves.append(np.concatenate([move["bend"], move["camera"]]))
            if len(pending) == batch or k == n_frames - 1:
                # the generator's batch of frames steered at once (a steering may batch what does not depend on
                # the frame before: the learned encoder)
                ws = torch.stack(steps(pending))
                stage.busy += time.perf_counter() - t0   # analysis of these frames + steering
                ws_queue.put((ws, torch.from_numpy(np.stack(moves)).float()))
                pending, moves = [], []
                t0 = time.perf_counter()
        ws_queue.put(_DONE)

    def encode(stage: _Stage):
        while True:
            frames = frame_queue.get()
            if frames is _DONE:
                break
            t0 = time.perf_counter()
            for frame in frames.numpy():
                for sink in sinks:
                    try:
                        sink.write(frame)
                    except OSError as e:         # a full disk, a removed folder: one line; abort() cleans up
                        raise write_failure(sink_target(sink), e) from None
            stage.busy += time.perf_counter() - t0

    analysis, encoder = _Stage("analysis", analyse), _Stage("encoder", encode)
    started = time.perf_counter()
    first_frame = None                 # seconds from the call to the first generated frames (start-up cost)
    generated = 0
    gen_busy = 0.0
    progress = tqdm(total=n_frames, unit="frame", desc="render", dynamic_ncols=True, disable=None)
    analysis.start()
    encoder.start()
    try:
        while True:
            item = _get(ws_queue, [analysis])
            if item is _DONE:
                break
            t0 = time.perf_counter()
            frames = backend.frames(item[0], motion=item[1])
            gen_busy += time.perf_counter() - t0
            if first_frame is None:
                first_frame = time.perf_counter() - called
            _put(frame_queue, frames, [encoder])
            generated += len(frames)
            progress.update(len(frames))
        _put(frame_queue, _DONE, [encoder])
        encoder.join()
        if encoder.error:
            raise encoder.error
        for sink in sinks:
            try:
                sink.close()
            except OSError as e:
                raise write_failure(sink_target(sink), e) from None
    except BaseException:
        stop.set()
        _drain(ws_queue)
        _drain(frame_queue)
        _put(frame_queue, _DONE, [], block=False)
        for stage in (analysis, encoder):
            stage.join(timeout=5)
        for sink in sinks:
            sink.abort()
        raise
    finally:
        progress.close()
    remeasure = _judge_generator_settings(backend, generated, gen_busy)
    stats = run_stats(job, backend, sinks, generated, fps, start, end, info.sample_rate,
                      time.perf_counter() - started)
    stats.update({
        "time_to_first_frame_s": first_frame, "setup_seconds": started - called,
        "stage_frames_per_second": {
            "analysis": generated / analysis.busy if analysis.busy else None,
            "generation": generated / gen_busy if gen_busy else None,
            "encoding": generated / encoder.busy if encoder.busy else None,
        },
        "model": _model_source(backend, "path"), "model_format": _model_source(backend, "description"),
        "fit": fit, "steering": steering.name, "generator_tuning": getattr(backend, "tuning", None),
        "generator_settings_remeasured_next_run": remeasure,
    })
    if job.stats:
        from stylegan.atomic import write_json_atomically
        write_json_atomically(job.stats, stats)
    return stats


def _judge_generator_settings(backend, generated: int, gen_busy: float) -> bool:
    """After a render: where the cached settings trial was far slower than this render's generation (the machine was
    busy when it ran), drop it so that the next run measures again; says so on stderr.  True where dropped."""
    from sgvis.backends.tuning import forget, measured_under_load
    record = getattr(backend, "tuning", None)
    if generated < JUDGE_MIN_FRAMES or gen_busy <= 0:
        return False
    observed = gen_busy / generated
    if not measured_under_load(record, observed) or not forget(record):
        return False
    then = 1000 * record["chosen_seconds"]
    print(f"sgvis: the generator's settings were measured while the machine was busy ({then:.0f} ms per frame "
          f"then, {1000 * observed:.0f} ms in this render); the next run measures them again", file=sys.stderr)
    return True


def run_stats(job: RenderJob, backend, sinks, generated: int, fps: float, start: float, end: float,
              sample_rate: int, wall: float) -> dict:
    """What every render reports (--stats), whatever its backend: counts, speed, where it ran, what it wrote."""
    duration = end - start
    return {
        "frames": generated, "fps": fps, "seconds_of_audio": duration, "wall_seconds": wall,
        "frames_per_second": generated / wall if wall > 0 else None,
        "realtime_factor": duration / wall if wall > 0 else None,
        "device": str(backend.device), "generator": backend.description, "backend": backend.name,
        "resolution": list(backend.output_size), "steering": None, "seed": job.seed,
        "audio": {"path": job.audio, "start": start, "end": end, "sample_rate": sample_rate},
        "output": sinks[0].path, "png_dir": sinks[1].directory if job.png_dir else None,
        "outputs": list(job.outputs),
    }


def _model_source(backend, key: str):
    model = backend.latent_model
    return getattr(model, "source", {}).get(key) if model is not None else None


def _get(q: queue.Queue, producers):
    while True:
        try:
            return q.get(timeout=0.2)
        except queue.Empty:
            for p in producers:
                if p.error:
                    raise p.error
                if not p.is_alive() and q.empty():
                    raise RuntimeError(f"{p.name} stage stopped unexpectedly")


def _put(q: queue.Queue, item, consumers, block=True):
    while True:
        try:
            q.put(item, timeout=0.2 if block else 0.0)
            return
        except queue.Full:
            if not block:
                return
            for c in consumers:
                if c.error:
                    raise c.error
                if not c.is_alive():
                    raise RuntimeError(f"{c.name} stage stopped unexpectedly")


def _drain(q: queue.Queue):
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass


def scan_audio(blocks, mel, offline_beats: bool = True, offline_onsets: bool = True):
    """The whole-range analysis pass over mono `blocks` [1, n] at `mel.sample_rate` (a DecodedTrack's decode):
    the seconds of audio the file really holds there (a truncated file's header claims more), with
    `offline_beats` whole-track beat times and with `offline_onsets` whole-track onset times (both in seconds
    from the range's start, or None).  Memory stays bounded whatever the length: the beat tracker works through
    overlapping windows; the onset envelope is 43 floats per second."""
    import numpy as np

    from sgvis.features.analysis import FeatureExtractor, OfflineBeatTracker, offline_onset_times
    extractor = FeatureExtractor(mel, record_onsets=True) if (offline_beats or offline_onsets) else None
    tracker = OfflineBeatTracker(mel) if offline_beats else None
    envelope: list[np.ndarray] = []
    samples = 0
    for block in blocks:
        samples += block.shape[1]
        if extractor is not None:
            extractor.push(block[0])
            values = np.asarray(extractor.onsets, np.float32)
            extractor.onsets.clear()
            if tracker is not None:
                tracker.push(values)
            if offline_onsets:
                envelope.append(values)
    beats = tracker.finish() if tracker is not None else None
    onsets = offline_onset_times(np.concatenate(envelope), mel) if offline_onsets and envelope else None
    return samples / mel.sample_rate, beats, onsets


def cmd_render(args) -> int:
    from sgvis.config import load_config
    from sgvis.outputs import parse_size
    from sgvis.steer import choose_steering
    config = load_config(args.preset, args.config, args.set or [], defaults=RENDER_DEFAULTS)
    mode, steering_path = choose_steering(args.steer, args.steering, config, args.model)
    output = args.output or os.path.splitext(os.path.basename(args.audio))[0] + ".mp4"
    from sgvis.backends import diffusion_options
    options = diffusion_options(args, args.backend)
    job = RenderJob(audio=args.audio, output=output, model=args.model, fps=args.fps,
                    size=parse_size(args.size), fit=args.fit, seed=args.seed, start=args.start, end=args.end,
                    png_dir=args.png_dir, outputs=args.out or [], stats=args.stats, overwrite=args.overwrite,
                    device=args.device, steer=mode, steering_path=steering_path, backend=args.backend,
                    backend_options=options, config=config)
    if args.crf is not None:
        job.config["render"]["crf"] = args.crf
    stats = render(job)
    print(f"wrote {stats['output']}: {stats['frames']} frames, {stats['seconds_of_audio']:.1f}s of audio in "
          f"{stats['wall_seconds']:.1f}s ({stats['frames_per_second']:.1f} frames/s, {stats['generator']})")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "render", help="render an audio file to an audio-reactive StyleGAN video (mp4 with the sound)",
        description="Render AUDIO (wav, flac, ogg, mp3, m4a, or a video's sound) to an H.264 mp4 whose imagery "
                    "follows the music, with the audio muxed in as AAC.")
    p.add_argument("audio", help="input audio or video file")
    p.add_argument("-o", "--output", help="output .mp4 (default: AUDIO's name with .mp4, in the current directory)")
    p.add_argument("--model", help="StyleGAN checkpoint (NVIDIA .pkl, TF .pkl, rosinality .pt, sgvis .safetensors); "
                                   "'default' (or leaving it out): the model shipped with sgvis")
    p.add_argument("--fps", type=float, help="frames per second (default: the config's render.fps, 30; "
                                             "tempotokens: 12)")
    p.add_argument("--size", help="output size WIDTHxHEIGHT or N (default: the model's resolution); "
                                  "resampled with antialiased bicubic; rounded up to even numbers")
    p.add_argument("--fit", metavar="MODE",
                   help="how the model's square picture fills a --size of another aspect: crop (default: scale "
                        "to cover, cut the overflow evenly), letterbox (scale to fit, black bars) or stretch "
                        "(distorts); setting render.fit")
    p.add_argument("--seed", type=int, default=0, help="seed for the starting latent and the drift (default 0)")
    p.add_argument("--start", type=float, default=0.0, help="start time in seconds")
    p.add_argument("--end", type=float, help="end time in seconds (default: end of the audio)")
    p.add_argument("--crf", type=crf_arg, help="H.264 quality, 0-51, lower is better (default 18)")
    p.add_argument("--png-dir", help="also write every frame as PNG into this directory")
    p.add_argument("--out", action="append", metavar="NAME:TARGET",
                   help="add an output, e.g. png:frames/ or video:preview.webm (repeatable; outputs: video, png)")
    p.add_argument("--stats", help="write timing and run details as JSON to this file")
    p.add_argument("--steer", metavar="MODE",
                   help="steering mode: reactive (no training, any model), learned (a trained steering checkpoint), "
                        "auto (learned when --steering is given, else reactive); default: the config's steer.mode")
    p.add_argument("--backend", default="stylegan", help="the generator: stylegan (default) or tempotokens "
                                                         "(audio-conditioned text-to-video diffusion)")
    from sgvis.backends import add_diffusion_arguments
    add_diffusion_arguments(p)
    p.add_argument("--steering", help="learned-steering checkpoint (.safetensors, from sgvis train-encoder) for --steer learned; default with the built-in model: its built-in checkpoint")
    p.add_argument("--preset", help="settings preset from configs/ (e.g. calm, energetic)")
    p.add_argument("--config", help="YAML file with settings (same sections as configs/default.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one setting, e.g. --set steer.intensity=1.5 (repeatable)")
    p.add_argument("--compute", "--device", dest="device", default="auto", metavar="DEVICE",
                   help="where frames are generated: auto (default), cpu or cuda")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=cmd_render)
