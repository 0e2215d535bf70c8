"""`sgvis render` with an audio backend (`backend.consumes == "audio"`, e.g. tempotokens): the backend makes frames
straight from the track's samples, so there is no feature analysis, steering or motion stage. The part of the
track being rendered is decoded once (sgvis.audio.track: a mono copy at `backend.sample_rate` and a copy for the
video's sound), the mono copy handed to `backend.frames_from_audio`, and every frame it yields goes to the sinks
(the video with the track's audio muxed in, --png-dir, --out).
"""
from __future__ import annotations

import time


def render_from_audio(job, backend, start: float, end: float, fps: float, info, inputs) -> dict:
    """Called by sgvis.render.render once the backend exists; returns the same kind of stats."""
    import numpy as np

    from sgvis.audio.track import DecodedTrack
    from sgvis.outputs.files import sound_format

    with DecodedTrack(job.audio, start, end, backend.sample_rate,
                      mux=sound_format(job.output, info.sample_rate, min(info.channels, 2))) as track:
        audio = np.concatenate([b[0] for b in track.decode()] or [np.zeros(0, np.float32)])
        return _render_decoded(job, backend, track, audio, start, end, fps, info, inputs)


def _render_decoded(job, backend, track, audio, start, end, fps, info, inputs) -> dict:
    import torch
    from tqdm import tqdm

    from sgvis.outputs import SinkContext, SourceAudio, open_sinks

    duration = end - start
    n_frames = max(1, int(round(duration * fps)))
    width, height = backend.output_size
    context = SinkContext(fps=fps, size=(width, height), overwrite=job.overwrite, settings=job.config["render"],
                          audio=SourceAudio(job.audio, start, end, info.sample_rate, info.channels, track=track),
                          inputs=tuple(p for p in inputs if p))
    specs = [f"video:{job.output}"] + ([f"png:{job.png_dir}"] if job.png_dir else []) + list(job.outputs)
    sinks = open_sinks(specs, context)

    started = time.perf_counter()
    generated = 0
    progress = tqdm(total=n_frames, unit="frame", desc="render", dynamic_ncols=True, disable=None)
    try:
        for frames in backend.frames_from_audio(torch.from_numpy(audio), fps=fps, n_frames=n_frames,
                                                seed=job.seed):
            for frame in frames.numpy():
                for sink in sinks:
                    sink.write(frame)
            generated += len(frames)
            progress.update(len(frames))
        if generated != n_frames:
            raise RuntimeError(f"backend {backend.name} made {generated} frames, not {n_frames}")
        for sink in sinks:
            sink.close()
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    finally:
        progress.close()
    from sgvis.render import run_stats
    stats = run_stats(job, backend, sinks, generated, fps, start, end, info.sample_rate,
                      time.perf_counter() - started)
    if job.stats:
        from stylegan.atomic import write_json_atomically
        write_json_atomically(job.stats, stats)
    return stats
