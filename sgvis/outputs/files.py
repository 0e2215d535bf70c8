"""File sinks: video (mp4 and the other containers PyAV writes) and PNG folders.  Each writes to a temporary
path and only moves it into place on `close()`; `abort()` removes everything it wrote, so an interrupted run
leaves no half file, and nothing a user made is ever removed or silently replaced."""
from __future__ import annotations

import math
import os
import re
import shutil
import sys
import tempfile
from fractions import Fraction

import av
import numpy as np

from sgvis.audio.decode import decode_blocks
from sgvis.errors import UserError, write_failure
from stylegan.atomic import link_into_place, replace_into_place

# Containers a video sink writes, by file extension: (PyAV format, video codec, pixel format, audio codec or None)
VIDEO_FORMATS = {
    ".mp4": ("mp4", "libx264", "yuv420p", "aac"),
    ".m4v": ("mp4", "libx264", "yuv420p", "aac"),
    ".mov": ("mov", "libx264", "yuv420p", "aac"),
    ".mkv": ("matroska", "libx264", "yuv420p", "aac"),
    ".webm": ("webm", "libvpx-vp9", "yuv420p", "libopus"),
    ".gif": ("gif", "gif", "rgb8", None),
}
PNG_NAME = re.compile(r"frame_\d{6}\.png")


def video_format(path: str) -> tuple[str, str, str, str | None]:
    """The container for `path` by its extension; one UserError line for one sgvis cannot write."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in VIDEO_FORMATS:
        raise UserError(f"{path}: cannot write a {ext or 'file without extension'} video; use one of "
                        f"{', '.join(VIDEO_FORMATS)}")
    return VIDEO_FORMATS[ext]


def even(n: int) -> int:
    """H.264 with yuv420p needs even frame sizes: round up."""
    return n + (n % 2)


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_output_path(path: str, overwrite: bool, what: str = "output", inputs=()) -> None:
    """One clear UserError for an output that must not or cannot be written (checked before anything is
    written).  `what` is "output" (a file) or "png" (a folder of frames); `inputs` are files the run reads,
    which an output must never replace."""
    for source in inputs:
        if source and os.path.exists(path) and same_file(path, source):
            raise UserError(f"{path} is also an input of this run; write the output somewhere else")
    if what == "png":
        if os.path.exists(path) and not os.path.isdir(path):
            raise UserError(f"{path} exists and is not a folder; --png-dir needs a folder")
    elif os.path.isdir(path):
        raise UserError(f"{path}: is a directory; give a file name")
    if os.path.exists(path) and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise UserError(f"cannot write {path}: directory {directory} does not exist or is not writable")


def free_name(path: str) -> str:
    """`path`, or `stem-1.ext`, `stem-2.ext`, ... : the first name nothing exists at."""
    stem, ext = os.path.splitext(path)
    n = 1
    while os.path.lexists(f"{stem}-{n}{ext}"):
        n += 1
    return f"{stem}-{n}{ext}"


def publish(tmp: str, path: str, overwrite: bool, directory: bool = False) -> str:
    """Move the finished temporary file (or folder) `tmp` to `path` and return where it went.  Without
    `overwrite`, something that appeared at `path` while the run was writing is never replaced: the result goes
    to a free name beside it, and stderr says so."""
    if overwrite:
        replace_into_place(tmp, path, directory=directory)
        return path
    target = path
    while True:
        try:
            if directory:
                if os.path.lexists(target):
                    raise FileExistsError(target)
                replace_into_place(tmp, target, directory=True)
            else:
                link_into_place(tmp, target)
            break
        except FileExistsError:
            target = free_name(path)
        except OSError:
            if os.path.lexists(target):
                raise
            replace_into_place(tmp, target, directory=directory)   # a file system without hard links
            break
    if target != path:
        print(f"sgvis: warning: {path} was created by something else during the run; left it as it was and "
              f"wrote this run's output to {target}", file=sys.stderr)
    return target


AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


def sound_format(path: str, source_rate: int | None, channels: int) -> tuple[int, str] | None:
    """(sample rate, "mono" | "stereo") a video at `path` encodes its sound in, for a source of `source_rate` Hz
    and `channels` channels; None for a container without sound (gif)."""
    audio_codec = video_format(path)[3]
    if audio_codec is None:
        return None
    if audio_codec == "libopus":
        rate = 48000
    else:
        rate = min(source_rate or 48000, 48000)
        rate = rate if rate in AAC_RATES else 48000
    return rate, "mono" if channels == 1 else "stereo"


class VideoSink:
    """A video file in the container its extension names (VIDEO_FORMATS: H.264 + AAC in mp4/mov/mkv, VP9 + Opus
    in webm, gif without sound), with the source audio interleaved as frames arrive so that memory stays
    bounded."""

    def __init__(self, path: str, fps: float, width: int, height: int, crf: int = 18, preset: str = "medium",
                 audio_path: str | None = None, audio_start: float = 0.0, audio_end: float | None = None,
                 audio_rate: int | None = None, audio_channels: int = 2, push_audio: bool = False,
                 overwrite: bool = True, audio_blocks=None):
        """Audio comes from `audio_path` (decoded and interleaved as video is written; `audio_blocks(rate,
        layout)`, when given, supplies those blocks instead, e.g. a render's already decoded track) or, with
        `push_audio`, from `write_audio()` calls (live capture) at `audio_rate`.  Without `overwrite`, close()
        never replaces a file that appeared at `path` meanwhile."""
        container_format, codec, pix_fmt, audio_codec = video_format(path)
        if codec == "libx264" and (width % 2 or height % 2):
            raise ValueError(f"H.264 with yuv420p needs even frame sizes, got {width}x{height}")
        self.path = path
        self.overwrite = overwrite
        directory = os.path.dirname(os.path.abspath(path))
        self.tmp = None
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=".sgvis-", suffix=os.path.splitext(path)[1] + ".part",
                                            dir=directory)
            os.close(fd)
            self.container = av.open(self.tmp, mode="w", format=container_format)
        except OSError as e:              # e.g. /proc/x.mp4, a read-only or full disk
            if self.tmp is not None and os.path.exists(self.tmp):
                os.unlink(self.tmp)
            raise write_failure(path, e) from None
        self.fps = Fraction(fps).limit_denominator(1001)
        self.video = self.container.add_stream(codec, rate=self.fps)
        self.video.width, self.video.height = width, height
        self.video.pix_fmt = pix_fmt
        if codec == "libx264":
            self.video.options = {"crf": str(int(crf)), "preset": preset}
        elif codec == "libvpx-vp9":
            self.video.options = {"crf": str(min(63, int(crf) + 13)), "b": "0", "deadline": "good",
                                  "cpu-used": "4"}
        self.frames_written = 0
        self.audio = None
        self._audio_blocks = iter(())
        self._audio_source = None
        if (audio_path is not None or push_audio) and audio_codec is not None:
            self.audio_rate, layout = sound_format(path, audio_rate, audio_channels)
            if push_audio and self.audio_rate != audio_rate:
                raise ValueError(f"pushed audio must be at {self.audio_rate} Hz for {path}, got {audio_rate}")
            self.audio = self.container.add_stream(audio_codec, rate=self.audio_rate, layout=layout)
            if audio_path is not None:
                if audio_blocks is not None:
                    self._audio_blocks = iter(audio_blocks(self.audio_rate, layout))
                else:
                    self._audio_blocks = decode_blocks(audio_path, self.audio_rate, layout, audio_start,
                                                       audio_end)
                self._audio_source = audio_path
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
        self.path = publish(self.tmp, self.path, self.overwrite)
        self._say_if_sound_is_short()

    def _say_if_sound_is_short(self) -> None:
        """A video whose sound ends early (or has none) is never written silently: one warning line."""
        if self.audio is None or self._audio_source is None or not self.frames_written:
            return
        audio_s, video_s = self._audio_pts / self.audio_rate, self.frames_written / float(self.fps)
        if audio_s <= 0:
            print(f"sgvis: warning: {self.path} has no sound: no audio could be decoded from "
                  f"{self._audio_source} for it", file=sys.stderr)
        elif audio_s < video_s - max(0.1, 1.5 / float(self.fps)):
            print(f"sgvis: warning: {self.path}: its sound ends at {audio_s:.2f}s, before the video "
                  f"({video_s:.2f}s): {self._audio_source} holds less audio than expected", file=sys.stderr)

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - closing a broken container (a full disk) fails too; the file goes
            pass
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


class LiveRecorder:
    """Records a live show (`sgvis live --record`) on the captured audio's clock.

    Each frame is placed at the audio position it was generated from and is held until the next one, as on
    screen.  Both tracks are timed by the same sample count, so they stay in step when the input drops samples
    or generation falls behind; the show's display latency is not in the recording.  Audio at a rate AAC does
    not take is resampled to 48 kHz."""

    def __init__(self, path: str, fps: float, frame_size: tuple[int, int], input_rate: int,
                 overwrite: bool = True, crf: int = 18, preset: str = "medium"):
        width, height = (even(int(v)) for v in frame_size)
        audio_codec = video_format(path)[3]
        if audio_codec == "libopus":
            self.rate = 48000
        else:
            self.rate = input_rate if input_rate in AAC_RATES and input_rate <= 48000 else 48000
        self.fps = float(fps)
        self.sink = VideoSink(path, self.fps, width, height, crf=crf, preset=preset, audio_rate=self.rate,
                              audio_channels=1, push_audio=True, overwrite=overwrite)
        from sgvis.audio import StreamResampler
        self._resampler = StreamResampler(input_rate, self.rate)
        self.samples = 0                 # audio recorded so far, at self.rate
        self._held = None                # the frame on screen while the newest audio was captured

    @property
    def frames_written(self) -> int:
        return self.sink.frames_written

    @property
    def path(self) -> str:
        return self.sink.path

    def write_audio(self, samples: np.ndarray) -> None:
        """Captured mono float32 samples at the input rate (silence for audio the input lost)."""
        if self.sink.audio is None:            # a container without sound (gif): keep the clock only
            self.samples += int(round(len(samples) * self.rate / self._resampler.rate_in))
            return
        for block in self._resampler.push(samples):
            self.sink.write_audio(block[None])
            self.samples += len(block)

    def write(self, frame: np.ndarray) -> None:
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
            self.write(self._held)
        self.sink.close()

    def abort(self) -> None:
        self.sink.abort()


class PngSink:
    """Numbered PNG frames (frame_000000.png ...) in a folder, written to a temporary sibling folder first.  Into
    an existing folder (with overwrite) only the frame files move: nothing else in it is touched, and stale
    frame_NNNNNN.png files from a longer earlier run are removed."""

    def __init__(self, directory: str, overwrite: bool = True):
        from PIL import Image  # noqa: F401  (fail early if Pillow is missing)
        self.directory = os.path.abspath(directory)
        self.overwrite = overwrite
        parent = os.path.dirname(self.directory)
        try:
            self.tmp = tempfile.mkdtemp(prefix=".sgvis-png-", dir=parent)
        except OSError as e:
            raise write_failure(directory, e) from None
        self.frames_written = 0

    def _name(self, index: int) -> str:
        return f"frame_{index:06d}.png"

    def write(self, frame: np.ndarray) -> None:
        from PIL import Image
        Image.fromarray(frame).save(os.path.join(self.tmp, self._name(self.frames_written)), compress_level=1)
        self.frames_written += 1

    def close(self) -> None:
        if not os.path.isdir(self.directory) or not self.overwrite:
            self.directory = publish(self.tmp, self.directory, self.overwrite, directory=True)
            return
        mine = {self._name(i) for i in range(self.frames_written)}
        for name in os.listdir(self.directory):
            if PNG_NAME.fullmatch(name) and name not in mine and os.path.isfile(os.path.join(self.directory, name)):
                os.unlink(os.path.join(self.directory, name))
        for name in sorted(mine):
            replace_into_place(os.path.join(self.tmp, name), os.path.join(self.directory, name))
        os.rmdir(self.tmp)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def check_video_target(target: str, overwrite: bool, inputs=()) -> None:
    check_output_path(target, overwrite, inputs=inputs)
    video_format(target)


def check_png_target(target: str, overwrite: bool, inputs=()) -> None:
    check_output_path(target, overwrite, what="png", inputs=inputs)


def open_video_sink(target: str, context) -> "VideoSink | LiveRecorder":
    """SINKS["video"]: a video file; with the run's audio (render) or the captured sound (live)."""
    check_video_target(target, context.overwrite, context.inputs)
    width, height = (even(int(v)) for v in context.size)
    rs = context.settings
    if context.live_audio_rate is not None:
        return LiveRecorder(target, context.fps, (width, height), context.live_audio_rate,
                            overwrite=context.overwrite, crf=rs.get("crf", 18), preset=rs.get("preset", "medium"))
    a = context.audio
    return VideoSink(target, context.fps, width, height, crf=rs.get("crf", 18), preset=rs.get("preset", "medium"),
                     audio_path=a.path if a else None, audio_start=a.start if a else 0.0,
                     audio_end=a.end if a else None, audio_rate=a.sample_rate if a else None,
                     audio_channels=min(a.channels, 2) if a else 2, overwrite=context.overwrite,
                     audio_blocks=a.blocks if a and a.track is not None else None)


def open_png_sink(target: str, context) -> PngSink:
    """SINKS["png"]: numbered PNG frames in a folder."""
    check_png_target(target, context.overwrite, context.inputs)
    return PngSink(target, overwrite=context.overwrite)


open_video_sink.check_target = check_video_target     # sgvis.outputs.check_sink_spec: checked before the run
open_png_sink.check_target = check_png_target
