"""`--out v4l2:/dev/videoN` (also `--out virtualcam:auto`): a virtual camera other programs (OBS, Zoom,
TouchDesigner, Resolume) take as a webcam, through pyvirtualcam: v4l2loopback on Linux
(`sudo modprobe v4l2loopback devices=1 video_nr=10 card_label=sgvis exclusive_caps=1`), OBS's virtual camera on
macOS and Windows (target `auto`)."""
from __future__ import annotations

from sgvis.errors import first_line
from sgvis.outputs import OutputUnavailable, SinkContext
from sgvis.outputs.stream import StreamSink

INSTALL = ("pip install 'sgvis[vj]' (pyvirtualcam); on Linux also the v4l2loopback module "
           "(apt install v4l2loopback-dkms; sudo modprobe v4l2loopback), on macOS/Windows OBS Studio")


def make_camera(device: str | None, width: int, height: int, fps: float):
    """The OS boundary: a pyvirtualcam camera taking RGB frames (send, close)."""
    import pyvirtualcam
    return pyvirtualcam.Camera(width=width, height=height, fps=fps, device=device,
                               fmt=pyvirtualcam.PixelFormat.RGB)


class VirtualCamSink(StreamSink):
    what = "virtual camera"


def open_virtualcam_sink(target: str, context: SinkContext) -> VirtualCamSink:
    device = None if target in ("auto", "default") else target
    width, height = context.size

    def open_camera():
        return make_camera(device, width, height, float(context.fps))
    try:
        return VirtualCamSink(target, context, open_camera)
    except ImportError:
        raise OutputUnavailable(f"--out v4l2:{target} needs {INSTALL}") from None
    except Exception as e:
        raise OutputUnavailable(f"--out v4l2:{target}: no virtual camera ({first_line(e, 80)}); needs "
                                f"{INSTALL}") from None
