"""`sgvis live`: a live input steers the generator in a real-time OpenGL window (or offscreen, --headless).

Per loop iteration: take the audio captured since the last frame (ring buffer filled by the audio callback),
analyse it with the same causal features as `render`, step the same steering, generate the newest frame only
(nothing is queued, so stale work never piles up), draw it framed to the window by --fit (crop fills it,
letterbox keeps bars, stretch distorts) with the HUD, present, and record the frame (at --size, framed the same
way).  Every live parameter is a control on a thread-safe ControlBus (sgvis.control): keys and other
producers (--control NAME) send to it from any thread, and the show applies the changes between two frames.
"""
from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field

from sgvis.errors import UserError
from sgvis.steer import motion_style_of

# numpy, torch and the stages are imported when a show starts, not when the command line is parsed.

LIVE_DEFAULTS = {
    "live": {
        "fps": 60.0,              # frame-rate cap (0: as fast as possible)
        "vsync": True,            # wait for the display's refresh when presenting
        "blocksize": 256,         # audio callback size in frames (smaller: lower latency)
        "latency_offset": 0.0,    # seconds added to measured latency (known output/projector delay)
        "hud": False,             # start with the HUD shown
        "crossfade_s": 1.0,       # seconds a preset change or reseed blends the pictures
        "record_fps": 30.0,       # frame rate of --record videos
        "window": [1280, 720],    # initial window size
        # CPU threads for generating frames: a number, or auto.  auto on Linux: as many as the cores other
        # programs leave free (sgvis.live_load.ThreadGovernor), with OpenMP threads that spin briefly between
        # steps (prepare_openmp): on a 2-core CPU two threads then give 30-36 frames/s where one gives 22-25,
        # and one thread is back within half a second of another program taking a core.  Elsewhere, or with
        # OMP_WAIT_POLICY / GOMP_SPINCOUNT set by you: half the cores (BENCHMARKS.md, Live).
        "threads": "auto",
        # Under load (a shared CPU) the generator drops to a lower internal resolution while frames take longer
        # than latency_budget_ms from pulling their audio to showing them, and climbs back when there is room
        # (sgvis.live_load); the HUD says so.  false: always the full resolution, whatever the lag.
        "adapt": True,
        "latency_budget_ms": 70.0,
    },
}
LIVE_STAGES = ("analysis", "steering", "generation", "display")


@dataclass
class LiveJob:
    device: str = "mic"
    model: str | None = None
    seed: int = 0
    fps: float | None = None
    size: tuple[int, int] | None = None   # generated/recorded frame size (None: the model's resolution)
    fit: str | None = None                # crop | letterbox | stretch (window and frames); None: render.fit
    fullscreen: bool = False
    monitor: int = 0
    headless: bool = False
    duration: float | None = None
    record: str | None = None
    stats: str | None = None
    overwrite: bool = False
    channels: list[int] | None = None
    latency_offset: float | None = None
    steer: str | None = None              # steering mode; None: the config's steer.mode
    steering_path: str | None = None
    outputs: list = field(default_factory=list)     # extra sinks, NAME:TARGET (sgvis.outputs.SINKS)
    controls: list = field(default_factory=list)    # control producers by name (sgvis.control.PRODUCERS)
    backend: str = "stylegan"                       # the generator (sgvis.backends.BACKENDS)
    backend_options: dict = field(default_factory=dict)   # tempotokens: t2v, beats, mapper, prompt, steps, guidance
    control_options: dict = field(default_factory=dict)   # producer name -> its keyword arguments (--osc-port...)
    gpu: str = "auto"
    preset: str | None = None
    config_path: str | None = None
    overrides: list = field(default_factory=list)
    screenshot_dir: str = "."


# OpenMP's wait between parallel steps for the live show (GOMP_SPINCOUNT, busy-wait iterations; about 10-40 us):
# passive waiting (sgvis's default, see sgvis/__init__.py) puts the generator's threads to sleep after every one
# of a frame's hundreds of small steps, which at one frame per call cost more than a second thread gives.  Long
# spinning is what stalls a thread that shares its core (the ThreadGovernor keeps one thread then).
LIVE_SPIN_COUNT = 10000
_openmp_spin_set = False


def prepare_openmp() -> bool:
    """Before torch loads (the live command's first step), on Linux, unless the user set OMP_WAIT_POLICY or
    GOMP_SPINCOUNT: let OpenMP threads spin briefly between steps.  True when that is in effect."""
    import sys

    import sgvis
    global _openmp_spin_set
    if sgvis.OPENMP_WAIT_FROM_USER or not sys.platform.startswith("linux"):
        return False
    if "torch" not in sys.modules:
        os.environ["GOMP_SPINCOUNT"] = str(LIVE_SPIN_COUNT)
        _openmp_spin_set = True
    return _openmp_spin_set


def generation_threads(setting) -> int:
    """live.threads: a positive number, or "auto" (half the CPU cores, at least one)."""
    if setting in (None, "auto"):
        return max(1, (os.cpu_count() or 2) // 2)
    try:
        n = int(setting)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise UserError(f"live.threads must be a positive number or 'auto', got {setting!r}")
    return n


def show_sink_specs(job) -> list[str]:
    """The outputs of a show: --record (a video timed by the captured sound) and every --out."""
    return ([f"video:{job.record}"] if job.record else []) + list(job.outputs)


def open_show_sinks(specs: list[str], context) -> tuple[list, list[str], str]:
    """Open a show's outputs -> (sinks, the specs that could not open here, the last reason): an output this
    machine cannot open is one warning line at start, and the show goes on without it."""
    import sys

    from sgvis.outputs import OutputUnavailable, open_sink
    sinks, unavailable, reason = [], [], ""
    for spec in specs:
        try:
            sinks.append(open_sink(spec, context))
        except OutputUnavailable as e:
            print(f"sgvis: warning: {e}", file=sys.stderr)
            unavailable.append(spec)
            reason = str(e)
    return sinks, unavailable, reason


def save_screenshot(directory: str, frame, index: int) -> str:
    """A frame (uint8 [H, W, 3]) as sgvis-DATE-TIME-INDEX.png in `directory`; returns its path."""
    from PIL import Image
    path = os.path.join(directory, f"sgvis-{time.strftime('%Y%m%d-%H%M%S')}-{index}.png")
    Image.fromarray(frame).save(path)
    return path


@contextlib.contextmanager
def stop_signals_end_the_show(show):
    """While active, Ctrl-C, SIGTERM and SIGHUP set `show.running` to False instead of ending the process: the show
    then ends between two frames, its recording and other outputs finished and kept, as with Esc. Yields
    {"flag", "signal"}: whether a signal ended the show, and the first one. The handlers before are restored
    afterwards; outside the main thread (where handlers cannot be set) nothing changes."""
    interrupted = {"flag": False, "signal": None}

    def stop(signum, frame):
        interrupted["flag"] = True
        interrupted["signal"] = interrupted["signal"] or int(signum)
        show.running = False

    signals = [signal.SIGINT] + [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    try:
        previous = {sig: signal.signal(sig, stop) for sig in signals}
    except ValueError:
        previous = {}
    try:
        yield interrupted
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _percentiles(values, qs=(50, 95)):
    import numpy as np
    if not values:
        return {f"p{q}": None for q in qs}
    arr = np.asarray(values) * 1000.0
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs}


class LiveShow:
    def __init__(self, job: LiveJob):
        self._created = time.perf_counter()     # for time_to_first_frame_s
        self.first_frame = None
        import torch
        from sgvis.features.analysis import FeatureExtractor, MelConfig
        from sgvis.config import load_config, presets
        from sgvis.backends.stylegan import pick_device
        from sgvis.render import RENDER_DEFAULTS
        from sgvis.outputs.files import check_output_path
        from sgvis.steer import make_steering
        self.job = job
        defaults = {**RENDER_DEFAULTS, **LIVE_DEFAULTS}
        self.config = load_config(job.preset, job.config_path, job.overrides, defaults=defaults)
        self.lcfg = self.config["live"]
        from sgvis.render import check_render_settings
        self.config["render"] = check_render_settings(self.config["render"])
        from sgvis.control.presets import user_presets
        self.shipped_presets = presets()
        self.presets = self.shipped_presets + user_presets(self.shipped_presets)
        self.base_preset = job.preset            # the shipped preset the settings come from (saved with a preset)
        from sgvis.outputs import check_sink_spec
        for spec in show_sink_specs(job):        # file outputs are checked before the show; a stream that cannot
            check_sink_spec(spec, job.overwrite, inputs=(job.model, job.steering_path))   # open only warns
        if job.stats:
            check_output_path(job.stats, job.overwrite, inputs=(job.model,))
        from sgvis.outputs.framing import check_fit
        self.fit = check_fit(job.fit) if job.fit is not None else check_fit(self.config["render"].get("fit"),
                                                                             "render.fit")
        self.device = pick_device(job.gpu, flag="--compute")
        self._threads_before = torch.get_num_threads()      # restored when the show ends
        self.thread_governor = None
        self.fixed_threads = None                           # the generator's threads where no governor sets them
        if self.device.type == "cpu":
            torch.set_num_threads(generation_threads(self.lcfg["threads"]))
            self.fixed_threads = torch.get_num_threads()
            if self.lcfg["threads"] in (None, "auto") and _openmp_spin_set:
                from sgvis.backends.tuning import usable_cores
                from sgvis.live_load import ThreadGovernor
                governor = ThreadGovernor(max_threads=usable_cores())
                if governor.available:
                    self.thread_governor = governor
                    self.fixed_threads = None
                    torch.set_num_threads(governor.threads)
        from sgvis.outputs.files import even
        size = None if job.size is None else (even(job.size[0]), even(job.size[1]))
        from sgvis.backends import BACKENDS
        self.generator = BACKENDS.create(job.backend, model=job.model, device=str(self.device),
                                         precision=self.config["render"]["precision"], size=size, fit=self.fit)
        self.G = self.generator.latent_model
        if job.steer:
            self.config.setdefault("steer", {})["mode"] = job.steer
        self._make_steering = lambda cfg, seed: make_steering(
            self.generator, cfg.get("steer", {}), seed=seed, learned_path=job.steering_path)
        try:
            self.steering = self._make_steering(self.config, job.seed)
        except (ValueError, FileNotFoundError) as e:
            raise UserError(str(e).splitlines()[0]) from None
        self.seed = job.seed
        from sgvis.steer.motion import MotionDriver
        self.motion = MotionDriver(self.config.get("motion"), seed=job.seed)
        self.generator.bend_resolution = int(self.motion.cfg["bend"]["resolution"])
        from sgvis.backends.look import Look
        from sgvis.backends.stylegan import is_builtin_model
        self.look = Look(self.config.get("look"), builtin_model=is_builtin_model(job.model))
        self.generator.look = self.look
        self.move = None
        self.governor = None
        adapt, budget = self.lcfg["adapt"], self.lcfg["latency_budget_ms"]
        if not isinstance(adapt, bool):
            raise UserError(f"live.adapt must be true or false, got {adapt!r}")
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 5 <= budget <= 1000:
            raise UserError(f"live.latency_budget_ms must be a number from 5 to 1000, got {budget!r}")
        if adapt and getattr(self.generator, "supports_draft", False):
            from sgvis.live_load import LoadGovernor
            self.governor = LoadGovernor(self.G.img_resolution, float(budget))
        from sgvis.control import PRODUCERS, ControlBus, standard_controls
        from sgvis.control.keys import KeyControls
        steer_cfg = self.config.get("steer", {})
        self.bus = ControlBus(standard_controls(
            presets=self.presets, intensity=float(steer_cfg.get("intensity", 1.0)),
            truncation=float(getattr(self.steering, "psi", 1.0) or 1.0),
            crossfade_s=float(self.lcfg["crossfade_s"]), hud=bool(self.lcfg["hud"]),
            look_contours=self.look.contours))
        self.keys = KeyControls()
        self.keys.start(self.bus)
        self.producers = [PRODUCERS.create(name, **job.control_options.get(name, {})) for name in job.controls]
        from sgvis.control.tempo import TempoClock
        self.tempo_clock = TempoClock()      # tap tempo / set BPM; replaces the tracker's beat while it has one
        for producer in self.producers:      # a shared beat (--link: Ableton Link) goes before taps and a set BPM
            if hasattr(producer, "tempo_and_beat"):
                self.tempo_clock.follow(producer)
        self.mel = self.steering.mel_config or MelConfig()     # the features the steering was made for
        self.extractor = FeatureExtractor(self.mel)
        self.input = self._open_input()
        self.frame_size = self.generator.output_size
        self.surface = None
        self.renderer = None
        self.sinks = []                 # --record and --out outputs: FrameSinks (sgvis.outputs)
        self.unavailable_outputs: list[str] = []     # --out outputs this machine cannot open (warned at start)
        self.running = True
        self.message = ""
        self.upload_path = None
        # measurements
        self.frames_shown = 0
        self.frame_times: list[float] = []
        self.stage_times: dict[str, list[float]] = {name: [] for name in LIVE_STAGES}
        self.latencies: list[float] = []
        self.ready_latencies: list[float] = []
        self.dropped = 0
        self._last_period = None
        self.disconnects = 0
        self.reconnects = 0
        self._was_connected = True
        self.frames_recorded = 0
        self.samples_lost = 0
        self.screenshots: list[str] = []
        self._read_pos = 0
        self._resampler = None
        self._analysed_samples = 0
        self._last_reconnect = 0.0
        self._next_hud = 0.0

    # -- audio -----------------------------------------------------------------------------------
    def _open_input(self):
        from sgvis.audio import open_live_source
        return open_live_source(self.job.device, channels=self.job.channels, blocksize=int(self.lcfg["blocksize"]))

    def _pull_audio(self):
        """New captured samples (mono, device rate) and the capture time of the newest one."""
        import numpy as np
        ring = self.input.ring
        data, self._read_pos, lost = ring.read_since(self._read_pos)
        captured = ring.write_time - getattr(self.input, "input_latency", 0.0)
        if lost:     # overwritten before it was read: keep the timeline with silence in its place
            self.samples_lost += lost
            return np.concatenate([np.zeros(lost, np.float32), data[:, 0]]), captured
        return data[:, 0], captured

    def _analyse(self, samples, rate: int) -> None:
        if self._resampler is None or self._resampler.rate_in != rate:
            from sgvis.audio import StreamResampler
            self._resampler = StreamResampler(rate, self.mel.sample_rate)
        for block in self._resampler.push(samples):
            self.extractor.push(block)
            self._analysed_samples += len(block)

    # -- controls (keys and other producers send to self.bus; applied here, between two frames) ----------
    @property
    def frozen(self) -> bool:
        return bool(self.bus.get("freeze"))

    @property
    def hud_on(self) -> bool:
        return bool(self.bus.get("hud"))

    @property
    def intensity(self) -> float:
        return float(self.bus.get("intensity"))

    def act(self, name: str, value=None) -> bool:
        """Send one control from the show's own thread and apply it now (bools toggle without a value)."""
        control = self.bus.controls.get(name)
        if control is not None and control.kind == "bool" and value is None:
            sent = self.bus.toggle(name, "api")
        else:
            sent = self.bus.send(name, value, "api")
        self.apply_controls()
        return sent

    def set_intensity(self, value: float) -> None:
        self.act("intensity", value)

    def apply_controls(self) -> None:
        events = self.bus.drain()
        for event in events:
            self._apply(event.name, event.value)
        presets = [i for i, e in enumerate(events) if e.name == "preset"]
        if presets:      # a preset set controls on the bus; values sent after it in this batch are the ones applied
            for event in events[presets[-1] + 1:]:
                if event.name in self.bus.controls and self.bus.controls[event.name].kind != "trigger":
                    self.bus.set_quietly(event.name, event.value)

    def _apply(self, name: str, value) -> None:
        if name == "reseed":
            self.seed += 1
            self._crossfade_to(self._make_steering(self.config, self.seed))
            self.message = f"seed {self.seed}"
        elif name == "preset":
            from sgvis.config import load_config
            from sgvis.control.presets import load_preset
            from sgvis.render import RENDER_DEFAULTS
            base, saved = (value, None) if value in self.shipped_presets else load_preset(value)
            self.base_preset = base
            config = load_config(base, None, [], defaults={**RENDER_DEFAULTS, **LIVE_DEFAULTS})
            config.setdefault("steer", {})["mode"] = self.config.get("steer", {}).get("mode", "auto")
            self.config = config
            self._crossfade_to(self._make_steering(self.config, self.seed))
            intensity = float(self.config.get("steer", {}).get("intensity", 1.0))
            self.bus.set_quietly("intensity", intensity, "preset")      # the new steering has it already
            for control, saved_value in (saved or {}).items():          # a user preset: its controls
                if control in self.bus.controls and self.bus.set_quietly(control, saved_value, "preset"):
                    self._apply(control, self.bus.get(control))
            self.message = f"preset {value}"
        elif name == "preset.save":
            from sgvis.control.presets import next_free_name, save_preset
            preset = value or next_free_name(self.presets)
            if preset in self.shipped_presets:
                self.message = f"preset {preset} is shipped: save under another name"
                return
            save_preset(preset, self.base_preset, self.bus.values())
            if preset not in self.presets:
                self.presets.append(preset)
                self.bus.add_choice("preset", preset)
            self.message = f"saved preset {preset}"
        elif name == "tap":
            self.bus.send("tempo", round(self.tempo_clock.tap(time.perf_counter()), 3), "tap")
        elif name == "tempo":
            self.tempo_clock.set_bpm(value, time.perf_counter())
        elif name == "screenshot":
            self.screenshot()
        elif name == "fullscreen":
            if hasattr(self.surface, "toggle_fullscreen"):
                self.surface.toggle_fullscreen()
        elif name == "quit":
            self.running = False
        elif name in ("freeze", "hud", "crossfade"):
            pass                       # read from the bus where they are used
        elif name.startswith("motion."):
            self.motion.apply_control(name, value)
        elif name.startswith("look."):
            self.look.apply_control(name, value)
        else:
            self.steering.apply_control(name, value)
            if name == "intensity":
                self.config.setdefault("steer", {})["intensity"] = float(value)
                self.message = f"intensity {float(value):.2f}"

    def _crossfade_to(self, steering) -> None:
        """Switch steering without a jump: live controls carry over and the pictures blend for `crossfade` s."""
        from sgvis.steer import Crossfade
        values = self.bus.values()
        for name in ("speed", "truncation", "groups.coarse", "groups.mid", "groups.fine"):
            if values.get(name) != self.bus.controls[name].default:
                steering.apply_control(name, values[name])
        current = self.steering.target if isinstance(self.steering, Crossfade) else self.steering
        self.steering = Crossfade(current, steering, float(values["crossfade"]))

    def on_key(self, key: int, action: int) -> None:
        """glfw key callback: the key's name goes to the KeyControls producer."""
        import glfw
        if action not in (glfw.PRESS, glfw.REPEAT):
            return
        name = None
        for candidate in ("SPACE", "UP", "DOWN", "LEFT", "RIGHT", "ESCAPE"):
            if key == getattr(glfw, f"KEY_{candidate}"):
                name = candidate
        if name is None and glfw.KEY_A <= key <= glfw.KEY_Z:
            name = chr(ord("A") + key - glfw.KEY_A)
        if name is None and glfw.KEY_0 <= key <= glfw.KEY_9:
            name = str(key - glfw.KEY_0)
        if name is not None and self.keys.press(name):
            self.apply_controls()

    @property
    def last_frame(self):
        t = getattr(self, "_last_frame_tensor", None)
        return None if t is None else t.cpu().numpy()

    def screenshot(self) -> str | None:
        if self.last_frame is None:
            return None
        path = save_screenshot(self.job.screenshot_dir, self.last_frame, self.frames_shown)
        self.screenshots.append(path)
        self.message = f"saved {path}"
        return path

    # -- the show --------------------------------------------------------------------------------
    def _open_surface(self):
        from sgvis.outputs.display import HeadlessSurface, Renderer, WindowSurface
        if self.job.headless:
            self.surface = HeadlessSurface(self.frame_size)
        else:
            size = tuple(int(v) for v in self.lcfg["window"])
            self.surface = WindowSurface(size, title="sgvis", fullscreen=self.job.fullscreen,
                                         monitor=self.job.monitor, vsync=bool(self.lcfg["vsync"]),
                                         on_key=self.on_key)
        self.renderer = Renderer(self.surface.ctx, self.frame_size, gpu_frames=self.device.type == "cuda",
                                 fit=self.fit)

    def _open_sinks(self):
        from sgvis.outputs import SinkContext
        context = SinkContext(fps=float(self.lcfg["record_fps"]), size=self.frame_size,
                              overwrite=self.job.overwrite, live_audio_rate=self.input.sample_rate,
                              settings=self.config["render"], inputs=tuple(p for p in (self.job.model,) if p))
        sinks, self.unavailable_outputs, reason = open_show_sinks(show_sink_specs(self.job), context)
        self.sinks.extend(sinks)
        if reason:
            self.message = reason

    def _close_sinks(self, finished: bool) -> None:
        """Finish every sink (after an error too: what was recorded so far is kept, finalised)."""
        for i, sink in enumerate(self.sinks):
            try:
                sink.close()
            except Exception:
                sink.abort()
                if finished:
                    raise
            if i == 0 and self.job.record:
                self.frames_recorded = sink.frames_written
        self.sinks = []

    def hud_lines(self, now: float) -> list[str]:
        import numpy as np
        recent = self.frame_times[-60:]
        fps = len(recent) / sum(recent) if recent and sum(recent) > 0 else 0.0
        lat = _percentiles(self.latencies[-120:])
        connected = self.input.connected
        lines = [f"fps {fps:5.1f}  frame {1000 * np.mean(recent) if recent else 0:5.1f} ms",
                 f"latency p50 {lat['p50'] or 0:5.1f} ms  p95 {lat['p95'] or 0:5.1f} ms",
                 f"xruns {self.input.xruns}  input {self.input.device_name[:28]}"
                 + ("" if connected else "  LOST - reconnecting"),
                 f"{self.generator.description[:60]}",
                 *([f"{self.generator.tuning['choice']} ({self.generator.tuning.get('basis', 'measured')})"]
                   if getattr(self.generator, "tuning", None) else []),
                 f"intensity {self.intensity:.2f}  seed {self.seed}" + ("  FROZEN" if self.frozen else "")]
        for part in self.producers + self.sinks:         # an unplugged controller or a lost output
            if getattr(part, "status", ""):
                lines.append(part.status[:60])
        for governor in (self.thread_governor, self.governor):
            if governor is not None and governor.message:
                lines.append(governor.message[:60])
        if self.message:
            lines.append(self.message[:60])
        return lines

    def step(self) -> None:
        import numpy as np
        import torch
        t0 = time.perf_counter()
        connected = self.input.connected
        if not connected and self._was_connected:
            self.disconnects += 1
            self.message = "input lost - reconnecting"
        self._was_connected = connected
        if not connected and t0 - self._last_reconnect > 1.0:
            self._last_reconnect = t0
            if self.input.try_reconnect():
                self.reconnects += 1
                self._was_connected = True
                self.message = "input reconnected"
        if self.governor is not None:
            self.generator.draft_resolution = self.governor.draft
        samples, captured = self._pull_audio()
        rate = self.input.sample_rate
        if not self.input.connected:
            # Keep time moving with silence so the imagery idles instead of freezing.
            gap = int(max(0.0, (t0 - getattr(self, "_last_step", t0))) * rate)
            samples = np.zeros(gap, np.float32)
            captured = t0
        self._last_step = t0
        for sink in self.sinks:
            if hasattr(sink, "write_audio"):
                sink.write_audio(samples)
        self._analyse(samples, rate)
        features = self.extractor.at(self._analysed_samples / self.mel.sample_rate)
        t_analysed = time.perf_counter()
        self.apply_controls()
        features = self.tempo_clock.features(features, t0)
        for listener in self.producers:                  # --osc-out and others that follow the analysis
            if hasattr(listener, "on_features"):
                listener.on_features(features)
        if not self.frozen:
            self.ws = self.steering.step(features)
            if getattr(self.steering, "done", False):      # a finished cross-fade: keep its target alone
                self.steering = self.steering.target
            move = self.motion.step(features, **motion_style_of(self.steering))
            self.move = torch.from_numpy(np.concatenate([move["bend"], move["camera"]])).float()[None]
        on_gpu = self.device.type == "cuda"
        t_steered = time.perf_counter()
        frames = self.generator.frames(self.ws[None], keep_on_device=on_gpu, motion=self.move)
        if on_gpu:
            torch.cuda.current_stream().synchronize()
        t_ready = time.perf_counter()
        self.surface.begin()
        self.upload_path = self.renderer.upload(frames[0])
        frame = frames[0].cpu().numpy() if self.sinks else None
        self._last_frame_tensor = frames[0]
        if self.hud_on and t0 >= self._next_hud:
            from sgvis.outputs.display import hud_image
            self.renderer.set_hud(hud_image(self.hud_lines(t0)))
            self._next_hud = t0 + 0.25
        elif not self.hud_on:
            self.renderer.set_hud(None)
        w, h = self.surface.framebuffer_size()
        self.renderer.draw(w, h)
        self.surface.present()
        t_shown = time.perf_counter()
        for name, dt in zip(LIVE_STAGES, (t_analysed - t0, t_steered - t_analysed, t_ready - t_steered,
                                          t_shown - t_ready)):
            self.stage_times[name].append(dt)
        if self.governor is not None:
            self.governor.update(t_shown - t0, self._last_period)
        if self.thread_governor is not None:
            threads = self.thread_governor.threads
            if self.thread_governor.update(t_shown) != threads:
                torch.set_num_threads(self.thread_governor.threads)
        offset = float(self.job.latency_offset if self.job.latency_offset is not None else self.lcfg["latency_offset"])
        if self.input.connected and captured > 0:
            self.latencies.append(t_shown - captured + offset)
            self.ready_latencies.append(t_ready - captured)
        self.frames_shown += 1
        if self.first_frame is None:
            self.first_frame = t_shown - self._created
        for sink in self.sinks:
            sink.write(frame)
        self.surface.poll()
        cap = float(self.job.fps if self.job.fps is not None else self.lcfg["fps"])
        if cap > 0:
            wait = (t0 + 1.0 / cap) - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        elapsed = time.perf_counter() - t0
        if cap > 0 and elapsed > 1.5 / cap:
            self.dropped += 1
        self.frame_times.append(elapsed)
        self._last_period = elapsed

    def run(self) -> dict:
        started = time.perf_counter()
        with stop_signals_end_the_show(self) as interrupted:
            self._run_frames(started)
        return self._stats(started, interrupted)

    def _run_frames(self, started: float) -> None:
        import torch
        try:
            self._open_surface()
            self._open_sinks()
            for producer in self.producers:
                producer.start(self.bus)
            self.ws = self.steering.step(self.extractor.at(0.0))
            self._read_pos = self.input.ring.written     # start from now: drop audio captured during start-up
            while self.running:
                if self.surface.should_close:
                    break
                if self.job.duration is not None and time.perf_counter() - started >= self.job.duration:
                    break
                if getattr(self.input, "finished", False):
                    break
                try:
                    self.step()
                except RuntimeError as e:
                    if "out of memory" in str(e).lower():
                        raise UserError("the GPU ran out of memory generating frames; use a smaller model, "
                                        "--gpu cpu, or close other GPU programs") from None
                    raise
            self._close_sinks(finished=True)
        finally:
            for producer in self.producers:
                producer.stop()
            self._close_sinks(finished=False)
            self.input.close()
            if self.surface is not None:
                self.surface.close()
            torch.set_num_threads(self._threads_before)

    def _stats(self, started: float, interrupted: dict) -> dict:
        wall = time.perf_counter() - started
        stats = {
            "frames_shown": self.frames_shown, "seconds": wall,
            "frames_per_second": self.frames_shown / wall if wall > 0 else None,
            "time_to_first_frame_s": self.first_frame,
            "frame_time_ms": _percentiles(self.frame_times),
            # where a frame's time goes: audio in + analysis, steering + motion + controls, generation (synthesis,
            # look, framing, uint8), display (upload, HUD, draw, present)
            "stage_ms": {name: _percentiles(times) for name, times in self.stage_times.items()},
            "adapt": None if self.governor is None else self.governor.report(),
            "threads": (self.thread_governor.report() if self.thread_governor is not None
                        else {"fixed": self.fixed_threads}),
            "latency_ms": _percentiles(self.latencies),
            "audio_to_frame_ready_ms": _percentiles(self.ready_latencies),
            "xruns": int(self.input.xruns), "samples_lost": self.samples_lost, "dropped_frames": self.dropped,
            "input_disconnects": self.disconnects, "input_reconnects": self.reconnects,
            "device": self.input.device_name, "model": getattr(self.G, "source", {}).get("path"),
            "generator": self.generator.description, "headless": self.job.headless,
            "generator_tuning": getattr(self.generator, "tuning", None),
            "resolution": list(self.frame_size), "fit": self.fit,
            "frame_upload": self.upload_path,
            "recorded_frames": self.frames_recorded, "record": self.job.record, "interrupted": interrupted["flag"],
            "signal": interrupted["signal"],
            "screenshots": self.screenshots, "outputs": list(self.job.outputs),
            "unavailable_outputs": self.unavailable_outputs,
            "controls": self.bus.report(),
            "producers": {name: p.report() for name, p in zip(self.job.controls, self.producers)
                          if hasattr(p, "report")},
        }
        if self.job.stats:
            from stylegan.atomic import write_json_atomically
            write_json_atomically(self.job.stats, stats)
        return stats


def cmd_live(args) -> int:
    channels = None
    if args.channels:
        try:
            channels = [int(c) for c in args.channels.split(",")]
        except ValueError:
            raise UserError(f"--channels takes channel numbers like 1 or 1,2; got {args.channels!r}") from None
    from sgvis.config import load_config
    from sgvis.steer import choose_steering
    from sgvis.render import RENDER_DEFAULTS
    settings = load_config(args.preset, args.config, args.set or [], defaults={**RENDER_DEFAULTS, **LIVE_DEFAULTS})
    mode, args.steering = choose_steering(args.steer, args.steering, settings, args.model)
    from sgvis.outputs import parse_size
    job = LiveJob(device=args.device, model=args.model, seed=args.seed, fps=args.fps, size=parse_size(args.size),
                  fit=args.fit, fullscreen=args.fullscreen,
                  monitor=args.monitor, headless=args.headless, duration=args.duration, record=args.record,
                  stats=args.stats, overwrite=args.overwrite, channels=channels, latency_offset=args.latency_offset,
                  steer=mode, steering_path=args.steering, outputs=args.out or [], controls=args.control or [],
                  backend=args.backend, gpu=args.gpu, preset=args.preset,
                  config_path=args.config, overrides=args.set or [])
    from sgvis.control.cli import producer_options
    job.controls, job.control_options = producer_options(args, job.controls)
    from sgvis.backends import diffusion_options
    job.backend_options = diffusion_options(args, job.backend)
    if job.backend == "tempotokens":
        if job.controls:
            raise UserError("remote control (--osc-port, --midi, --link) works with the stylegan backend only")
        from sgvis.live_diffusion import DiffusionShow
        stats = DiffusionShow(job).run()
        print(f"shown {stats['frames_shown']} frames in {stats['seconds']:.1f}s from {stats['windows_generated']} "
              f"windows ({stats['seconds_per_window'] or float('nan'):.1f} s per {stats['window_seconds']:g} s "
              f"window); latency p50 {(stats['latency_ms']['p50'] or float('nan')) / 1000:.1f} s")
        return 128 + stats["signal"] if stats["interrupted"] else 0
    show = LiveShow(job)
    stats = show.run()
    lat = stats["latency_ms"]
    print(f"shown {stats['frames_shown']} frames in {stats['seconds']:.1f}s ({stats['frames_per_second']:.1f} fps); "
          f"latency p50 {lat['p50'] or float('nan'):.0f} ms, p95 {lat['p95'] or float('nan'):.0f} ms; "
          f"xruns {stats['xruns']}")
    # Like every command: 128 + the signal that ended the show (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).
    return 128 + stats["signal"] if stats["interrupted"] else 0


def cmd_devices(args) -> int:
    from sgvis.audio.live_input import describe_devices
    print(describe_devices())
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("live", help="live audio steers the generator in a real-time window",
                              description="Live visuals: audio from a microphone/interface (or a file played to the "
                                          "speakers) steers the generator; keys: space freeze, R reseed, arrows "
                                          "intensity, 1-9 presets, P save a preset, T tap tempo, "
                                          "S screenshot, H HUD, F fullscreen, Esc/Q quit.")
    p.add_argument("--device", default="mic", help="mic (default input), an input's index or name substring, or "
                                                   "file:track.wav to play a file and react to it")
    p.add_argument("--channels", help="input channel numbers to mix, e.g. 3 or 1,2 (default 1)")
    p.add_argument("--model", help="StyleGAN checkpoint (default: the model shipped with sgvis)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=float, help="frame-rate cap (default 60; 0 = uncapped)")
    p.add_argument("--size", help="frame size WIDTHxHEIGHT or N: what is generated, recorded (--record, --out) and "
                                  "drawn headless (default: the model's resolution); rounded up to even numbers")
    p.add_argument("--fit", metavar="MODE",
                   help="how a picture fills a window or --size of another aspect: crop (default: fills it, the "
                        "overflow cut evenly), letterbox (black bars) or stretch (distorts); setting render.fit")
    p.add_argument("--fullscreen", action="store_true", help="fullscreen on --monitor")
    p.add_argument("--monitor", type=int, default=0, help="monitor index for --fullscreen (0 = primary)")
    p.add_argument("--headless", action="store_true", help="render offscreen (EGL), no window")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--record", help="record what is shown, with the captured audio, to this .mp4")
    p.add_argument("--out", action="append", metavar="NAME:TARGET",
                   help="also send what is shown to an output, e.g. png:frames/, video:take.mkv, v4l2:/dev/video10 "
                        "(virtual camera), ndi:NAME, spout:NAME (Windows) or syphon:NAME (macOS) (repeatable)")
    p.add_argument("--control", action="append", metavar="NAME",
                   help="start a control producer (remote control) by name (repeatable); keys always work in a window")
    from sgvis.control.cli import add_live_arguments
    add_live_arguments(p)
    p.add_argument("--stats", help="write frame/latency statistics as JSON on exit")
    p.add_argument("--latency-offset", type=float, help="seconds to add to measured latency (known output delay)")
    p.add_argument("--steer", metavar="MODE",
                   help="steering mode: reactive, learned, or auto (learned when --steering is given); "
                        "default: the config's steer.mode")
    p.add_argument("--backend", default="stylegan", help="the generator: stylegan (default) or tempotokens (audio-"
                                                         "conditioned diffusion, in 2 s windows: docs/diffusion.md)")
    from sgvis.backends import add_diffusion_arguments
    add_diffusion_arguments(p)
    p.add_argument("--steering", help="learned-steering checkpoint for --steer learned (default with the built-in model: its built-in checkpoint)")
    p.add_argument("--preset", help="settings preset from configs/")
    p.add_argument("--config", help="YAML settings file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one setting (repeatable)")
    p.add_argument("--compute", "--gpu", dest="gpu", default="auto", metavar="DEVICE",
                   help="where frames are generated: auto (default), cpu or cuda (--device is the audio input)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --record file")
    p.set_defaults(func=cmd_live)
    d = subparsers.add_parser("devices", help="list audio input devices")
    d.set_defaults(func=cmd_devices)
