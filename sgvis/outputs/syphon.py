"""`--out syphon:NAME`: a Syphon server called NAME (macOS; Resolume, TouchDesigner, MadMapper, VDMX, OBS with
the Syphon client source take it as a video input), through syphon-python (`import syphon`, PyObjC bindings of
the Syphon framework, Metal backend).  Each frame is copied into one RGBA Metal texture, which is published.

Only this boundary was tested with the server replaced (no macOS machine here): the real calls are
syphon-python's documented ones (SyphonMetalServer, syphon.utils.raw.create_mtl_texture and
copy_bytes_to_mtl_texture, publish_frame_texture, stop), not tried against a Syphon client.
"""
from __future__ import annotations

import sys

import numpy as np

from sgvis.errors import first_line
from sgvis.outputs import OutputUnavailable, SinkContext
from sgvis.outputs.stream import StreamSink, opaque_rgba

INSTALL = "pip install 'sgvis[vj]' (syphon-python)"


def requirement() -> str:
    """What this machine needs for a Syphon output (one line)."""
    return INSTALL if sys.platform == "darwin" else f"macOS (Syphon is macOS only) and {INSTALL}"


class SyphonSender:
    """The OS boundary: one Syphon Metal server publishing RGBA frames (send, close)."""

    def __init__(self, name: str, width: int, height: int):
        import syphon
        from syphon.utils.raw import copy_bytes_to_mtl_texture, create_mtl_texture
        self.server = syphon.SyphonMetalServer(name)
        self.texture = create_mtl_texture(self.server.device, int(width), int(height))
        if self.texture is None:
            self.server.stop()
            raise RuntimeError("Metal could not make the frame texture")
        self.copy_to_texture = copy_bytes_to_mtl_texture

    def send(self, rgba: np.ndarray) -> None:
        # Rows top to bottom, as a Metal texture holds them: published without flipping.
        self.copy_to_texture(memoryview(rgba).cast("B"), self.texture)
        self.server.publish_frame_texture(self.texture, is_flipped=False)

    def close(self) -> None:
        self.server.stop()


def make_sender(name: str, width: int, height: int):
    return SyphonSender(name, width, height)


class SyphonSink(StreamSink):
    what = "Syphon"

    def convert(self, frame: np.ndarray) -> np.ndarray:
        return opaque_rgba(frame)


def open_syphon_sink(target: str, context: SinkContext) -> SyphonSink:
    width, height = context.size

    def open_sender():
        return make_sender(target, width, height)
    try:
        return SyphonSink(target, context, open_sender)
    except ImportError:
        raise OutputUnavailable(f"--out syphon:{target} needs {requirement()}") from None
    except Exception as e:
        raise OutputUnavailable(f"--out syphon:{target}: no Syphon server ({first_line(e, 80)}); needs "
                                f"{requirement()}") from None
