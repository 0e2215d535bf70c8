"""Audio and video files the tests synthesize themselves (no downloads)."""
from __future__ import annotations

from fractions import Fraction

import av
import numpy as np


def click_track(duration: float = 3.0, sr: int = 22050, bpm: float = 120.0, tone: float = 110.0,
                level: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """A quiet tone with sharp noise-burst clicks on every beat; returns (samples, click_times)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(duration * sr)) / sr
    x = 0.05 * np.sin(2 * np.pi * tone * t)
    clicks = np.arange(0.25, duration - 0.05, 60.0 / bpm)
    n = int(0.04 * sr)
    env = np.exp(-np.arange(n) / (0.008 * sr))
    for c in clicks:
        i = int(c * sr)
        x[i:i + n] += level * 3 * rng.standard_normal(len(x[i:i + n])) * env[:len(x[i:i + n])]
        x[i:i + n] += level * 2 * np.sin(2 * np.pi * 60 * np.arange(len(x[i:i + n])) / sr) * env[:len(x[i:i + n])]
    return np.clip(x, -1, 1).astype(np.float32), clicks


def write_audio(path, samples: np.ndarray, sr: int, codec: str | None = None, channels: int = 1) -> None:
    """Write samples with PyAV in the container/codec the extension implies: mono samples repeated on `channels`
    channels, or [channels, n] samples as they are."""
    ext = str(path).rsplit(".", 1)[-1].lower()
    fmt, default_codec = {"wav": ("wav", "pcm_s16le"), "flac": ("flac", "flac"), "ogg": ("ogg", "libopus"),
                          "mp3": ("mp3", "libmp3lame"), "m4a": ("ipod", "aac"), "mka": ("matroska", "pcm_f32le")}[ext]
    if samples.ndim == 2:
        channels = samples.shape[0]
    layout = "mono" if channels == 1 else "stereo"
    data = (samples if samples.ndim == 2 else np.repeat(samples[None], channels, axis=0)).astype(np.float32)
    out_rate = 48000 if ext == "ogg" else sr          # Opus runs at 48 kHz
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec or default_codec, rate=out_rate, layout=layout)
        fmt_name = s.codec_context.codec.audio_formats[0].name if s.codec_context.codec.audio_formats else "fltp"
        frame_size = {"mp3": 1152, "ogg": 960}.get(ext, 1024)
        resampler = av.AudioResampler(format=fmt_name, layout=layout, rate=out_rate)
        for i in range(0, data.shape[1], frame_size):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, i:i + frame_size]), format="fltp",
                                               layout=layout)
            frame.sample_rate = sr
            frame.pts = i
            frame.time_base = Fraction(1, sr)
            for f in resampler.resample(frame):
                for p in s.encode(f):
                    c.mux(p)
        for p in s.encode():
            c.mux(p)


def write_video(path, seconds: float = 1.0, with_audio: bool = True, sr: int = 44100, fps: int = 10) -> None:
    with av.open(str(path), "w", format="mp4") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        a = c.add_stream("aac", rate=sr, layout="stereo") if with_audio else None
        for k in range(int(seconds * fps)):
            img = np.full((32, 32, 3), (k * 20) % 255, np.uint8)
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        if a is not None:
            samples, _ = click_track(seconds, sr)
            data = np.stack([samples, samples])
            for i in range(0, data.shape[1], 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, i:i + 1024]), format="fltp",
                                                   layout="stereo")
                frame.sample_rate, frame.pts, frame.time_base = sr, i, Fraction(1, sr)
                for p in a.encode(frame):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)


def read_video(path):
    """(frames uint8 [T, H, W, 3], video seconds, audio seconds or None, audio codec or None)."""
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        v = c.streams.video[0]
        vdur = float(v.duration * v.time_base) if v.duration else len(frames) / float(v.average_rate)
        adur = codec = None
        if c.streams.audio:
            a = c.streams.audio[0]
            codec = a.codec_context.name
            adur = float(a.duration * a.time_base) if a.duration else None
    return np.stack(frames), vdur, adur, codec
