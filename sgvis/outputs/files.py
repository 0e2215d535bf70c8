"""Frame sinks: where rendered frames go.  Each sink writes to a temporary path and only moves it into place on
`close()`; `abort()` removes everything it wrote, so an interrupted render leaves no half file."""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from fractions import Fraction

import av
import numpy as np

from sgvis.audio.decode import decode_blocks
from stylegan.atomic import replace_into_place

def even(n: int) -> int:
    """H.264 with yuv420p needs even frame sizes: round up."""
    return n + (n % 2)


def check_output_path(path: str, overwrite: bool, what: str = "output") -> None:
    """One clear UserError for an output that must not or cannot be written."""
    from sgvis.errors import UserError
    if os.path.isdir(path) and what == "output":
        raise UserError(f"{path}: is a directory; give a file name")
    if os.path.exists(path) and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise UserError(f"cannot write {path}: directory {directory} does not exist or is not writable")


AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


class Mp4Sink:
    """H.264 (libx264, yuv420p, CRF) video with the source audio re-encoded as AAC, interleaved as frames arrive
    so that memory stays bounded."""

    def __init__(self, path: str, fps: float, width: int, height: int, crf: int = 18, preset: str = "medium",
                 audio_path: str | None = None, audio_start: float = 0.0, audio_end: float | None = None,
                 audio_rate: int | None = None, audio_channels: int = 2, push_audio: bool = False):
        """Audio comes from `audio_path` (decoded and interleaved as video is written) or, with `push_audio`,
        from `write_audio()` calls (live capture) at `audio_rate`."""
        if width % 2 or height % 2:
            raise ValueError(f"H.264 with yuv420p needs even frame sizes, got {width}x{height}")
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        fd, self.tmp = tempfile.mkstemp(prefix=".sgvis-", suffix=".mp4.part", dir=directory)
        os.close(fd)
        self.container = av.open(self.tmp, mode="w", format="mp4")
        self.fps = Fraction(fps).limit_denominator(1001)
        self.video = self.container.add_stream("libx264", rate=self.fps)
        self.video.width, self.video.height = width, height
        self.video.pix_fmt = "yuv420p"
        self.video.options = {"crf": str(int(crf)), "preset": preset}
        self.frames_written = 0
        self.audio = None
        self._audio_blocks = iter(())
        if audio_path is not None or push_audio:
            rate = min(audio_rate or 48000, 48000)
            self.audio_rate = rate if rate in AAC_RATES else 48000
            if push_audio and self.audio_rate != audio_rate:
                raise ValueError(f"pushed audio must be at an AAC sample rate, got {audio_rate}")
            layout = "mono" if audio_channels == 1 else "stereo"
            self.audio = self.container.add_stream("aac", rate=self.audio_rate, layout=layout)
            if audio_path is not None:
                self._audio_blocks = decode_blocks(audio_path, self.audio_rate, layout, audio_start, audio_end)
            self._audio_pts = 0
            self._layout = layout

    def _encode_audio_until(self, seconds: float | None) -> None:
        """Encode source audio up to `seconds` of output time (None: to the end)."""
        if self.audio is None:
            return
        target = None if seconds is None else int(seconds * self.audio_rate)
        while target is None or self._audio_pts < target:
            block = next(self._audio_blocks, None)
            if block is None:
                break
            self._encode_audio_block(block)

    def _encode_audio_block(self, block: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=self._layout)
        frame.sample_rate = self.audio_rate
        frame.pts = self._audio_pts
        frame.time_base = Fraction(1, self.audio_rate)
        self._audio_pts += block.shape[1]
        for packet in self.audio.encode(frame):
            self.container.mux(packet)

    def write_audio(self, block: np.ndarray) -> None:
        """Pushed audio (live capture): float32 [channels, n] at the stream's rate."""
        if block.shape[1]:
            self._encode_audio_block(np.ascontiguousarray(block, np.float32))

    def write(self, frame: np.ndarray) -> None:
        """One RGB uint8 frame [H, W, 3]."""
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.frames_written
        vf.time_base = 1 / self.fps
        for packet in self.video.encode(vf):
            self.container.mux(packet)
        self.frames_written += 1
        self._encode_audio_until(self.frames_written / float(self.fps) + 0.5)

    def close(self) -> None:
        self._encode_audio_until(None)
        for packet in self.video.encode():
            self.container.mux(packet)
        if self.audio is not None:
            for packet in self.audio.encode():
                self.container.mux(packet)
        self.container.close()
        replace_into_place(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:
            pass
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


class LiveRecorder:
    """Records a live show (`sgvis live --record`) on the captured audio's clock.

    Each frame is placed at the audio position it was generated from and is held until the next one, as on
    screen.  Both tracks are timed by the same sample count, so they stay in step when the input drops samples
    or generation falls behind; the show's display latency is not in the recording.  Audio at a rate AAC does
    not take is resampled to 48 kHz."""

    def __init__(self, path: str, fps: float, frame_size: tuple[int, int], input_rate: int):
        width, height = (even(int(v)) for v in frame_size)
        self.rate = input_rate if input_rate in AAC_RATES and input_rate <= 48000 else 48000
        self.fps = float(fps)
        self.sink = Mp4Sink(path, self.fps, width, height, audio_rate=self.rate, audio_channels=1,
                            push_audio=True)
        self._resampler = None
        if self.rate != input_rate:
            self._resampler = av.AudioResampler(format="fltp", layout="mono", rate=self.rate)
            self._input_rate = input_rate
        self.samples = 0                 # audio recorded so far, at self.rate
        self._held = None                # the frame on screen while the newest audio was captured

    @property
    def frames_written(self) -> int:
        return self.sink.frames_written

    def audio(self, samples: np.ndarray) -> None:
        """Captured mono float32 samples at the input rate (silence for audio the input lost)."""
        if len(samples) == 0:
            return
        blocks = [np.asarray(samples, np.float32)[None]]
        if self._resampler is not None:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(blocks[0]), format="fltp", layout="mono")
            frame.sample_rate = self._input_rate
            blocks = [out.to_ndarray() for out in self._resampler.resample(frame)]
        for block in blocks:
            self.sink.write_audio(block)
            self.samples += block.shape[1]

    def frame(self, frame: np.ndarray) -> None:
        """The frame generated from all audio recorded so far: it is shown from this audio position on."""
        frame = np.asarray(frame)
        if frame.shape[0] % 2 or frame.shape[1] % 2:
            frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)))
        held = frame if self._held is None else self._held
        due = math.ceil(self.samples / self.rate * self.fps - 1e-9)
        while self.sink.frames_written < due:
            self.sink.write(held)
        self._held = frame

    def close(self) -> None:
        if self._held is not None:
            self.frame(self._held)
        self.sink.close()

    def abort(self) -> None:
        self.sink.abort()


class PngSink:
    """Numbered PNG frames (frame_000000.png ...) in a directory, written to a temporary sibling directory first."""

    def __init__(self, directory: str):
        from PIL import Image  # noqa: F401  (fail early if Pillow is missing)
        self.directory = os.path.abspath(directory)
        parent = os.path.dirname(self.directory)
        self.tmp = tempfile.mkdtemp(prefix=".sgvis-png-", dir=parent)
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        from PIL import Image
        Image.fromarray(frame).save(os.path.join(self.tmp, f"frame_{self.frames_written:06d}.png"), compress_level=1)
        self.frames_written += 1

    def close(self) -> None:
        if os.path.isdir(self.directory):
            shutil.rmtree(self.directory)
        replace_into_place(self.tmp, self.directory, directory=True)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
