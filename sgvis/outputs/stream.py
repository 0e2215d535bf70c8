"""Streaming outputs (virtual camera, NDI): a FrameSink around a sender that another program reads live.

The sender is the OS boundary (pyvirtualcam, NDIlib): `open_sender()` returns an object with send(frame) and
close().  A sender that fails mid-show is closed, its loss shown in `status` (the HUD) and opened again every
few seconds; frames meanwhile are dropped and the show goes on.  In a render (no live audio), frames are sent
at the video frame rate, so the receiver sees the video play in real time.
"""
from __future__ import annotations

import time

import numpy as np

from sgvis.errors import first_line

RETRY_S = 2.0


def opaque_rgba(frame: np.ndarray) -> np.ndarray:
    """An RGB uint8 frame as RGBA with alpha 255 (NDI, Spout and Syphon take four channels)."""
    rgba = np.empty((frame.shape[0], frame.shape[1], 4), np.uint8)
    rgba[..., :3] = frame
    rgba[..., 3] = 255
    return rgba


class StreamSink:
    what = "output"

    def __init__(self, target: str, context, open_sender):
        self.target, self.open_sender = target, open_sender
        self.width, self.height = context.size
        self.fps = float(context.fps)
        self.paced = context.live_audio_rate is None        # render: real time; live: as the show draws
        self.sender = open_sender()
        self.status = ""
        self.frames_sent = self.frames_dropped = self.failures = 0
        self._start = None
        self._paced_frames = 0
        self._retry_at = 0.0

    def convert(self, frame: np.ndarray) -> np.ndarray:
        return frame

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"{self.what} {self.target}: expected {self.width}x{self.height} RGB uint8 frames, "
                             f"got {frame.shape} {frame.dtype}")
        if self.paced:
            now = time.perf_counter()
            if self._start is None:
                self._start = now
            due = self._start + self._paced_frames / self.fps
            if due > now:
                time.sleep(due - now)
            elif now - due > 1.0 / self.fps:          # fell behind (a slow frame): no burst to catch up
                self._start, self._paced_frames = now, 0
            self._paced_frames += 1
        if self.sender is None and time.perf_counter() >= self._retry_at:
            try:
                self.sender = self.open_sender()
                self.status = ""
            except Exception:
                self._retry_at = time.perf_counter() + RETRY_S
        if self.sender is None:
            self.frames_dropped += 1
            return
        try:
            self.sender.send(np.ascontiguousarray(self.convert(frame)))
            self.frames_sent += 1
        except Exception as e:               # the receiver or device went away: show it, retry later
            self.failures += 1
            self.frames_dropped += 1
            self.status = f"{self.what} {self.target} lost ({first_line(e, 30)}) - retrying"
            self._drop_sender()
            self._retry_at = time.perf_counter() + RETRY_S

    def _drop_sender(self) -> None:
        sender, self.sender = self.sender, None
        if sender is not None:
            try:
                sender.close()
            except Exception:
                pass

    def close(self) -> None:
        self._drop_sender()

    def abort(self) -> None:
        self._drop_sender()
