"""`sgvis eval steering`: render test audio with several steerings and compare AV-Align and smoothness.

    sgvis eval steering tests/audio/ --model net.pkl --steering reactive --steering untrained \
        --steering runs/steer.safetensors --size 128 --seconds 20 --json report.json

Each `--steering` is one column of the comparison:

* `reactive`: the training-free ReactiveSteering;
* `untrained`: a freshly initialised LearnedSteeringModel for the model's num_ws / w_dim (default MelConfig,
  weights seeded by --seed), saved to a temporary checkpoint so it runs through exactly the render path a
  trained checkpoint does.  Its output layers start at zero, so it gives w^ = w: a still image (the floor a
  trained model has to beat);
* a path: a learned-steering checkpoint (.safetensors, from the steering trainer).

Every track is rendered with `render(RenderJob(...))` (into a temporary folder unless --keep-videos) and the
mp4, which carries the audio, is scored with `av_align()`.  The report lists per track and steering the
AV-Align score and the strobe flags, then per steering the mean AV-Align, the mean smoothness figures
(spike_fraction, jerk, frame_change_p95, flow mean) and how many tracks were flagged as strobe-like.

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
           "format_report", "add_steering_parser", "cmd_eval_steering"]

from sgvis.audio.decode import AUDIO_EXTS  # noqa: E402
BUILTIN_STEERINGS = ("reactive", "untrained")
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
    path: str | None = None    # the checkpoint rendered (untrained: a temporary one)
    given: str = ""            # the --steering value as given


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


def _save_untrained(G, seed: int, path: str) -> None:
    """A freshly initialised LearnedSteeringModel for G (default MelConfig), weights seeded by `seed`."""
    import torch

    from sgvis.features.analysis import MelConfig
    from sgvis.steer.learned import LearnedSteeringModel, save_steering
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = LearnedSteeringModel(G.num_ws, G.w_dim, MelConfig())
    save_steering(model, path, extra={"untrained": "1"})


def resolve_steerings(values, G, seed: int, workdir: str) -> list[SteeringSpec]:
    """`--steering` values -> SteeringSpecs; checkpoints are read (and checked against G) here, before any
    rendering, so a bad one fails at once.  The untrained checkpoint is written into `workdir`."""
    from sgvis.steer.learned import load_steering
    values = list(values or [])
    if not values:
        raise UserError("give at least one --steering (reactive, untrained or a learned-steering checkpoint)")
    specs: list[SteeringSpec] = []
    for value in values:
        v = str(value)
        if v in BUILTIN_STEERINGS:
            path = None
            if v == "untrained":
                path = os.path.join(workdir, "untrained.safetensors")
                _save_untrained(G, seed, path)
            specs.append(SteeringSpec(label=v, kind=v, path=path, given=v))
            continue
        if not os.path.isfile(v):
            raise UserError(f"--steering {v}: not 'reactive', 'untrained' or an existing steering checkpoint")
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
def evaluate_steering(audio, steerings, *, model: str | None = None, fps: float = 30.0, size=None,
                      seconds: float | None = None, seed: int = 0, overrides=(), device: str = "auto",
                      keep_videos: str | None = None, overwrite: bool = False, clip=None,
                      audio_clip: str | None = None, text: str | None = None, progress: bool | None = None) -> dict:
    """Render every track of `audio` (files / folders) with every steering ('reactive', 'untrained' or a
    checkpoint path) and score the videos; returns the report (settings, per-render results, summary).

    size: (width, height), N or 'WxH' text, or None for the model's resolution; seconds: only the first
    `seconds` of each track; overrides: `--set` items (KEY=VALUE); keep_videos: a folder for the mp4s (default:
    a temporary one, deleted afterwards).  clip: a Hugging Face CLIP folder or a `clip` config section for
    sgvis.train.clip_models.load_clip (e.g. {"config": {...}}: a random CLIP); with it, audio_clip (an audio encoder
    into CLIP's space) adds the audio-visual CLIP similarity and text adds CLIPSIM."""
    from tqdm import tqdm

    from sgvis.audio import decode as audio_in
    from sgvis.eval.av_align import av_align
    from sgvis.config import load_config
    from sgvis.backends.stylegan import load_model
    from sgvis.outputs import parse_size
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
    config = load_config(None, None, list(overrides or []), defaults=RENDER_DEFAULTS)
    tracks = find_audio(audio)
    durations = []
    for track in tracks:                                    # every unreadable track fails before any rendering
        info = audio_in.probe(track)
        duration = info.duration if seconds is None else min(seconds, info.duration)
        n = max(1, int(round(duration * fps)))
        if n < 3:
            raise UserError(f"{track}: {duration:.2f}s gives {n} frames at {fps:g} fps; AV-Align needs at least 3")
        durations.append(duration)
    if keep_videos:
        if os.path.exists(keep_videos) and not os.path.isdir(keep_videos):
            raise UserError(f"--keep-videos {keep_videos}: exists and is not a folder")
        try:
            os.makedirs(keep_videos, exist_ok=True)
        except OSError as e:
            raise UserError(f"--keep-videos {keep_videos}: cannot create the folder ({e.strerror})") from None

    G = load_model(model)
    with tempfile.TemporaryDirectory(prefix="sgvis-eval-") as workdir:
        specs = resolve_steerings(steerings, G, seed, workdir)
        names = _track_names(tracks)
        stems = [os.path.splitext(os.path.basename(t))[0] for t in tracks]
        video_dir = keep_videos or workdir
        safe_labels = [_safe(s.label) for s in specs]
        safe_labels = [lab if safe_labels.count(lab) == 1 else f"{j}-{lab}" for j, lab in enumerate(safe_labels)]
        plan = []
        for i, track in enumerate(tracks):
            stem = _safe(stems[i]) if stems.count(stems[i]) == 1 else f"{i:03d}-{_safe(stems[i])}"
            for spec, safe_label in zip(specs, safe_labels):
                out = os.path.join(video_dir, f"{stem}__{safe_label}.mp4")
                if keep_videos:
                    check_output_path(out, overwrite)
                plan.append((i, spec, out))
        scorer = None
        if clip:
            from sgvis.backends.stylegan import pick_device
            scorer = _ClipScorer(clip, audio_clip, text, pick_device(device))
        del G
        from sgvis.steer.reactive import OFFLINE_LOOKAHEAD_S
        lookahead = config["render"]["lookahead"]
        lookahead = OFFLINE_LOOKAHEAD_S if lookahead is None else float(lookahead)

        results = []
        bar = tqdm(total=len(plan), unit="render", desc="eval", dynamic_ncols=True,
                   disable=None if progress is None else not progress)
        try:
            for i, spec, out in plan:
                bar.set_postfix_str(f"{names[i]} / {spec.label}", refresh=False)
                cfg = copy.deepcopy(config)
                cfg.setdefault("steer", {})["mode"] = "reactive" if spec.kind == "reactive" else "learned"
                job = RenderJob(audio=tracks[i], output=out, model=model, fps=fps, size=size, seed=seed,
                                start=0.0, end=seconds, overwrite=True if not keep_videos else overwrite,
                                device=device, steer="reactive" if spec.kind == "reactive" else "learned",
                                steering_path=spec.path, config=cfg)
                stats = render(job)
                r = av_align(out)
                entry = {"track": tracks[i], "name": names[i], "steering": spec.label, "kind": spec.kind,
                         **r, "strobe_flags": list(r["smoothness"]["strobe_flags"]),
                         "render": {k: stats[k] for k in ("frames", "seconds_of_audio", "wall_seconds",
                                                          "frames_per_second", "device", "resolution",
                                                          "steering")},
                         "video": out if keep_videos else None}
                if scorer is not None:
                    entry["clip"] = scorer.score(out, tracks[i], fps, seconds, lookahead)
                results.append(entry)
                bar.update(1)
        finally:
            bar.close()

    return {
        "model": model, "fps": fps, "size": list(size) if size else None, "seconds": seconds, "seed": seed,
        "overrides": list(overrides or []),
        "tracks": tracks,
        "steerings": [{"label": s.label, "kind": s.kind, "path": s.given if s.kind == "learned" else None}
                      for s in specs],
        "clip": None if not clip else {"clip": clip if isinstance(clip, dict) else os.fspath(clip),
                                       "audio_clip": audio_clip, "text": text},
        "results": results,
        "summary": summarise(results, [s.label for s in specs]),
    }


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(values) / len(values) if values else None


def summarise(results: list[dict], labels: list[str]) -> dict:
    """Per steering: mean AV-Align, mean smoothness figures, tracks with strobe flags (and CLIP means)."""
    summary = {}
    for label in labels:
        rows = [r for r in results if r["steering"] == label]
        s = {"tracks": len(rows), "mean_av_align": _mean(r["av_align"] for r in rows)}
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


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[k])) for r in [header] + rows) for k in range(len(header))]
    lines = []
    for n, row in enumerate([header] + rows):
        cells = [str(c).ljust(w) if k == 0 else str(c).rjust(w) for k, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def format_report(report: dict) -> str:
    labels = [s["label"] for s in report["steerings"]]
    by_key = {(r["track"], r["steering"]): r for r in report["results"]}
    names = {r["track"]: r["name"] for r in report["results"]}
    lines = ["AV-Align per track (strobe-like figures after the score)"]
    rows = []
    for track in report["tracks"]:
        row = [names.get(track, track)]
        for label in labels:
            r = by_key.get((track, label))
            if r is None:
                row.append("-")
                continue
            flags = ",".join(_FLAG_SHORT.get(f, f) for f in r["strobe_flags"])
            row.append(f"{r['av_align']:.3f}" + (f" strobe:{flags}" if flags else ""))
        rows.append(row)
    lines += _table(["track"] + labels, rows)
    for key, title in (("av_clip", "audio-visual CLIP similarity per track"), ("clipsim", "CLIPSIM per track")):
        if any(key in (r.get("clip") or {}) for r in report["results"]):
            rows = [[names.get(t, t)] + [_fmt(((by_key.get((t, lab)) or {}).get("clip") or {}).get(key))
                                         for lab in labels] for t in report["tracks"]]
            lines += ["", title] + _table(["track"] + labels, rows)
    summary = report["summary"]
    header = ["steering", "AV-Align", "spikes", "jerk", "change p95", "flow px", "strobe"]
    clip_keys = [k for k in ("mean_av_clip", "mean_clipsim") if any(k in s for s in summary.values())]
    header += [{"mean_av_clip": "AV-CLIP", "mean_clipsim": "CLIPSIM"}[k] for k in clip_keys]
    rows = []
    for label in labels:
        s = summary[label]
        rows.append([label, _fmt(s["mean_av_align"]), _fmt(s["mean_spike_fraction"]), _fmt(s["mean_jerk"], ".2f"),
                     _fmt(s["mean_frame_change_p95"]), _fmt(s["mean_flow"], ".3g"),
                     f"{s['strobe_tracks']}/{s['tracks']}"] + [_fmt(s.get(k)) for k in clip_keys])
    lines += ["", f"summary over {len(report['tracks'])} track(s) (means; strobe: tracks with strobe flags)"]
    lines += _table(header, rows)
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------------------------------
def cmd_eval_steering(args) -> int:
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(directory):
            raise UserError(f"cannot write {args.json}: directory {directory} does not exist")
    report = evaluate_steering(args.audio, args.steering, model=args.model, fps=args.fps, size=args.size,
                               seconds=args.seconds, seed=args.seed, overrides=args.set or [], device=args.device,
                               keep_videos=args.keep_videos, overwrite=args.overwrite, clip=args.clip_path,
                               audio_clip=args.audio_clip, text=args.text)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


def add_steering_parser(subparsers) -> None:
    """Add `steering` to the `sgvis eval` subcommands."""
    p = subparsers.add_parser(
        "steering", help="compare steerings (reactive, untrained, learned checkpoints) on test audio",
        description="Render every AUDIO track with every --steering and report AV-Align and smoothness per track "
                    "and per steering (means).")
    p.add_argument("audio", nargs="+", metavar="AUDIO",
                   help=f"audio files or folders (scanned recursively for {', '.join(AUDIO_EXTS)})")
    p.add_argument("--steering", action="append", metavar="S",
                   help="reactive | untrained | PATH.safetensors (a learned-steering checkpoint); repeat for "
                        "more columns")
    p.add_argument("--model", help="StyleGAN checkpoint (default: the model shipped with sgvis)")
    p.add_argument("--fps", type=float, default=30.0, help="frames per second (default 30)")
    p.add_argument("--size", help="render at WIDTHxHEIGHT or N (default: the model's resolution; smaller is faster)")
    p.add_argument("--seconds", type=float, help="use only the first SECONDS of each track")
    p.add_argument("--seed", type=int, default=0, help="seed of the latents (and of the untrained model; default 0)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one setting, as for render (repeatable)")
    p.add_argument("--compute", "--device", dest="device", default="auto", metavar="DEVICE",
                   help="where frames are generated: auto (default), cpu or cuda")
    p.add_argument("--json", metavar="PATH", help="write the whole report (every figure of every render) as JSON")
    p.add_argument("--keep-videos", metavar="DIR", help="keep the rendered mp4s in DIR (default: deleted)")
    p.add_argument("--overwrite", action="store_true", help="replace existing videos in --keep-videos DIR")
    p.add_argument("--clip-path", metavar="DIR", help="Hugging Face CLIP folder, for the CLIP figures below")
    p.add_argument("--audio-clip", metavar="PATH",
                   help="audio encoder into CLIP's space: report the audio-visual CLIP similarity per track")
    p.add_argument("--text", metavar="PROMPT", help="report CLIPSIM (frame-text CLIP similarity) for this prompt")
    p.set_defaults(func=cmd_eval_steering)
