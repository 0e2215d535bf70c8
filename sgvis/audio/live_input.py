"""Live audio in: a sounddevice stream whose callback only copies into a preallocated ring buffer.

The callback never allocates, never waits on the generator and takes no lock: one writer (the audio callback)
and one reader (the show loop), coordinated by a monotonically increasing write position.  Overflows reported by
PortAudio (xruns) and reads that fell behind the ring are counted.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from sgvis.errors import UserError


class RingBuffer:
    """Single-producer / single-consumer ring of float32 frames [capacity, channels]."""

    def __init__(self, capacity: int, channels: int):
        self.data = np.zeros((capacity, channels), np.float32)
        self.capacity = capacity
        self.written = 0                 # total frames ever written (updated after the data)
        self.write_time = 0.0            # perf_counter() when the newest frame arrived

    def write(self, block: np.ndarray) -> None:
        """Copy `block` [n, channels] in; safe to call from an audio callback (no allocation)."""
        n = block.shape[0]
        if n > self.capacity:
            block = block[n - self.capacity:]
            n = self.capacity
        start = self.written % self.capacity
        first = min(n, self.capacity - start)
        self.data[start:start + first] = block[:first]
        if first < n:
            self.data[:n - first] = block[first:]
        self.written += n
        self.write_time = time.perf_counter()

    def read_since(self, position: int) -> tuple[np.ndarray, int, int]:
        """Frames written after `position`: (copy [n, channels], new position, frames lost to overrun)."""
        end = self.written
        lost = max(0, end - position - self.capacity)
        position += lost
        n = end - position
        if n <= 0:
            return np.zeros((0, self.data.shape[1]), np.float32), end, lost
        start = position % self.capacity
        first = min(n, self.capacity - start)
        out = np.empty((n, self.data.shape[1]), np.float32)
        out[:first] = self.data[start:start + first]
        if first < n:
            out[first:] = self.data[:n - first]
        return out, end, lost


def _sd():
    try:
        import sounddevice
    except OSError as e:  # PortAudio library missing
        raise UserError(f"audio input is unavailable: {e}; install PortAudio (Debian: apt-get install libportaudio2)") \
            from None
    return sounddevice


def input_devices() -> list[dict]:
    sd = _sd()
    out = []
    for index, dev in enumerate(sd.query_devices()):
        if dev["max_input_channels"] > 0:
            hostapi = sd.query_hostapis(dev["hostapi"])["name"]
            out.append(dict(index=index, name=dev["name"], channels=dev["max_input_channels"],
                            rate=dev["default_samplerate"], hostapi=hostapi))
    return out


def describe_devices() -> str:
    devices = input_devices()
    if not devices:
        return "no audio input devices found (is a sound server or card available?)"
    return "\n".join(f"  [{d['index']}] {d['name']} ({d['hostapi']}), {d['channels']} ch, {d['rate']:.0f} Hz"
                     for d in devices)


def resolve_input(spec: str) -> int:
    """'mic' (the default input), an index, or a name substring -> device index; UserError listing devices."""
    sd = _sd()
    devices = input_devices()
    if not devices:
        raise UserError("no audio input device found; plug in a microphone or interface, or rehearse with "
                        "--device file:track.wav")
    if spec in ("mic", "default"):
        try:
            default = int(sd.default.device[0])
        except (TypeError, ValueError, IndexError):
            default = -1
        if default < 0 or default not in [d["index"] for d in devices]:
            return devices[0]["index"]
        return int(default)
    if spec.isdigit():
        if int(spec) in [d["index"] for d in devices]:
            return int(spec)
    else:
        matches = [d for d in devices if spec.lower() in d["name"].lower()]
        if len(matches) >= 1:
            return matches[0]["index"]
    listing = "; ".join(f"[{d['index']}] {d['name']}" for d in devices)
    raise UserError(f"no audio input matches {spec!r}; inputs: {listing} (see 'sgvis devices')")


@dataclass
class AudioStatus:
    connected: bool
    xruns: int
    lost_frames: int
    device: str
    sample_rate: int


class LiveInput:
    """Captures from an input device into a ring buffer; reconnects if the device goes away."""

    def __init__(self, device: str = "mic", channels: list[int] | None = None, sample_rate: int | None = None,
                 blocksize: int = 256, ring_seconds: float = 4.0):
        sd = _sd()
        self.spec = device
        self.index = resolve_input(device)
        info = sd.query_devices(self.index)
        self.device_name = info["name"]
        self.sample_rate = int(sample_rate or info["default_samplerate"])
        self.selected = channels or [1]                      # 1-based channel numbers to mix down
        if max(self.selected) > info["max_input_channels"] or min(self.selected) < 1:
            raise UserError(f"{self.device_name} has {info['max_input_channels']} input channels; "
                            f"--channels {','.join(map(str, self.selected))} is out of range")
        self.open_channels = max(self.selected)
        self.blocksize = blocksize
        self.ring = RingBuffer(int(ring_seconds * self.sample_rate), 1)
        self._mix = np.zeros((blocksize * 8, 1), np.float32)   # callback scratch space, allocated once
        self._columns = np.asarray([c - 1 for c in self.selected])
        self.xruns = 0
        self.stream = None
        self.input_latency = 0.0
        self._lock = threading.Lock()
        self._open()

    def _callback(self, indata, frames, time_info, status):
        if status.input_overflow:
            self.xruns += 1
        mix = self._mix[:frames] if frames <= len(self._mix) else np.empty((frames, 1), np.float32)
        if len(self._columns) == 1:
            mix[:, 0] = indata[:, self._columns[0]]
        else:
            np.mean(indata[:, self._columns], axis=1, out=mix[:, 0])
        self.ring.write(mix)

    def _open(self) -> None:
        sd = _sd()
        stream = sd.InputStream(device=self.index, channels=self.open_channels, samplerate=self.sample_rate,
                                blocksize=self.blocksize, dtype="float32", latency="low", callback=self._callback)
        stream.start()
        self.stream = stream
        self.input_latency = float(stream.latency)
        self._last_seen = (self.ring.written, time.perf_counter())

    @property
    def connected(self) -> bool:
        """False when the stream died or has delivered nothing for half a second (device unplugged)."""
        if self.stream is None or not self.stream.active:
            return False
        written, since = self._last_seen
        now = time.perf_counter()
        if self.ring.written != written:
            self._last_seen = (self.ring.written, now)
            return True
        return now - since < 0.5

    def try_reconnect(self) -> bool:
        with self._lock:
            self.close()
            try:
                self.index = resolve_input(self.spec)
                self._open()
                return True
            except Exception:
                self.stream = None
                return False

    def status(self) -> AudioStatus:
        return AudioStatus(self.connected, self.xruns, 0, self.device_name, self.sample_rate)

    def close(self) -> None:
        if self.stream is not None:
            try:
                self.stream.stop()
                self.stream.close()
            except Exception:
                pass
            self.stream = None


class FilePlayback:
    """Rehearsal input: plays a file to the default output and feeds the same samples to the ring buffer, so the
    visuals react to exactly what is heard."""

    def __init__(self, path: str, blocksize: int = 256, ring_seconds: float = 4.0, output_device=None):
        from sgvis.audio import decode as audio_in
        sd = _sd()
        info = audio_in.probe(path)
        try:
            out = sd.query_devices(output_device, "output") if output_device is not None else \
                sd.query_devices(kind="output")
            self.sample_rate = int(out["default_samplerate"])
        except Exception:
            raise UserError("no audio output device to play the file on; 'sgvis devices' lists what exists") \
                from None
        self.device_name = f"file:{path}"
        blocks = list(audio_in.decode_blocks(path, self.sample_rate, "stereo", 0.0, info.duration))
        self.audio = np.ascontiguousarray(np.concatenate(blocks, axis=1).T) if blocks else np.zeros((1, 2), np.float32)
        self.position = 0
        self.finished = False
        self.ring = RingBuffer(int(ring_seconds * self.sample_rate), 1)
        self._mono = np.zeros((blocksize * 8, 1), np.float32)
        self.xruns = 0
        self.input_latency = 0.0
        self.stream = sd.OutputStream(samplerate=self.sample_rate, channels=2, dtype="float32", blocksize=blocksize,
                                      latency="low", callback=self._callback, device=output_device)
        self.stream.start()

    def _callback(self, outdata, frames, time_info, status):
        if status.output_underflow:
            self.xruns += 1
        n = min(frames, len(self.audio) - self.position)
        outdata[:n] = self.audio[self.position:self.position + n]
        outdata[n:] = 0
        mono = self._mono[:frames] if frames <= len(self._mono) else np.empty((frames, 1), np.float32)
        np.mean(outdata, axis=1, out=mono[:, 0])
        self.ring.write(mono)
        self.position += n
        if n < frames:
            self.finished = True

    @property
    def connected(self) -> bool:
        return self.stream is not None and self.stream.active

    def try_reconnect(self) -> bool:
        return False

    def close(self) -> None:
        if self.stream is not None:
            self.stream.stop()
            self.stream.close()
            self.stream = None
