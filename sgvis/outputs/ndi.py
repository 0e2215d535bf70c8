"""`--out ndi:NAME`: an NDI source called NAME on the local network (Resolume, TouchDesigner, OBS with
obs-ndi, vMix take it as a video input), through ndi-python (`import NDIlib`, its wheels bundle the NDI
runtime).  Frames go out as RGBX.  Creating a sender announces it by mDNS (multicast): never in tests."""
from __future__ import annotations

import numpy as np

from sgvis.errors import first_line
from sgvis.outputs import OutputUnavailable, SinkContext
from sgvis.outputs.stream import StreamSink, opaque_rgba

INSTALL = "pip install 'sgvis[vj]' (ndi-python)"


class NdiSender:
    """The OS boundary: one NDI sender taking RGBX frames (send, close)."""

    def __init__(self, name: str, width: int, height: int, fps: float):
        import NDIlib as ndi
        if not ndi.initialize():
            raise RuntimeError("the NDI runtime did not start (CPU without SSE4.2?)")
        self.ndi = ndi
        settings = ndi.SendCreate()
        settings.ndi_name = name
        self.sender = ndi.send_create(settings)
        if self.sender is None:
            ndi.destroy()
            raise RuntimeError("NDI could not create the sender")
        self.frame = ndi.VideoFrameV2()
        self.frame.FourCC = ndi.FOURCC_VIDEO_TYPE_RGBX
        rate = round(float(fps) * 1000)
        self.frame.frame_rate_N, self.frame.frame_rate_D = rate, 1000

    def send(self, rgbx: np.ndarray) -> None:
        self.frame.data = rgbx
        self.ndi.send_send_video_v2(self.sender, self.frame)

    def close(self) -> None:
        self.ndi.send_destroy(self.sender)
        self.ndi.destroy()


def make_sender(name: str, width: int, height: int, fps: float):
    return NdiSender(name, width, height, fps)


class NdiSink(StreamSink):
    what = "NDI"

    def convert(self, frame: np.ndarray) -> np.ndarray:
        return opaque_rgba(frame)


def open_ndi_sink(target: str, context: SinkContext) -> NdiSink:
    width, height = context.size

    def open_sender():
        return make_sender(target, width, height, float(context.fps))
    try:
        return NdiSink(target, context, open_sender)
    except ImportError:
        raise OutputUnavailable(f"--out ndi:{target} needs {INSTALL}") from None
    except Exception as e:
        raise OutputUnavailable(f"--out ndi:{target}: no NDI sender ({first_line(e, 80)}); needs {INSTALL}") \
            from None
