"""Outputs: where frames go.  Every output is a FrameSink, opened from a spec `NAME:TARGET` through SINKS:

    sink = open_sink("png:frames/", SinkContext(fps=30, size=(512, 512)))
    sink.write(frame)          # RGB uint8 [H, W, 3], once per video frame
    sink.close()               # finish: move the result into place
    # or sink.abort()          # remove everything this sink wrote

A sink writes to a temporary path and moves it into place on close(), so an interrupted run leaves nothing
half-written; it may only ever remove what it wrote itself.  Sinks that take sound implement write_audio().
`sgvis render --out SPEC` and `sgvis live --out SPEC` add sinks by name; adding one is a new module plus one
line in SINKS.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from sgvis.errors import UserError
from sgvis.registry import Registry


@runtime_checkable
class FrameSink(Protocol):
    def write(self, frame: np.ndarray) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


@dataclass
class SourceAudio:
    """The part of an audio file a render covers (muxed into video outputs).  `track`, when the render has
    decoded the range already (sgvis.audio.track.DecodedTrack), lets a sink take its samples instead of decoding
    the file again."""
    path: str
    start: float
    end: float
    sample_rate: int
    channels: int
    track: Any = None

    def blocks(self, rate: int, layout: str):
        """Float32 blocks [channels, n] of the range at `rate` and `layout` ("mono" | "stereo")."""
        if self.track is not None:
            return self.track.blocks(rate, layout)
        from sgvis.audio.decode import decode_blocks
        return decode_blocks(self.path, rate, layout, self.start, self.end)


@dataclass
class SinkContext:
    """What a sink factory gets besides its target."""
    fps: float
    size: tuple[int, int]                      # (width, height) of the frames
    overwrite: bool = False
    audio: SourceAudio | None = None           # render: the source audio to mux
    live_audio_rate: int | None = None         # live: sound arrives through write_audio() at this rate
    settings: dict = field(default_factory=dict)   # the render: section (crf, preset)
    inputs: tuple[str, ...] = ()               # files the run reads: an output must not replace them


class OutputUnavailable(UserError):
    """An output this machine cannot open (its package, driver or device is missing): one line naming what to
    install.  `sgvis live` warns and goes on without it; `sgvis render` stops."""


# name -> factory(target: str, context: SinkContext) -> FrameSink
SINKS = Registry("output", {
    "video": "sgvis.outputs.files:open_video_sink",
    "png": "sgvis.outputs.files:open_png_sink",
    "v4l2": "sgvis.outputs.virtualcam:open_virtualcam_sink",      # virtual camera (pyvirtualcam)
    "virtualcam": "sgvis.outputs.virtualcam:open_virtualcam_sink",  # the same; target auto on macOS/Windows
    "ndi": "sgvis.outputs.ndi:open_ndi_sink",                     # NDI sender (ndi-python)
    "spout": "sgvis.outputs.spout:open_spout_sink",               # Spout sender, Windows (SpoutGL)
    "syphon": "sgvis.outputs.syphon:open_syphon_sink",            # Syphon server, macOS (syphon-python)
})
FILE_SINKS = ("video", "png")      # outputs whose target is a path (checked before a show starts)


def parse_sink_spec(spec: str) -> tuple[str, str]:
    """`NAME:TARGET` (e.g. png:frames/, video:take2.mp4) -> (name, target)."""
    name, sep, target = spec.partition(":")
    if not sep or not name or not target:
        raise UserError(f"--out expects NAME:TARGET (outputs: {', '.join(SINKS.names())}), e.g. png:frames/; "
                        f"got {spec!r}")
    if name not in SINKS:
        raise UserError(f"--out {spec}: unknown output {name!r}; available: {', '.join(SINKS.names())}")
    return name, target


def check_sink_spec(spec: str, overwrite: bool, inputs=()) -> tuple[str, str]:
    """Check an output spec before anything is written (the run may first spend minutes loading and analysing):
    its name, and its target through the factory's `check_target(target, overwrite, inputs)` where it has one.
    Returns (name, target)."""
    name, target = parse_sink_spec(spec)
    check = getattr(SINKS.get(name), "check_target", None)
    if check is not None:
        check(target, overwrite, tuple(p for p in inputs if p))
    return name, target


def sink_target(sink) -> str:
    """Where a sink writes (a file or a folder), for messages."""
    return str(getattr(sink, "path", None) or getattr(sink, "directory", None) or "an output")


def open_sink(spec: str, context: SinkContext) -> FrameSink:
    name, target = parse_sink_spec(spec)
    return SINKS.create(name, target, context)


def open_sinks(specs, context: SinkContext) -> list:
    """Every output of a run, opened in order; if one cannot open, the ones already open are aborted."""
    sinks = []
    try:
        for spec in specs:
            sinks.append(open_sink(spec, context))
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    return sinks


def parse_size(text: str | None) -> tuple[int, int] | None:
    """--size WIDTHxHEIGHT or N -> (width, height); None stays None."""
    if text is None:
        return None
    try:
        if "x" in text.lower():
            w, h = text.lower().split("x")
            size = (int(w), int(h))
        else:
            size = (int(text), int(text))
    except ValueError:
        raise UserError(f"--size must be WIDTHxHEIGHT or one number, got {text!r}") from None
    if min(size) < 16 or max(size) > 8192:
        raise UserError(f"--size {text} is out of range (16-8192 pixels)")
    return size
