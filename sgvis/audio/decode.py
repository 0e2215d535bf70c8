"""Audio in: decode any audio file (wav, flac, ogg, mp3, m4a/aac, ...) or the sound of a video file with PyAV,
streamed in blocks so that memory stays bounded for hour-long files."""
from __future__ import annotations

import os
import stat
import sys
import threading
from dataclasses import dataclass
from typing import Iterator

import av
import numpy as np

from sgvis.errors import UserError, reason

MIN_RATE, MAX_RATE = 8000, 192000
# Decoded samples beyond this magnitude (full scale is 1) are clipped: float files can hold anything, and values
# like 1e30 would overflow the analysis' power spectra into inf/nan.  24 dB over full scale leaves real-world
# float files that go somewhat over 1 untouched.
MAX_AMPLITUDE = 16.0
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


def check_input_file(path: str, what: str = "an audio or video file") -> None:
    """One UserError line unless `path` is a non-empty regular file (FIFOs, devices and sockets are refused:
    a file is read more than once)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({reason(e)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{path}: is a directory; give {what}")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
        raise UserError(f"{path}: is {kind}, not a regular file; sgvis reads its input more than once, so save "
                        f"it to a file first")
    if st.st_size == 0:
        raise UserError(f"{path}: the file is empty")


def _open(path: str):
    check_input_file(path)
    try:
        return av.open(path)
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError, OSError) as e:
        raise UserError(f"{path}: cannot read audio from this file ({reason(e, 100)})") from None


_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def _warn_once(path: str, kind: str, message: str) -> None:
    """One line on stderr, once per file and kind of problem (a render decodes a file several times)."""
    with _warned_lock:
        if (path, kind) in _warned:
            return
        _warned.add((path, kind))
    print(f"sgvis: warning: {path}: {message}", file=sys.stderr)


def sanitize(block: np.ndarray, path: str) -> np.ndarray:
    """Decoded samples made safe to analyse and encode: non-finite ones (inf, nan) become silence and magnitudes
    beyond MAX_AMPLITUDE are clipped, each said once per file in one warning line."""
    finite = np.isfinite(block)
    if not finite.all():
        block = np.where(finite, block, np.float32(0))
        _warn_once(path, "nonfinite", "the audio holds non-finite samples (inf or nan); they are played and "
                                      "analysed as silence")
    if np.abs(block).max(initial=0.0) > MAX_AMPLITUDE:
        block = np.clip(block, -MAX_AMPLITUDE, MAX_AMPLITUDE)
        _warn_once(path, "huge", f"the audio has samples far beyond full scale (over {MAX_AMPLITUDE:g}); they "
                                 f"are clipped to +-{MAX_AMPLITUDE:g}")
    return block


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
                    yield sanitize(block[:, lo:hi], path)
                if last is not None and position >= last:
                    return
    except av.error.FFmpegError as e:
        raise UserError(f"{path}: the audio could not be decoded ({reason(e, 100)})") from None
