"""`sgvis eval steering`: render test audio with several steerings, score every video, compare.

    sgvis eval steering heldout/ --steering reactive --steering learned --baselines --json report.json
    sgvis eval steering tests/audio/ --model net.pkl --steering reactive --steering runs/steer.safetensors \
        --size 128 --seconds 20

Each `--steering` (or `--steer`) is one column of the comparison:

* `reactive`: the training-free ReactiveSteering;
* `learned`: the built-in learned-steering checkpoint (for the built-in model only), as `render --steer learned`;
* `untrained`: a freshly initialised LearnedSteeringModel for the model's num_ws / w_dim (default MelConfig,
  weights seeded by --seed), saved to a temporary checkpoint so it runs through exactly the render path a
  trained checkpoint does.  Its output layers start at zero, so it gives w^ = w: a still image (the learned
  steering's drift, `steer.learned.drift`, is off for it);
* a path: a learned-steering checkpoint (.safetensors, from the steering trainer).

`--baselines` adds, per track, a still image (the render's first frame, held) and random motion (that picture
on a smooth random path that ignores the audio), see sgvis.eval.baselines.

Every track is rendered with `render(RenderJob(...))` (into a temporary folder unless --keep-videos), which
also writes its frames as PNG.  Each video is scored twice with `av_align()` against the source audio (the
first --seconds of the track, as TempoTokens scores against the wav): **as rendered** (the mp4, H.264 at
render.crf, 18 by default) and **lossless** (the PNG frames, exactly what the generator made).  The codec adds
noise flow to every frame, which makes spurious peaks in small motion; the lossless score is the steering's
own.  Motion, cut, strobe and silence figures come from the lossless frames.  The report lists per track and
steering AV-Align with and without the 0.1 px peak floor, both ways, the flow, the share of moving steps and
the flags (frozen, cuts, strobe, pulses in silence), then per steering the means and how many tracks were
flagged.

Optional CLIP metrics (`--clip-path DIR`, a Hugging Face CLIP folder; sgvis.train.clip_models is imported only
then):

* `--audio-clip PATH`: audio-visual CLIP similarity, the mean over frames of cos(F_v(frame_t), F_a(mel_t)),
  F_a an audio encoder trained into CLIP's embedding space, mel_t the log-mel window the steering saw for
  frame t (sgvis.features.analysis.frame_features at the video's fps);
* `--text PROMPT`: CLIPSIM, the mean over frames of cos(F_v(frame_t), F_t(PROMPT)).

Python:

    report = evaluate_steering(["tests/audio"], ["reactive", "untrained"], model="net.pkl", size=(64, 64))
    report["summary"]["reactive"]["mean_av_align"]
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass

from sgvis.errors import UserError

__all__ = ["AUDIO_EXTS", "SteeringSpec", "find_audio", "resolve_steerings", "evaluate_steering", "summarise",
           "scores_of", "format_report", "add_steering_parser", "cmd_eval_steering", "add_report_parser",
           "cmd_eval_report"]

from sgvis.audio.decode import AUDIO_EXTS  # noqa: E402
BUILTIN_STEERINGS = ("reactive", "learned", "untrained")
# Columns that are another backend, not a steering of the StyleGAN one (options: the render's backend flags).
BACKEND_COLUMNS = ("tempotokens",)
# Smoothness figures averaged per steering (summary key -> av_align()["smoothness"] key).
SUMMARY_FIGURES = {"mean_spike_fraction": "spike_fraction", "mean_jerk": "jerk",
                   "mean_frame_change_p95": "frame_change_p95", "mean_flow": "flow_mean"}
_FLAG_SHORT = {"spike_fraction": "spikes", "max_over_mean": "max/mean", "jerk": "jerk",
               "flow_mean_pct_diag": "flow", "frame_change_p95": "change"}


@dataclass
class SteeringSpec:
    """One column of the comparison."""
    label: str                 # column name in the table and key in the summary
    kind: str                  # reactive | untrained | learned
    path: str | None = None    # the checkpoint rendered (learned)
    given: str = ""            # the --steering value as given
    model: object = None       # untrained: the freshly initialised LearnedSteeringModel (kept in memory)


# -- inputs ----------------------------------------------------------------------------------------------------
def find_audio(paths) -> list[str]:
    """Audio files among `paths`: files as given, folders scanned recursively for AUDIO_EXTS (hidden entries
    skipped, sorted).  Duplicates are dropped; UserError when a path is missing or nothing is found."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[str] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            found.append(path)

    for p in paths:
        p = os.fspath(p)
        if os.path.isfile(p):
            add(p)
        elif os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.lower().endswith(AUDIO_EXTS) and not name.startswith("."):
                        add(os.path.join(root, name))
        else:
            raise UserError(f"{p}: no such audio file or folder")
    if not found:
        where = ", ".join(os.fspath(p) for p in paths) or "(nothing given)"
        raise UserError(f"no audio files ({', '.join(AUDIO_EXTS)}) found in {where}")
    return found


def untrained_model(G, seed: int):
    """A freshly initialised LearnedSteeringModel for G (default MelConfig), weights seeded by `seed`."""
    import torch

    from sgvis.features.analysis import MelConfig
    from sgvis.steer.learned import LearnedSteeringModel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return LearnedSteeringModel(G.num_ws, G.w_dim, MelConfig()).eval()


def resolve_steerings(values, G, seed: int, model: str | None = None,
                      allow_none: bool = False) -> list[SteeringSpec]:
    """`--steering` values -> SteeringSpecs; checkpoints are read (and checked against G) here, before any
    rendering, so a bad one fails at once.  `untrained` is a freshly initialised model, held in memory; `learned`
    is the built-in checkpoint, for the built-in model (`model` None or 'default')."""
    from sgvis.steer.learned import load_steering, steering_checkpoint_for
    values = list(values or [])
    if not values and not allow_none:
        raise UserError("give at least one --steering (reactive, learned, untrained, tempotokens or a "
                        "learned-steering checkpoint), or --baselines")
    specs: list[SteeringSpec] = []
    for value in values:
        v = str(value)
        if v in BACKEND_COLUMNS:
            specs.append(SteeringSpec(label=v, kind=v, given=v))
            continue
        if v == "learned":
            try:
                path = steering_checkpoint_for(None if model in (None, "default") else model, None)
            except UserError:
                raise UserError("--steering learned is the built-in checkpoint, which fits the built-in model only; "
                                "give a learned-steering checkpoint path for this model") from None
            load_steering(path, G, device="cpu")
            specs.append(SteeringSpec(label="learned", kind="learned", path=path, given=v))
            continue
        if v in BUILTIN_STEERINGS:
            specs.append(SteeringSpec(label=v, kind=v, given=v,
                                      model=untrained_model(G, seed) if v == "untrained" else None))
            continue
        if not os.path.isfile(v):
            raise UserError(f"--steering {v}: not reactive, learned, untrained, tempotokens or an existing steering "
                            f"checkpoint")
        load_steering(v, G, device="cpu")        # SteeringFileError / SteeringMismatch: one line, exit 2
        stem = os.path.splitext(os.path.basename(v))[0]
        specs.append(SteeringSpec(label=stem, kind="learned", path=v, given=v))
    # Unique labels: checkpoints with the same file name get their folder's name too, then their path.
    seen_paths: dict[str, str] = {}
    for s in specs:
        key = os.path.realpath(s.path) if s.kind == "learned" else s.kind
        if key in seen_paths:
            raise UserError(f"--steering {s.given} is given twice")
        seen_paths[key] = s.given
    for attempt in (lambda s: os.path.join(os.path.basename(os.path.dirname(os.path.abspath(s.path))), s.label),
                    lambda s: s.given):
        labels = [s.label for s in specs]
        for s in specs:
            if s.kind == "learned" and labels.count(s.label) > 1:
                s.label = attempt(s)
    return specs


def _track_names(tracks: list[str]) -> list[str]:
    """Short display names: paths relative to the tracks' common folder."""
    dirs = [os.path.dirname(os.path.abspath(t)) for t in tracks]
    try:
        base = os.path.commonpath(dirs)
    except ValueError:
        return list(tracks)
    return [os.path.relpath(os.path.abspath(t), base) for t in tracks]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


# -- CLIP metrics (optional) -------------------------------------------------------------------------------------
class _ClipScorer:
    """Per-video CLIP figures; sgvis.train.clip_models is imported only when CLIP metrics are asked for."""

    batch = 32

    def __init__(self, clip, audio_clip: str | None, text: str | None, device):
        import torch
        try:
            from sgvis.train import clip_models
        except ImportError as e:
            raise UserError(f"CLIP figures need sgvis.train.clip_models, which cannot be imported here ({e})") from None
        cfg = dict(clip) if isinstance(clip, dict) else {"path": os.fspath(clip)}
        self.device = device
        self.towers = clip_models.load_clip(cfg, device)          # ClipLoadError: one line
        self.text = text
        self.text_embedding = None
        self.audio_encoder = None
        with torch.no_grad():
            dim = getattr(self.towers, "embed_dim", None)
            if not isinstance(dim, int):
                dim = self.towers.encode_image(torch.zeros([1, 3, 32, 32], device=device)).shape[-1]
            self.embed_dim = int(dim)
            if text is not None:
                self.text_embedding = self._norm(self.towers.encode_text([text]).float())       # [1, D]
        if audio_clip is not None:
            self.audio_encoder = clip_models.load_audio_encoder(audio_clip, device, self.embed_dim)
            if hasattr(self.audio_encoder, "eval"):
                self.audio_encoder.eval()

    @staticmethod
    def _norm(x):
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def _mel_config(self):
        from sgvis.features.analysis import MelConfig
        cfg = getattr(self.audio_encoder, "mel_config", None)
        if isinstance(cfg, dict):
            cfg = MelConfig(**cfg)
        return cfg if isinstance(cfg, MelConfig) else MelConfig()

    def _frames(self, video: str):
        """Batches of the video's frames as [B, 3, H, W] in [-1, 1] (CLIP's towers resize and crop them)."""
        import av
        import numpy as np
        import torch
        pending = []

        def flush():
            return torch.from_numpy(np.stack(pending)).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0

        with av.open(video) as container:
            for frame in container.decode(video=0):
                pending.append(frame.to_ndarray(format="rgb24"))
                if len(pending) == self.batch:
                    yield flush()
                    pending = []
        if pending:
            yield flush()

    def _mels(self, track: str, n_frames: int, fps: float, end: float | None, lookahead: float):
        """Batches [B, n_mels, window] of the log-mel windows for frames 0..n_frames-1 (the steering's view)."""
        import numpy as np
        import torch

        from sgvis.audio import decode as audio_in
        from sgvis.features.analysis import FeatureExtractor, frame_features
        mel = self._mel_config()
        blocks = audio_in.decode_blocks(track, mel.sample_rate, "mono", 0.0, end)
        pending = []
        for f in frame_features(FeatureExtractor(mel), blocks, n_frames, fps, lookahead):
            pending.append(f.mel)
            if len(pending) == self.batch:
                yield torch.from_numpy(np.stack(pending)).float().to(self.device)
                pending = []
        if pending:
            yield torch.from_numpy(np.stack(pending)).float().to(self.device)

    def score(self, video: str, track: str, fps: float, end: float | None, lookahead: float) -> dict:
        import torch
        images = []
        with torch.no_grad():
            for x in self._frames(video):
                images.append(self._norm(self.towers.encode_image(x).float()))
        if not images:
            raise UserError(f"{video}: no frames to score with CLIP")
        v = torch.cat(images)                                                      # [T, D]
        out = {"frames": int(v.shape[0])}
        if self.text_embedding is not None:
            sims = (v @ self.text_embedding.T)[:, 0]
            out["clipsim"] = float(sims.mean())
            out["clipsim_per_frame"] = [round(float(x), 5) for x in sims]
            out["text"] = self.text
        if self.audio_encoder is not None:
            audio = []
            with torch.no_grad():
                for m in self._mels(track, int(v.shape[0]), fps, end, lookahead):
                    audio.append(self._norm(self.audio_encoder(m).float()))
            a = torch.cat(audio)
            n = min(len(a), len(v))
            sims = (v[:n] * a[:n]).sum(-1)
            out["av_clip"] = float(sims.mean())
            out["av_clip_per_frame"] = [round(float(s), 5) for s in sims]
        return out


# -- evaluation --------------------------------------------------------------------------------------------------
def _png_frames(directory: str):
    """The frames a render wrote as PNG (BGR uint8, in order)."""
    import cv2
    names = sorted(n for n in os.listdir(directory) if n.startswith("frame_") and n.endswith(".png"))
    for name in names:
        frame = cv2.imread(os.path.join(directory, name), cv2.IMREAD_COLOR)
        if frame is None:
            raise UserError(f"cannot read the rendered frame {os.path.join(directory, name)}")
        yield frame


def scores_of(rendered: dict, lossless: dict) -> dict:
    """The figures of one video that the tables show: AV-Align with and without the peak floor, as rendered and
    lossless; motion, flags and silence from the lossless frames."""
    m, q, sm = lossless["motion"], lossless["silence"], lossless["smoothness"]
    return {
        "av_align": rendered["av_align"], "av_align_unthresholded": rendered["av_align_unthresholded"],
        "av_align_lossless": lossless["av_align"],
        "av_align_lossless_unthresholded": lossless["av_align_unthresholded"],
        "flow_mean": m["flow_mean"], "flow_p95": m["flow_p95"], "moving_share": m["moving_share"],
        "gray_change": sm.get("frame_diff_mean"),
        "frozen": m["frozen"], "cuts": m.get("cuts", 0),
        "strobe": [k for k in sm["strobe_flags"] if k != "cuts"],
        "silence_seconds": q["silence_seconds"], "silence_flow_mean": q["flow_mean"],
        "silence_pulse_px": q["pulse_px"], "pulses_in_silence": q["pulses"],
        "flags": list(lossless["flags"]),
        "rendered_flow_mean": rendered["motion"]["flow_mean"],
    }


def _row(track: str, name: str, label: str, kind: str, rendered: dict, lossless: dict, **extra) -> dict:
    """One result: the rendered video's figures at the top level (as `sgvis eval av-align` gives them), the
    lossless ones under "lossless", the table's figures under "scores"."""
    return {"track": track, "name": name, "steering": label, "kind": kind, **rendered,
            "strobe_flags": list(rendered["smoothness"]["strobe_flags"]), "lossless": lossless,
            "scores": scores_of(rendered, lossless), **extra}


def evaluate_steering(audio, steerings, *, model: str | None = None, fps: float = 30.0, size=None,
                      seconds: float | None = None, seed: int = 0, overrides=(), device: str = "auto",
                      keep_videos: str | None = None, overwrite: bool = False, clip=None,
                      audio_clip: str | None = None, text: str | None = None, baselines: bool = False,
                      label: str | None = None, progress: bool | None = None,
                      diffusion: dict | None = None) -> dict:
    """Render every track of `audio` (files / folders) with every steering ('reactive', 'learned', 'untrained' or
    a checkpoint path), add the baselines when asked, and score the videos as rendered and lossless; returns
    the report (settings, per-video results, summary).

    size: (width, height), N or 'WxH' text, or None for the model's resolution; seconds: only the first
    `seconds` of each track; overrides: `--set` items (KEY=VALUE); keep_videos: a folder for the mp4s (default:
    a temporary one, deleted afterwards); label: a name for the set of tracks in the report.  clip: a Hugging
    Face CLIP folder or a `clip` config section for sgvis.train.clip_models.load_clip (e.g. {"config": {...}}: a
    random CLIP); with it, audio_clip (an audio encoder into CLIP's space) adds the audio-visual CLIP
    similarity and text adds CLIPSIM.  diffusion: the tempotokens backend's options (t2v, beats, mapper, prompt,
    steps, guidance, as `sgvis render --backend tempotokens` takes them) for a 'tempotokens' column; that column
    renders at the backend's own frame rate (12 fps), the others at `fps`."""
    import shutil

    import numpy as np
    from tqdm import tqdm

    from sgvis.audio import decode as audio_in
    from sgvis.eval import baselines as base
    from sgvis.eval.av_align import SAMPLE_RATE, av_align, load_audio
    from sgvis.config import load_config
    from sgvis.backends.stylegan import load_model
    from sgvis.outputs import SinkContext, SourceAudio, open_sink, parse_size
    from sgvis.render import RENDER_DEFAULTS, RenderJob, render
    from sgvis.outputs.files import check_output_path

    fps = float(fps)
    if not 1 <= fps <= 240:
        raise UserError(f"--fps {fps:g} is out of range (1-240)")
    if seconds is not None and not seconds > 0:
        raise UserError(f"--seconds must be positive, got {seconds:g}")
    if isinstance(size, (str, int)):
        size = parse_size(str(size))
    if (audio_clip is not None or text is not None) and not clip:
        raise UserError("--audio-clip and --text need --clip-path (a Hugging Face CLIP folder)")
    if clip and audio_clip is None and text is None:
        raise UserError("--clip-path needs --audio-clip PATH and/or --text PROMPT (the CLIP figures to compute)")
    diffusion = {k: v for k, v in (diffusion or {}).items() if v is not None}
    from sgvis.backends import DIFFUSION_OPTIONS
    unknown = sorted(set(diffusion) - set(DIFFUSION_OPTIONS))
    if unknown:
        raise ValueError(f"unknown diffusion options: {', '.join(unknown)}")
    wants_diffusion = "tempotokens" in [str(v) for v in steerings or []]
    if diffusion and not wants_diffusion:
        raise UserError(f"--{', --'.join(diffusion)} are for a --steering tempotokens column")
    if wants_diffusion:
        need = [f"--{k}" for k in ("t2v", "beats", "mapper") if k not in diffusion]
        if need:
            raise UserError(f"--steering tempotokens needs {', '.join(need)} (the files of "
                            f"`sgvis render --backend tempotokens`, see docs/diffusion.md)")
    config = load_config(None, None, list(overrides or []), defaults=RENDER_DEFAULTS)
    crf = int(config["render"]["crf"])
    tracks = find_audio(audio)
    durations, infos = [], []
    for track in tracks:                                    # every unreadable track fails before any rendering
        info = audio_in.probe(track)
        duration = info.duration if seconds is None else min(seconds, info.duration)
        n = max(1, int(round(duration * fps)))
        if n < 3:
            raise UserError(f"{track}: {duration:.2f}s gives {n} frames at {fps:g} fps; AV-Align needs at least 3")
        durations.append(duration)
        infos.append(info)
    if keep_videos:
        if os.path.exists(keep_videos) and not os.path.isdir(keep_videos):
            raise UserError(f"--keep-videos {keep_videos}: exists and is not a folder")
        try:
            os.makedirs(keep_videos, exist_ok=True)
        except OSError as e:
            raise UserError(f"--keep-videos {keep_videos}: cannot create the folder ({e.strerror})") from None

    G = load_model(model)
    with tempfile.TemporaryDirectory(prefix="sgvis-eval-") as workdir:
        specs = resolve_steerings(steerings, G, seed, model=model, allow_none=baselines)
        names = _track_names(tracks)
        stems = [os.path.splitext(os.path.basename(t))[0] for t in tracks]
        stems = [_safe(st) if stems.count(st) == 1 else f"{i:03d}-{_safe(st)}" for i, st in enumerate(stems)]
        video_dir = keep_videos or workdir
        safe_labels = [_safe(s.label) for s in specs]
        safe_labels = [lab if safe_labels.count(lab) == 1 else f"{j}-{lab}" for j, lab in enumerate(safe_labels)]
        plan = []
        for i in range(len(tracks)):
            for spec, safe_label in zip(specs, safe_labels):
                plan.append((i, spec, os.path.join(video_dir, f"{stems[i]}__{safe_label}.mp4")))
            if baselines:
                for key in base.BASELINES:
                    plan.append((i, key, os.path.join(video_dir, f"{stems[i]}__baseline-{key}.mp4")))
        if keep_videos:
            for _, _, out in plan:
                check_output_path(out, overwrite)
        scorer = None
        if clip:
            from sgvis.backends.stylegan import pick_device
            scorer = _ClipScorer(clip, audio_clip, text, pick_device(device))
        from sgvis.steer.reactive import OFFLINE_LOOKAHEAD_S
        lookahead = config["render"]["lookahead"]
        lookahead = OFFLINE_LOOKAHEAD_S if lookahead is None else float(lookahead)
        # One generator for every render: the model is loaded once, not once per video.
        from sgvis.backends.stylegan import StyleGANBackend, pick_device
        from sgvis.outputs.files import even
        from sgvis.outputs.framing import check_fit
        from sgvis.render import check_render_settings
        backend = StyleGANBackend(G, pick_device(device), precision=check_render_settings(config["render"])["precision"],
                                  size=None if size is None else (even(size[0]), even(size[1])),
                                  fit=check_fit(config["render"].get("fit"), "render.fit"))
        del G
        diffusion_backend = None
        if any(spec.kind == "tempotokens" for spec in specs):
            from sgvis.backends import BACKENDS
            diffusion_backend = BACKENDS.create(
                "tempotokens", model=None, device=device, precision=config["render"]["precision"],
                size=None if size is None else (even(size[0]), even(size[1])), **diffusion)

        def render_one(i, what, out, frames_dir, end):
            from sgvis.steer import make_steering
            from sgvis.steer.learned import LearnedSteering
            cfg = copy.deepcopy(config)
            if what.kind == "tempotokens":
                job = RenderJob(audio=tracks[i], output=out, fps=None, size=size, seed=seed, start=0.0, end=end,
                                png_dir=frames_dir, overwrite=True if not keep_videos else overwrite, device=device,
                                backend="tempotokens", backend_options=dict(diffusion), config=cfg)
                return render(job, backend=diffusion_backend)
            mode = "reactive" if what.kind == "reactive" else "learned"
            cfg.setdefault("steer", {})["mode"] = mode
            if what.kind == "untrained":
                # the paper's w^ = E(x) + w with E untrained: w itself, a still image (so without the drift that
                # the learned steering otherwise walks w along)
                cfg["steer"]["learned"] = dict(cfg["steer"].get("learned") or {}, drift=False)
                steering = LearnedSteering(backend.latent_model, what.model, cfg["steer"], seed)
            else:
                steering = make_steering(backend, cfg["steer"], seed, learned_path=what.path)
            job = RenderJob(audio=tracks[i], output=out, model=model, fps=fps, size=size, seed=seed, start=0.0,
                            end=end, png_dir=frames_dir, overwrite=True if not keep_videos else overwrite,
                            device=device, steer=mode, steering_path=what.path, config=cfg)
            return render(job, backend=backend, steering=steering)

        results = []
        audio_cache: dict[int, np.ndarray] = {}
        still_images: dict[int, np.ndarray] = {}
        bar = tqdm(total=len(plan), unit="video", desc="eval", dynamic_ncols=True,
                   disable=None if progress is None else not progress)
        try:
            for i, what, out in plan:
                is_baseline = isinstance(what, str)
                bar.set_postfix_str(f"{names[i]} / {base.BASELINES[what] if is_baseline else what.label}",
                                    refresh=False)
                if i not in audio_cache:
                    audio_cache.clear()                  # one track at a time
                    y = load_audio(tracks[i])
                    audio_cache[i] = y[:int(round(durations[i] * SAMPLE_RATE))]
                y = audio_cache[i]
                n_frames = max(1, int(round(durations[i] * fps)))
                frames_dir = os.path.join(workdir, "frames")
                if not is_baseline:
                    stats = render_one(i, what, out, frames_dir, seconds)
                    if i not in still_images and what.kind != "tempotokens":
                        still_images[i] = next(iter(_png_frames(frames_dir)))
                    rendered = av_align(out, (y, SAMPLE_RATE))
                    lossless = av_align(_png_frames(frames_dir), (y, SAMPLE_RATE), fps=stats["fps"],
                                        channel_order="bgr")
                    shutil.rmtree(frames_dir, ignore_errors=True)
                    entry = _row(tracks[i], names[i], what.label, what.kind, rendered, lossless,
                                 render={k: stats.get(k) for k in ("frames", "fps", "seconds_of_audio",
                                                                   "wall_seconds", "frames_per_second", "device",
                                                                   "resolution", "steering", "backend")},
                                 video=out if keep_videos else None)
                else:
                    if i not in still_images:            # baselines alone: a 3-frame render for the picture
                        render_one(i, SteeringSpec(label="reactive", kind="reactive"),
                                   os.path.join(workdir, "first.mp4"), frames_dir, min(durations[i], 3.0 / fps))
                        still_images[i] = next(iter(_png_frames(frames_dir)))
                        shutil.rmtree(frames_dir, ignore_errors=True)
                    import cv2
                    image = cv2.cvtColor(still_images[i], cv2.COLOR_BGR2RGB)

                    def frames():
                        if what == "still":
                            return base.still_frames(image, n_frames)
                        return base.random_motion_frames(n_frames, (image.shape[1], image.shape[0]),
                                                         seed=seed * 1000 + i)
                    context = SinkContext(fps=fps, size=(image.shape[1], image.shape[0]), overwrite=True,
                                          audio=SourceAudio(tracks[i], 0.0, durations[i], infos[i].sample_rate,
                                                            infos[i].channels),
                                          settings=config["render"], inputs=(tracks[i],))
                    sink = open_sink(f"video:{out}", context)
                    try:
                        for frame in frames():
                            sink.write(frame)
                        sink.close()
                    except BaseException:
                        sink.abort()
                        raise
                    rendered = av_align(out, (y, SAMPLE_RATE))
                    lossless = av_align(frames(), (y, SAMPLE_RATE), fps=fps, channel_order="rgb")
                    entry = _row(tracks[i], names[i], base.BASELINES[what], f"baseline:{what}", rendered, lossless,
                                 render=None, video=out if keep_videos else None)
                if scorer is not None:
                    video_fps = (entry.get("render") or {}).get("fps") or fps      # a backend's own rate
                    entry["clip"] = scorer.score(out, tracks[i], video_fps, seconds, lookahead)
                results.append(entry)
                bar.update(1)
        finally:
            bar.close()

    labels = [s.label for s in specs] + ([base.BASELINES[k] for k in base.BASELINES] if baselines else [])
    steering_list = [{"label": s.label, "kind": s.kind, "path": s.path if s.kind == "learned" else None,
                      **({"options": dict(diffusion)} if s.kind == "tempotokens" else {})} for s in specs]
    if baselines:
        steering_list += [{"label": base.BASELINES[k], "kind": f"baseline:{k}", "path": None} for k in base.BASELINES]
    from sgvis.eval import motion
    from sgvis.eval.av_align import PEAK_MIN_FLOW
    return {
        "label": label, "model": model, "fps": fps, "size": list(size) if size else None, "seconds": seconds,
        "seed": seed, "crf": crf, "overrides": list(overrides or []),
        "thresholds": {"peak_min_flow": PEAK_MIN_FLOW, "still_flow": motion.STILL_FLOW,
                       "frozen_moving_share": motion.FROZEN_MOVING_SHARE, "cut_change": motion.CUT_CHANGE,
                       "cut_contrast": motion.CUT_CONTRAST, "silence_dbfs": motion.SILENCE_DBFS,
                       "silence_min_seconds": motion.SILENCE_MIN_SECONDS, "pulse_px": motion.PULSE_PX},
        "tracks": tracks,
        "steerings": steering_list,
        "clip": None if not clip else {"clip": clip if isinstance(clip, dict) else os.fspath(clip),
                                       "audio_clip": audio_clip, "text": text},
        "results": results,
        "summary": summarise(results, labels),
    }


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(values) / len(values) if values else None


SCORE_MEANS = ("av_align", "av_align_unthresholded", "av_align_lossless", "av_align_lossless_unthresholded",
               "flow_mean", "flow_p95", "moving_share", "gray_change")


def _scores(r: dict) -> dict:
    """A result's table figures, computed afresh from its two av_align results (so a saved report can be
    summarised and printed again by a newer sgvis)."""
    return scores_of(r, r["lossless"])


def summarise(results: list[dict], labels: list[str]) -> dict:
    """Per steering: the means of the table's figures (mean_<figure>), tracks flagged frozen / with cuts /
    strobe-like / pulsing in silence (lossless); the rendered video's smoothness means and strobe count under
    their former names (mean_spike_fraction, mean_jerk, mean_frame_change_p95, mean_flow, strobe_tracks); CLIP
    means."""
    summary = {}
    for label in labels:
        rows = [r for r in results if r["steering"] == label]
        scores = [_scores(r) for r in rows]
        s = {"tracks": len(rows)}
        for key in SCORE_MEANS:
            s[f"mean_{key}"] = _mean(c[key] for c in scores)
        s["frozen_tracks"] = sum(1 for c in scores if c["frozen"])
        s["cut_tracks"] = sum(1 for c in scores if c["cuts"])
        s["strobe_tracks_lossless"] = sum(1 for c in scores if c["strobe"])
        s["silence_tracks"] = sum(1 for c in scores if c["silence_pulse_px"] is not None)
        s["pulse_tracks"] = sum(1 for c in scores if c["pulses_in_silence"])
        s["flagged_tracks"] = sum(1 for c in scores if c["flags"])
        for key, figure in SUMMARY_FIGURES.items():
            s[key] = _mean(r["smoothness"].get(figure) for r in rows)
        s["strobe_tracks"] = sum(1 for r in rows if r["strobe_flags"])
        for key in ("av_clip", "clipsim"):
            values = [r["clip"][key] for r in rows if key in (r.get("clip") or {})]
            if values:
                s[f"mean_{key}"] = _mean(values)
        summary[label] = s
    return summary


# -- output --------------------------------------------------------------------------------------------------------
def _fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def _table(header: list[str], rows: list[list[str]], left: int = 1, text_last: bool = False) -> list[str]:
    """Aligned columns: the first `left` (and with `text_last` the last) left-aligned, numbers right-aligned."""
    widths = [max(len(str(r[k])) for r in [header] + rows) for k in range(len(header))]
    lines = []
    for n, row in enumerate([header] + rows):
        cells = [str(c).ljust(w) if k < left or (text_last and k == len(row) - 1) else str(c).rjust(w)
                 for k, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _short_flags(flags: list[str]) -> str:
    out = []
    for f in flags:
        if f.startswith("strobe:"):
            f = "strobe:" + ",".join(_FLAG_SHORT.get(k, k) for k in f[len("strobe:"):].split(","))
        out.append(f)
    return " ".join(out) if out else "ok"


def format_report(report: dict) -> str:
    labels = [s["label"] for s in report["steerings"]]
    by_key = {(r["track"], r["steering"]): r for r in report["results"]}
    names = {r["track"]: r["name"] for r in report["results"]}
    crf = report.get("crf", 18)
    title = f"[{report['label']}] " if report.get("label") else ""
    lines = [f"{title}per track: AV-Align (TempoTokens: video peaks need >= 0.1 px of flow; 'no floor': every "
             f"flow maximum), as rendered (crf {crf}) and lossless (the generated frames); motion (flow px, p95, "
             f"moving: steps >= 0.1 px, gray: mean |gray change| per step, 0-255) and flags from the lossless "
             f"frames"]
    header = ["track", "steering", "AV-Align", "no floor", "lossless", "no floor", "flow px", "p95", "moving",
              "gray", "flags"]
    rows = []
    for track in report["tracks"]:
        first = True
        for label in labels:
            r = by_key.get((track, label))
            if r is None:
                continue
            c = _scores(r)
            rows.append([names.get(track, track) if first else "", label, _fmt(c["av_align"]),
                         _fmt(c["av_align_unthresholded"]), _fmt(c["av_align_lossless"]),
                         _fmt(c["av_align_lossless_unthresholded"]), _fmt(c["flow_mean"], ".3g"),
                         _fmt(c["flow_p95"], ".3g"), f"{100 * c['moving_share']:.0f}%", _fmt(c["gray_change"], ".2f"),
                         _short_flags(c["flags"])])
            first = False
    lines += _table(header, rows, left=2, text_last=True)
    for key, heading in (("av_clip", "audio-visual CLIP similarity per track"), ("clipsim", "CLIPSIM per track")):
        if any(key in (r.get("clip") or {}) for r in report["results"]):
            rows = [[names.get(t, t)] + [_fmt(((by_key.get((t, lab)) or {}).get("clip") or {}).get(key))
                                         for lab in labels] for t in report["tracks"]]
            lines += ["", heading] + _table(["track"] + labels, rows)
    summary = report["summary"]
    header = ["steering", "AV-Align", "no floor", "lossless", "no floor", "flow px", "p95", "moving", "gray",
              "frozen", "cuts", "strobe", "pulses in silence"]
    clip_keys = [k for k in ("mean_av_clip", "mean_clipsim") if any(k in s for s in summary.values())]
    header = header[:-1] + [{"mean_av_clip": "AV-CLIP", "mean_clipsim": "CLIPSIM"}[k] for k in clip_keys] + header[-1:]
    rows = []
    for label in labels:
        s = summary[label]
        n = s["tracks"]
        rows.append([label, _fmt(s["mean_av_align"]), _fmt(s["mean_av_align_unthresholded"]),
                     _fmt(s["mean_av_align_lossless"]), _fmt(s["mean_av_align_lossless_unthresholded"]),
                     _fmt(s["mean_flow_mean"], ".3g"), _fmt(s["mean_flow_p95"], ".3g"),
                     "-" if s["mean_moving_share"] is None else f"{100 * s['mean_moving_share']:.0f}%",
                     _fmt(s["mean_gray_change"], ".2f"),
                     f"{s['frozen_tracks']}/{n}", f"{s['cut_tracks']}/{n}", f"{s['strobe_tracks_lossless']}/{n}"]
                    + [_fmt(s.get(k)) for k in clip_keys]
                    + [f"{s['pulse_tracks']}/{s['silence_tracks']}" if s["silence_tracks"] else "no silence"])
    lines += ["", f"{title}summary over {len(report['tracks'])} track(s): means; flags count tracks (pulses in "
                  f"silence: of the tracks with silence)"]
    lines += _table(header, rows, text_last=True)
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------------------------------
def cmd_eval_steering(args) -> int:
    from sgvis.backends import diffusion_options
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(directory):
            raise UserError(f"cannot write {args.json}: directory {directory} does not exist")
    report = evaluate_steering(args.audio, args.steering, model=args.model, fps=args.fps, size=args.size,
                               seconds=args.seconds, seed=args.seed, overrides=args.set or [], device=args.device,
                               keep_videos=args.keep_videos, overwrite=args.overwrite, clip=args.clip_path,
                               audio_clip=args.audio_clip, text=args.text, baselines=args.baselines,
                               label=args.label,
                               diffusion=diffusion_options(args))
    print(format_report(report))
    if args.json:
        from stylegan.atomic import write_atomically

        def write(tmp):
            with open(tmp, "w") as f:
                json.dump(report, f, indent=1)
        write_atomically(args.json, write, suffix=".json.tmp")
    return 0


def add_steering_parser(subparsers) -> None:
    """Add `steering` to the `sgvis eval` subcommands."""
    p = subparsers.add_parser(
        "steering", help="compare steerings (reactive, learned, untrained, checkpoints) and baselines on test audio",
        description="Render every AUDIO track with every --steering (and the --baselines), score each video "
                    "as rendered and lossless, and report AV-Align (with and without the 0.1 px peak floor), "
                    "motion and flags per track and per steering (means).  docs/evaluation.md explains the "
                    "columns.")
    p.add_argument("audio", nargs="+", metavar="AUDIO",
                   help=f"audio files or folders (scanned recursively for {', '.join(AUDIO_EXTS)})")
    p.add_argument("--steering", "--steer", dest="steering", action="append", metavar="S",
                   help="reactive | learned (the built-in checkpoint, built-in model) | untrained | "
                        "PATH.safetensors (a learned-steering checkpoint) | tempotokens (the diffusion backend, "
                        "with the files below); repeat for more columns")
    p.add_argument("--baselines", action="store_true",
                   help="also score a still image and random motion (not driven by the audio) per track")
    p.add_argument("--label", help="name of this set of tracks in the report (e.g. real-heldout)")
    p.add_argument("--model", help="StyleGAN checkpoint (default: the model shipped with sgvis)")
    p.add_argument("--fps", type=float, default=30.0, help="frames per second (default 30)")
    p.add_argument("--size", help="render at WIDTHxHEIGHT or N (default: the model's resolution; smaller is faster)")
    p.add_argument("--seconds", type=float, help="use only the first SECONDS of each track")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the latents, the untrained model and the random-motion baseline (default 0)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one setting, as for render (repeatable; render.crf sets the 'as rendered' "
                        "quality, default 18)")
    p.add_argument("--compute", "--device", dest="device", default="auto", metavar="DEVICE",
                   help="where frames are generated: auto (default), cpu or cuda")
    p.add_argument("--json", metavar="PATH", help="write the whole report (every figure of every video) as JSON")
    p.add_argument("--keep-videos", metavar="DIR", help="keep the rendered mp4s in DIR (default: deleted)")
    p.add_argument("--overwrite", action="store_true", help="replace existing videos in --keep-videos DIR")
    p.add_argument("--clip-path", metavar="DIR", help="Hugging Face CLIP folder, for the CLIP figures below")
    p.add_argument("--audio-clip", metavar="PATH",
                   help="audio encoder into CLIP's space: report the audio-visual CLIP similarity per track")
    p.add_argument("--text", metavar="PROMPT", help="report CLIPSIM (frame-text CLIP similarity) for this prompt")
    from sgvis.backends import add_diffusion_arguments
    add_diffusion_arguments(p, "a --steering tempotokens column (the diffusion backend; docs/diffusion.md)")
    p.set_defaults(func=cmd_eval_steering)


def cmd_eval_report(args) -> int:
    """Print a saved `eval steering --json` report again (summary recomputed by this sgvis)."""
    try:
        with open(args.report) as f:
            report = json.load(f)
        labels = [s["label"] for s in report["steerings"]]
        report["summary"] = summarise(report["results"], labels)
        text = format_report(report)
    except FileNotFoundError:
        raise UserError(f"{args.report}: no such file") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{args.report} is not a report of `sgvis eval steering --json` ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})") from None
    print(text)
    return 0


def add_report_parser(subparsers) -> None:
    """Add `report` to the `sgvis eval` subcommands."""
    p = subparsers.add_parser("report", help="print a saved `eval steering --json` report as tables again",
                              description="Print the tables of a report that `sgvis eval steering --json` wrote.")
    p.add_argument("report", metavar="REPORT.json")
    p.set_defaults(func=cmd_eval_report)

