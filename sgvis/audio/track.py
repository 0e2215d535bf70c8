"""A render's range of a track, decoded once.

`sgvis render` needs the same stretch of audio three ways: a whole-range analysis pass (what the file really
holds, beat and onset times), the causal frame-by-frame analysis, and the sound muxed into the video.  A
`DecodedTrack` decodes the range a single time, at the rate and channel layout the video's sound is encoded in,
and keeps two copies while it does: those samples for the mux, and a mono copy at the features' rate for the
analyses.  Each copy is a spooled temporary file: in memory up to `SPOOL_MEMORY` bytes, then an unnamed file in
the temporary folder (it has no name on disk, so it is gone when the track is closed or the process dies,
whatever the signal).

    track = DecodedTrack(path, start, end, analysis_rate=22050, mux=(44100, "stereo"))
    for block in track.decode(): ...          # mono analysis blocks [1, n], as they are decoded
    track.held_seconds                        # what the file held in the range
    for block in track.analysis_blocks(): ... # the same blocks again
    for block in track.blocks(44100, "stereo"): ...   # the mux copy (another rate/layout decodes the file again)
    track.close()
"""
from __future__ import annotations

import tempfile
import threading
from typing import Iterator

import numpy as np

from sgvis.audio import StreamResampler
from sgvis.audio.decode import decode_blocks

SPOOL_MEMORY = 64 << 20     # bytes of one copy kept in memory before it moves to a temporary file
STEREO_TO_MONO = 0.5 ** 0.5
READ_SAMPLES = 8192         # samples per channel in a block read back


class SampleSpool:
    """Float32 blocks [channels, n] appended once, then read back in order by any number of readers (each keeps
    its own position; reads are serialised, so readers may sit in different threads)."""

    def __init__(self, channels: int):
        self.channels = int(channels)
        self.samples = 0
        self._file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)
        self._lock = threading.Lock()

    def append(self, block: np.ndarray) -> None:
        block = np.asarray(block, np.float32).reshape(self.channels, -1)
        with self._lock:
            self._file.seek(0, 2)
            self._file.write(np.ascontiguousarray(block.T).tobytes())
        self.samples += block.shape[1]

    def read(self, block_samples: int = READ_SAMPLES) -> Iterator[np.ndarray]:
        frame_bytes = 4 * self.channels
        position = 0
        while position < self.samples:
            n = min(block_samples, self.samples - position)
            with self._lock:
                if self._file.closed:                # closed under us (a stopped render): nothing more
                    return
                self._file.seek(position * frame_bytes)
                data = self._file.read(n * frame_bytes)
            position += n
            yield np.frombuffer(data, np.float32).reshape(n, self.channels).T.copy()

    def close(self) -> None:
        with self._lock:
            self._file.close()


class DecodedTrack:
    """`path` from `start` to `end` seconds, decoded once; `mux` is the (rate, layout) the video's sound is
    encoded at ("mono" or "stereo"), or None when no output takes sound (then the file is decoded straight to
    mono at `analysis_rate`)."""

    def __init__(self, path: str, start: float, end: float | None, analysis_rate: int,
                 mux: tuple[int, str] | None = None):
        self.path, self.start, self.end = path, float(start), end
        self.analysis_rate = int(analysis_rate)
        self.mux = None if mux is None else (int(mux[0]), str(mux[1]))
        self.analysis = SampleSpool(1)
        self.mux_copy = None if self.mux is None else SampleSpool(1 if self.mux[1] == "mono" else 2)
        self.decoded = False

    @property
    def held_seconds(self) -> float:
        return self.analysis.samples / self.analysis_rate

    def decode(self) -> Iterator[np.ndarray]:
        """Decode the range (once), keeping both copies; yields each mono analysis block [1, n] as it comes."""
        if self.decoded:
            raise RuntimeError(f"{self.path}: already decoded")
        self.decoded = True
        if self.mux is None:
            for block in decode_blocks(self.path, self.analysis_rate, "mono", self.start, self.end):
                self.analysis.append(block)
                yield block
            return
        rate, layout = self.mux
        to_analysis = StreamResampler(rate, self.analysis_rate)
        for block in decode_blocks(self.path, rate, layout, self.start, self.end):
            self.mux_copy.append(block)
            # stereo -> mono as FFmpeg's resampler mixes it, (L + R) / sqrt(2), so the analysis hears what a
            # straight mono decode would give
            downmix = block[0] if block.shape[0] == 1 else block.sum(axis=0) * np.float32(STEREO_TO_MONO)
            for mono in to_analysis.push(downmix):
                mono = mono[None]
                self.analysis.append(mono)
                yield mono
        for mono in to_analysis.flush():
            mono = mono[None]
            self.analysis.append(mono)
            yield mono

    def analysis_blocks(self) -> Iterator[np.ndarray]:
        """The mono analysis copy again, [1, n] blocks at `analysis_rate`."""
        return self.analysis.read()

    def blocks(self, rate: int, layout: str) -> Iterator[np.ndarray]:
        """The range at `rate` and `layout`: the mux copy when it was decoded that way, else a fresh decode."""
        if self.mux_copy is not None and (int(rate), layout) == self.mux:
            return self.mux_copy.read()
        return decode_blocks(self.path, rate, layout, self.start, self.end)

    def close(self) -> None:
        self.analysis.close()
        if self.mux_copy is not None:
            self.mux_copy.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
