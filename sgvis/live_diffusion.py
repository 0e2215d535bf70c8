"""`sgvis live --backend tempotokens`: live audio into the diffusion backend, shown as it comes.

A diffusion model makes a window of frames at a time (2 s: 24 frames at 12 fps) from a window of sound, so live it
works in windows: a generation thread takes the newest 2 s the input has captured, renders them (the mapper's local
windows over past frames only: `TempoMapper.causal`), and hands the frames over; the display shows the newest
window's frames at the native frame rate and holds the last one until the next window is ready. The picture
continues across windows: each new window carries the last frames of the previous one (see
`TempoTokensBackend.live_window`), and those carried frames are not shown twice.

What this costs is shown, not hidden: a window's audio is at least `window_seconds` old when its first frame
appears, plus the time the window took to make. The HUD shows the seconds per window, the frames per second that
the generation sustains and the latency; `--stats` reports them. On a CPU with real models that is minutes per
window; docs/diffusion.md says what a real-time path on a GPU needs.
"""
from __future__ import annotations

import os
import threading
import time

import numpy as np

from sgvis.errors import UserError


class DiffusionShow:
    def __init__(self, job):
        self._created = time.perf_counter()
        from sgvis.backends import BACKENDS
        from sgvis.backends.stylegan import pick_device
        from sgvis.config import load_config
        from sgvis.live import LIVE_DEFAULTS, show_sink_specs
        from sgvis.outputs import check_sink_spec
        from sgvis.outputs.files import check_output_path, even
        from sgvis.render import RENDER_DEFAULTS, check_render_settings
        self.job = job
        self.config = load_config(job.preset, job.config_path, job.overrides,
                                  defaults={**RENDER_DEFAULTS, **LIVE_DEFAULTS})
        self.lcfg = self.config["live"]
        self.config["render"] = check_render_settings(self.config["render"])
        for spec in show_sink_specs(job):
            check_sink_spec(spec, job.overwrite, inputs=tuple(v for v in job.backend_options.values()
                                                            if isinstance(v, str) and os.path.exists(v)))
        if job.stats:
            check_output_path(job.stats, job.overwrite)
        if job.model is not None:
            raise UserError("--model is a StyleGAN checkpoint; the tempotokens backend takes --t2v DIR instead")
        self.device = pick_device(job.gpu, flag="--compute")
        size = None if job.size is None else (even(job.size[0]), even(job.size[1]))
        self.backend = BACKENDS.create(job.backend, model=None, device=str(self.device),
                                       precision=self.config["render"]["precision"], size=size,
                                       **job.backend_options)
        self.backend.mapper.causal = True           # live: local windows over past frames only
        self.fps = float(self.backend.native_fps)
        self.window_s = float(self.backend.window_seconds)
        self.frame_size = self.backend.output_size
        from sgvis.audio import open_live_source
        self.input = open_live_source(job.device, channels=job.channels, blocksize=int(self.lcfg["blocksize"]))
        self.surface = self.renderer = None
        self.sinks: list = []
        self.unavailable_outputs: list[str] = []
        self.running = True
        self.message = ""
        self._lock = threading.Lock()
        self._ready = None                           # (frames [F, H, W, 3] uint8, capture time, done time, skip)
        self._error: BaseException | None = None
        self.window_seconds_taken: list[float] = []  # wall seconds per generated window
        self.latencies: list[float] = []
        self.frames_shown = 0
        self.windows_shown = 0
        self.first_frame = None
        self._last_frame = None
        self.screenshots: list[str] = []

    # -- generation (its own thread) ---------------------------------------------------------------------------
    def _generate(self) -> None:
        import torch
        from sgvis.audio import StreamResampler
        rate = self.backend.sample_rate
        need = int(round(self.window_s * rate))
        resampler = StreamResampler(self.input.sample_rate, rate)
        history = np.zeros(0, np.float32)
        position = self.input.ring.written
        generator = torch.Generator().manual_seed(int(self.job.seed))
        previous = None
        try:
            while self.running:
                data, position, lost = self.input.ring.read_since(position)
                captured = self.input.ring.write_time - getattr(self.input, "input_latency", 0.0)
                samples = data[:, 0]
                if lost:
                    samples = np.concatenate([np.zeros(lost, np.float32), samples])
                for block in resampler.push(samples):
                    history = np.concatenate([history, block])[-need:]
                if len(history) < need:                       # the first window waits for 2 s of sound
                    time.sleep(0.02)
                    continue
                started = time.perf_counter()
                frames, latents = self.backend.live_window(torch.from_numpy(history.copy()), generator, previous)
                done = time.perf_counter()
                skip = 0 if previous is None else min(self.backend.overlap, len(frames) - 1)
                previous = latents
                with self._lock:
                    self.window_seconds_taken.append(done - started)
                    self._ready = (frames.numpy(), captured, done, skip)
        except BaseException as e:       # noqa: BLE001 - handed to the display thread, which ends the show
            self._error = e

    # -- display ---------------------------------------------------------------------------------------------------
    def _open(self) -> None:
        from sgvis.live import open_show_sinks, show_sink_specs
        from sgvis.outputs import SinkContext
        from sgvis.outputs.display import HeadlessSurface, Renderer, WindowSurface
        if self.job.headless:
            self.surface = HeadlessSurface(self.frame_size)
        else:
            self.surface = WindowSurface(tuple(int(v) for v in self.lcfg["window"]), title="sgvis (tempotokens)",
                                         fullscreen=self.job.fullscreen, monitor=self.job.monitor,
                                         vsync=bool(self.lcfg["vsync"]), on_key=self._on_key)
        self.renderer = Renderer(self.surface.ctx, self.frame_size, gpu_frames=False, fit="letterbox")
        context = SinkContext(fps=self.fps, size=self.frame_size, overwrite=self.job.overwrite,
                              live_audio_rate=self.input.sample_rate, settings=self.config["render"], inputs=())
        self.sinks, self.unavailable_outputs, _ = open_show_sinks(show_sink_specs(self.job), context)

    def _on_key(self, key: int, action: int) -> None:
        import glfw
        if action != glfw.PRESS:
            return
        if key in (glfw.KEY_ESCAPE, glfw.KEY_Q):
            self.running = False
        elif key == glfw.KEY_S and self._last_frame is not None:
            from sgvis.live import save_screenshot
            self.screenshots.append(save_screenshot(self.job.screenshot_dir, self._last_frame, self.frames_shown))

    def hud_lines(self) -> list[str]:
        with self._lock:
            taken = list(self.window_seconds_taken[-5:])
        lat = self.latencies[-24:]
        if not taken:
            return [f"tempotokens: first window ({self.window_s:g}s of sound, then generating)",
                    f"{self.backend.description[:60]}"]
        per_window = float(np.mean(taken))
        frames = self.window_s * self.fps
        return [f"tempotokens: {per_window:.1f} s per {self.window_s:g}s window "
                f"({frames / per_window:.1f} of {self.fps:g} frames/s)",
                f"latency {np.median(lat) if lat else 0:.1f} s" + ("  (slower than real time)"
                                                                  if per_window > self.window_s else ""),
                f"{self.backend.description[:60]}"]

    def run(self) -> dict:
        from sgvis.live import stop_signals_end_the_show
        started = time.perf_counter()
        with stop_signals_end_the_show(self) as interrupted:
            self._show(started)
        return self._stats(started, interrupted)

    def _show(self, started: float) -> None:
        import torch
        from sgvis.outputs.display import hud_image
        current, index, next_at, shown_window = None, 0, 0.0, None
        next_hud = 0.0
        worker = None
        try:
            self._open()
            heard = self.input.ring.written                  # the recording's audio: everything from now on
            worker = threading.Thread(target=self._generate, name="sgvis-diffusion", daemon=True)
            worker.start()
            while self.running:
                now = time.perf_counter()
                if self.surface.should_close:
                    break
                if self.job.duration is not None and now - started >= self.job.duration:
                    break
                if getattr(self.input, "finished", False):
                    break
                if self._error is not None:
                    raise self._error
                data, heard, lost = self.input.ring.read_since(heard)
                if lost:
                    data = np.concatenate([np.zeros((lost, data.shape[1]), np.float32), data])
                for sink in self.sinks:                       # a recording is timed by the sound it holds
                    if hasattr(sink, "write_audio"):
                        sink.write_audio(data[:, 0])
                with self._lock:
                    ready = self._ready
                if ready is not None and ready is not shown_window:
                    current, shown_window, index = ready, ready, ready[3]
                    self.windows_shown += 1
                if current is not None and now >= next_at:
                    frames, captured, done, _ = current
                    frame = frames[min(index, len(frames) - 1)]
                    self.surface.begin()
                    self.renderer.upload(torch.from_numpy(frame))
                    if (not self.job.headless or bool(self.lcfg["hud"])) and now >= next_hud:
                        self.renderer.set_hud(hud_image(self.hud_lines()))
                        next_hud = now + 0.5
                    w, h = self.surface.framebuffer_size()
                    self.renderer.draw(w, h)
                    self.surface.present()
                    shown = time.perf_counter()
                    if index < len(frames):
                        # frame `index` stands for the sound at captured - window + index / fps
                        self.latencies.append(shown - (captured - self.window_s + (index + 1) / self.fps))
                    for sink in self.sinks:
                        sink.write(frame)
                    self._last_frame = frame
                    self.frames_shown += 1
                    if self.first_frame is None:
                        self.first_frame = shown - self._created
                    index += 1
                    next_at = max(next_at + 1.0 / self.fps, now)
                self.surface.poll()
                time.sleep(0.002)
            for sink in self.sinks:
                sink.close()
            self.sinks = []
        finally:
            self.running = False
            if worker is not None:
                worker.join(timeout=60)
            for sink in self.sinks:
                sink.abort()
            self.input.close()
            if self.surface is not None:
                self.surface.close()

    def _stats(self, started: float, interrupted: dict) -> dict:
        wall = time.perf_counter() - started
        lat = np.asarray(self.latencies) * 1000.0
        taken = self.window_seconds_taken
        stats = {
            "backend": self.backend.name, "frames_shown": self.frames_shown, "seconds": wall,
            "frames_per_second": self.frames_shown / wall if wall > 0 else None, "native_fps": self.fps,
            "window_seconds": self.window_s, "windows_generated": len(taken), "windows_shown": self.windows_shown,
            "seconds_per_window": float(np.mean(taken)) if taken else None,
            "generated_frames_per_second": (self.window_s * self.fps / float(np.mean(taken))) if taken else None,
            "latency_ms": {f"p{q}": (float(np.percentile(lat, q)) if len(lat) else None) for q in (50, 95)},
            "time_to_first_frame_s": self.first_frame, "xruns": int(self.input.xruns),
            "device": self.input.device_name, "generator": self.backend.description,
            "resolution": list(self.frame_size), "headless": self.job.headless, "record": self.job.record,
            "outputs": list(self.job.outputs), "unavailable_outputs": self.unavailable_outputs,
            "screenshots": self.screenshots, "interrupted": interrupted["flag"], "signal": interrupted["signal"],
        }
        if self.job.stats:
            from stylegan.atomic import write_json_atomically
            write_json_atomically(self.job.stats, stats)
        return stats
