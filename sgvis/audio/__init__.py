"""Audio in: file decoding (sgvis.audio.decode), live input devices and file playback (sgvis.audio.live_input), the
synthesized demo music (sgvis.audio.synth).  Every way audio comes in is here, and so is resampling: the
orchestrators (render, live) ask for audio at the rate the features stage needs.

    source = open_live_source("mic", channels=[1], blocksize=256)    # or "file:track.wav" (rehearsal)
    samples = source.ring.read_since(pos)                          # the callback fills a ring buffer
    to_features = StreamResampler(source.sample_rate, 22050)
    for block in to_features.push(samples): ...                    # mono float32 at 22050 Hz
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class LiveSource(Protocol):
    """A live audio source: a callback fills `ring` (sgvis.audio.live_input.RingBuffer) with mono float32."""
    sample_rate: int
    device_name: str
    ring: Any
    xruns: int

    @property
    def connected(self) -> bool: ...
    def try_reconnect(self) -> bool: ...
    def close(self) -> None: ...


def open_live_source(spec: str, channels: list[int] | None = None, blocksize: int = 256) -> LiveSource:
    """`sgvis live --device SPEC`: "file:PATH" plays a file and listens to it (rehearsal); anything else is an
    input device (mic, an index, or part of its name)."""
    from sgvis.audio.live_input import FilePlayback, LiveInput
    if spec.startswith("file:"):
        return FilePlayback(spec[5:], blocksize=blocksize)
    return LiveInput(spec, channels=channels, blocksize=blocksize)


class StreamResampler:
    """Mono float32 blocks at `rate_in` -> blocks at `rate_out`, streaming (state kept between pushes)."""

    def __init__(self, rate_in: int, rate_out: int):
        self.rate_in, self.rate_out = int(rate_in), int(rate_out)
        self._resampler = None

    def push(self, samples) -> list:
        import av
        import numpy as np
        samples = np.ascontiguousarray(np.asarray(samples, np.float32).reshape(1, -1))
        if samples.shape[1] == 0:
            return []
        if self.rate_in == self.rate_out:
            return [samples[0]]
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="fltp", layout="mono", rate=self.rate_out)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = self.rate_in
        return [out.to_ndarray()[0] for out in self._resampler.resample(frame)]

    def flush(self) -> list:
        """The samples the resampler still holds (call once, after the last push)."""
        if self._resampler is None:
            return []
        return [out.to_ndarray()[0] for out in self._resampler.resample(None)]
