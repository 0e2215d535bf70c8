"""`--out spout:NAME`: a Spout sender called NAME (Windows; Resolume, TouchDesigner and OBS with the Spout2 plugin
take it as a video input), through SpoutGL (`import SpoutGL`, pybind11 bindings of the Spout SDK whose
Windows wheels carry the Spout library).  Frames go out as RGBA.

Every Spout call runs on one thread of the sender's own: Spout's OpenGL state belongs to the thread it was made
on and its DirectX immediate context is not thread-safe, so open, send and release all happen there, whichever
thread writes the frames (the show's thread in `live`, the encoder thread in `render`).  No OpenGL context of
sgvis is current on that thread, so Spout never changes the state of the live window's one.

Only this boundary was tested with the sender replaced (no Windows machine here): the real SpoutGL calls are
the documented ones (setSenderName, sendImage, releaseSender), not tried against a Spout receiver.
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from sgvis.errors import first_line
from sgvis.outputs import OutputUnavailable, SinkContext
from sgvis.outputs.stream import StreamSink, opaque_rgba

INSTALL = "pip install 'sgvis[vj]' (SpoutGL)"


def requirement() -> str:
    """What this machine needs for a Spout output (one line)."""
    return INSTALL if sys.platform == "win32" else f"Windows (Spout is Windows only) and {INSTALL}"


class SpoutSender:
    """The OS boundary: one Spout sender taking RGBA frames (send, close), driven from a thread of its own."""

    def __init__(self, name: str, width: int, height: int):
        self.name, self.width, self.height = name, int(width), int(height)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sgvis-spout")
        try:
            self.sender, self.rgba = self.worker.submit(self._open).result()
        except BaseException:
            self.worker.shutdown(wait=False)
            raise

    def _open(self):
        import SpoutGL
        from SpoutGL.enums import GL_RGBA
        sender = SpoutGL.SpoutSender()
        sender.setSenderName(self.name)
        return sender, GL_RGBA

    def _send(self, rgba: np.ndarray) -> None:
        # sendImage(pixels, width, height, format, invert, host framebuffer): rows top to bottom, not inverted.
        if not self.sender.sendImage(rgba, self.width, self.height, self.rgba, False, 0):
            raise RuntimeError("Spout refused the frame (it needs DirectX 11; see SpoutSettings)")

    def send(self, rgba: np.ndarray) -> None:
        self.worker.submit(self._send, rgba).result()

    def close(self) -> None:
        try:
            self.worker.submit(self.sender.releaseSender).result()
        finally:
            self.worker.shutdown(wait=True)


def make_sender(name: str, width: int, height: int):
    return SpoutSender(name, width, height)


class SpoutSink(StreamSink):
    what = "Spout"

    def convert(self, frame: np.ndarray) -> np.ndarray:
        return opaque_rgba(frame)


def open_spout_sink(target: str, context: SinkContext) -> SpoutSink:
    width, height = context.size

    def open_sender():
        return make_sender(target, width, height)
    try:
        return SpoutSink(target, context, open_sender)
    except ImportError:
        raise OutputUnavailable(f"--out spout:{target} needs {requirement()}") from None
    except Exception as e:
        raise OutputUnavailable(f"--out spout:{target}: no Spout sender ({first_line(e, 80)}); needs "
                                f"{requirement()}") from None
