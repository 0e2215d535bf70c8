"""Audio in: decode any audio file (wav, flac, ogg, mp3, m4a/aac, ...) or the sound of a video file with PyAV,
streamed in blocks so that memory stays bounded for hour-long files."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import av
import numpy as np

from sgvis.errors import UserError

MIN_RATE, MAX_RATE = 8000, 192000
# File extensions sgvis looks for when it scans a folder (any file PyAV reads can still be given by name).
AUDIO_EXTS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aif", ".aiff", ".wma", ".mka")
VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".gif", ".wmv", ".flv", ".ts")


@dataclass
class AudioInfo:
    path: str
    duration: float          # seconds (from the container; refined by decoding where it is missing)
    sample_rate: int
    channels: int
    codec: str
    has_video: bool


def _open(path: str):
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file")
    if os.path.isdir(path):
        raise UserError(f"{path}: is a directory; give an audio or video file")
    if os.path.getsize(path) == 0:
        raise UserError(f"{path}: the file is empty")
    try:
        return av.open(path)
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path}: cannot read audio from this file ({str(e).splitlines()[0][:100]})") from None


def probe(path: str) -> AudioInfo:
    """Describe the first audio stream; one clear UserError for anything unusable."""
    with _open(path) as container:
        if not container.streams.audio:
            kind = "a video file without an audio track" if container.streams.video else "not an audio file"
            raise UserError(f"{path}: {kind}")
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        channels = int(stream.codec_context.channels or 0) if hasattr(stream.codec_context, "channels") \
            else len(stream.codec_context.layout.channels)
        if not MIN_RATE <= rate <= MAX_RATE:
            raise UserError(f"{path}: sample rate {rate} Hz is outside the supported {MIN_RATE}-{MAX_RATE} Hz")
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        has_video = bool(container.streams.video)
        codec = stream.codec_context.name
    if duration is None or duration <= 0:
        duration = sum(b.shape[1] for b in decode_blocks(path, rate, None)) / rate
    if duration <= 0:
        raise UserError(f"{path}: the audio is empty (zero length)")
    return AudioInfo(path=path, duration=duration, sample_rate=rate, channels=max(channels, 1), codec=codec,
                     has_video=has_video)


def decode_blocks(path: str, sample_rate: int, layout: str | None = "mono", start: float = 0.0,
                  end: float | None = None) -> Iterator[np.ndarray]:
    """Yield float32 blocks [channels, n] of the first audio stream between `start` and `end` seconds,
    resampled to `sample_rate` and mixed to `layout` ('mono', 'stereo', or None to keep the source layout)."""
    first = int(round(start * sample_rate))
    last = None if end is None else int(round(end * sample_rate))
    position = 0                                     # samples of resampled output produced so far
    try:
        with _open(path) as container:
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)

            def frames():
                for packet in container.demux(stream):
                    for frame in packet.decode():
                        yield from resampler.resample(frame)
                yield from resampler.resample(None)

            for frame in frames():
                block = frame.to_ndarray().astype(np.float32, copy=False)
                if block.ndim == 1:
                    block = block[None]
                n = block.shape[1]
                lo, hi = max(first - position, 0), n if last is None else min(n, last - position)
                position += n
                if hi > lo:
                    yield np.nan_to_num(block[:, lo:hi])
                if last is not None and position >= last:
                    return
    except av.error.FFmpegError as e:
        raise UserError(f"{path}: the audio could not be decoded ({str(e).splitlines()[0][:100]})") from None
