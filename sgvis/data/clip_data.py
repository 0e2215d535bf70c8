"""Training clips for the learned steering (sgvis.steer.learned): per-frame audio features, plus video
frames where the source has them, cut into clips of `clip_frames` frames.

    ds = ClipSet("data/landscape", ClipSetConfig(fps=30, clip_frames=8, frame_size=64))
    loader = DataLoader(ds, batch_size=16, shuffle=True, collate_fn=collate_clips)
    batch["mels"]      # [B, T, n_mels, window_frames]: what render drives the steering with

Every audio (wav flac ogg mp3 m4a aac opus) or video (mp4 mov mkv webm avi m4v) file under root is decoded
once: its sound goes through `features.frame_features` exactly as in render (same MelConfig, fps and
lookahead); its picture, if any, is sampled at fps (frame i: the source frame showing at i/fps, timed from
the start of the sound), centre-cropped to a square and resized.  Results are cached, one .npz per source,
keyed by the file's absolute path, size and mtime and the decoding settings (not clip_frames / stride, which
only cut the cached frames differently).  The log-mel rows are stored once (float16) with the index where
each frame's window ends, instead of one overlapping window per frame (~30x smaller).

Labels (for audio-text losses), in order of precedence:
  * `labels` CSV with a header naming a file column (file / path / filename: relative to root, or a base
    name, with or without extension) and a label column (label / caption / text);
  * `labels` CSV without header in the VGGSound layout `youtube_id,start_seconds,label,split`, matching files
    named {youtube_id}_{start:06d}.<any extension>;
  * no CSV: files in subfolders of root (Landscape layout root/<class>/<clip>.mp4) take the folder's name
    with '_' as spaces.
Unreadable files and files shorter than one clip are skipped and reported in one warning each.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from sgvis.audio import decode as audio_in
from sgvis.errors import UserError, reason
from sgvis.features.analysis import FeatureExtractor, MelConfig, frame_features
from sgvis.steer.reactive import OFFLINE_LOOKAHEAD_S

__all__ = ["ClipSetConfig", "ClipSet", "collate_clips", "write_synth_music", "video_frames", "AUDIO_EXTS", "VIDEO_EXTS"]

from sgvis.audio.decode import AUDIO_EXTS, VIDEO_EXTS  # noqa: E402
CACHE_FORMAT = 2                 # 2: onset_peak per frame
MEMORY_LIMIT = 2 << 30        # cached arrays up to this size (bytes on disk) are held in memory


@dataclass(frozen=True)
class ClipSetConfig:
    fps: float = 30.0
    clip_frames: int = 8                 # T frames per clip
    stride: int | None = None            # frames between clip starts (default clip_frames)
    frame_size: int | None = 64          # square video frames of this size; None: no video decoding
    lookahead: float = OFFLINE_LOOKAHEAD_S   # as render
    max_seconds: float | None = None     # use at most this much of each file

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def decode_dict(self) -> dict:
        """The settings the cached arrays depend on."""
        return {k: v for k, v in self.to_dict().items() if k not in ("clip_frames", "stride")}


def default_cache_dir() -> str:
    from sgvis.steer.directions import default_cache_dir as base
    return os.path.join(base(), "clips")


def write_synth_music(root: str, n_tracks: int, seconds: float = 30.0, seed: int = 0, progress=True) -> list[str]:
    """Write `n_tracks` different synthesized songs to root/track_000.wav ... (see sgvis.audio.synth)."""
    from sgvis.audio.synth import write_synth_music as write
    return write(root, n_tracks, seconds, seed, progress)


# ---------------------------------------------------------------------------------------------
# Decoding one file


def video_frames(path: str, n: int, fps: float, size: int, start: float = 0.0) -> np.ndarray | None:
    """uint8 [n, 3, size, size], centre-cropped squares: frame i is the source frame showing at start + i/fps
    seconds after the start of the sound (the last frame repeats past the end of the picture); None if no picture
    could be decoded."""
    import av
    import cv2
    out = np.zeros((n, 3, size, size), np.uint8)
    shown, image, i = None, None, 0       # the frame showing, its converted image, next output frame

    def convert(frame):
        rgb = frame.to_ndarray(format="rgb24")
        h, w = rgb.shape[:2]
        s = min(h, w)
        rgb = rgb[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        if s != size:
            rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA if s > size else cv2.INTER_LINEAR)
        return rgb.transpose(2, 0, 1)

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        audio = container.streams.audio[0] if container.streams.audio else None
        t0 = float(audio.start_time * audio.time_base) if audio is not None and audio.start_time is not None else 0.0
        rate = float(stream.average_rate or stream.guessed_rate or fps)
        if start > 0 and stream.time_base:
            try:                                         # to the keyframe before `start`; decoding goes on from there
                container.seek(int((start + t0) / stream.time_base), stream=stream, backward=True)
            except av.error.FFmpegError:
                pass
        try:
            for index, frame in enumerate(container.decode(stream)):
                t = (frame.time if frame.time is not None else index / rate) - t0
                while i < n and start + i / fps < t - 1e-6:  # output frames before this one show the previous frame
                    if image is None:
                        image = convert(shown if shown is not None else frame)
                    out[i] = image
                    i += 1
                if i >= n:
                    break
                shown, image = frame, None
        except av.error.FFmpegError:
            pass                                         # a damaged stream ends the picture here
    if shown is None:
        return None
    image = convert(shown) if image is None else image
    out[i:] = image
    return out


def decode_file(path: str, config: ClipSetConfig, mel: MelConfig) -> dict:
    """The cached arrays of one source: mel_rows float16 [L, n_mels], ends int64 [N] (frame k's window is
    mel_rows[ends[k] - window_frames:ends[k]]), onset / rms float32 [N], onset_peak bool [N] (a picked onset on that frame,
    Features.onset_peak), has_video, frames uint8 [N, 3, S, S]."""
    info = audio_in.probe(path)
    duration = info.duration if config.max_seconds is None else min(info.duration, config.max_seconds)
    n = int(np.floor(duration * config.fps + 1e-6))
    extractor = FeatureExtractor(mel)
    W = mel.window_frames
    rows = [np.stack(extractor.mel_history)]          # the window before any audio
    ends, onset, rms = np.zeros(n, np.int64), np.zeros(n, np.float32), np.zeros(n, np.float32)
    peak = np.zeros(n, np.bool_)
    done, length = 0, W
    blocks = audio_in.decode_blocks(path, mel.sample_rate, "mono", 0.0, duration)
    for k, f in enumerate(frame_features(extractor, blocks, n, config.fps, config.lookahead)):
        new, done = extractor.frames_done - done, extractor.frames_done
        if new > W:                                   # rows no window reaches (fps below 1 / window length)
            rows.append(np.zeros((new - W, mel.n_mels), np.float32))
        if new:
            rows.append(f.mel[:, W - min(new, W):].T)
        length += new
        ends[k], onset[k], rms[k], peak[k] = length, f.onset, f.rms, f.onset_peak
    out = dict(format=np.int64(CACHE_FORMAT), mel_rows=np.concatenate(rows).astype(np.float16), ends=ends,
               onset=onset, onset_peak=peak, rms=rms, has_video=np.bool_(False))
    if info.has_video and config.frame_size:
        frames = video_frames(path, n, config.fps, config.frame_size)
        if frames is not None:
            out.update(has_video=np.bool_(True), frames=frames)
    return out


# ---------------------------------------------------------------------------------------------
# Labels


def _read_label_csv(csv_path: str) -> tuple[dict, bool]:
    """({key: label}, by_stem): keys are paths / names (header CSV) or VGGSound stems (by_stem)."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{csv_path}: cannot read the labels CSV ({str(e).splitlines()[0][:100]})") from None
    if not rows:
        raise UserError(f"{csv_path}: the labels CSV is empty")
    head = [c.strip().lower() for c in rows[0]]
    fcol = next((head.index(c) for c in ("file", "path", "filename") if c in head), None)
    lcol = next((head.index(c) for c in ("label", "caption", "text") if c in head), None)
    if fcol is not None and lcol is not None:
        return {os.path.normpath(r[fcol].strip()): r[lcol].strip() for r in rows[1:] if len(r) > max(fcol, lcol)}, False

    def number(s):
        try:
            return float(s) >= 0
        except ValueError:
            return False
    if all(len(r) >= 3 and number(r[1]) for r in rows):
        return {f"{r[0].strip()}_{int(float(r[1])):06d}": r[2].strip() for r in rows}, True
    raise UserError(f"{csv_path}: cannot parse the labels CSV: give a header with a file/path/filename and a "
                    f"label/caption/text column, or VGGSound rows youtube_id,start_seconds,label,split")


def _labels_for(root: str, rels: list[str], csv_path: str | None) -> list[str]:
    if csv_path is None:
        return [os.path.basename(os.path.dirname(r)).replace("_", " ").strip() for r in rels]
    table, by_stem = _read_label_csv(csv_path)
    out = []
    for rel in rels:
        base = os.path.basename(rel)
        stem = os.path.splitext(base)[0]
        keys = [stem] if by_stem else [rel, base, os.path.splitext(rel)[0], stem]
        out.append(next((table[k] for k in keys if k in table), ""))
    missing = sum(not x for x in out)
    if missing:
        warnings.warn(f"{csv_path}: no label for {missing} of {len(rels)} file(s) under {root}", stacklevel=3)
    return out


# ---------------------------------------------------------------------------------------------
# The dataset


def _scan(root: str) -> list[str]:
    """Paths of audio / video files under root relative to it, sorted (hidden folders and files skipped)."""
    if not os.path.isdir(root):
        raise UserError(f"{root}: no such folder; give a folder of audio or video files")
    rels = []
    for d, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        rels += [os.path.relpath(os.path.join(d, x), root) for x in names
                 if not x.startswith(".") and os.path.splitext(x)[1].lower() in AUDIO_EXTS + VIDEO_EXTS]
    return sorted(rels)


def _cache_key(path: str, config: ClipSetConfig, mel: MelConfig) -> str:
    st = os.stat(path)
    key = repr((os.path.abspath(path), st.st_size, st.st_mtime_ns, sorted(config.decode_dict().items()),
                sorted(mel.to_dict().items()), CACHE_FORMAT))
    return hashlib.sha1(key.encode()).hexdigest()


def _load(cache_path: str, keys=None) -> dict | None:
    """The cached arrays (only `keys` if given), or None if missing or unreadable."""
    try:
        with np.load(cache_path) as z:
            if int(z["format"]) != CACHE_FORMAT:
                return None
            return {k: z[k] for k in (keys or z.files)}
    except Exception:  # noqa: BLE001 - any damage means decoding again
        return None


class ClipSet(torch.utils.data.Dataset):
    """Clips of `config.clip_frames` frames from every usable file under `root`; see the module docstring."""

    def __init__(self, root: str, config: ClipSetConfig = ClipSetConfig(), mel: MelConfig = MelConfig(),
                 labels: str | None = None, cache_dir: str | None = None, progress: bool = True):
        if config.fps <= 0 or config.clip_frames < 1 or (config.stride is not None and config.stride < 1) \
                or (config.frame_size is not None and config.frame_size < 1):
            raise UserError(f"invalid clip settings {config.to_dict()}: fps > 0, clip_frames, stride, frame_size >= 1")
        self.root, self.config, self.mel = root, config, mel
        self.cache_dir = cache_dir or default_cache_dir()
        rels = _scan(root)
        if not rels:
            raise UserError(f"{root}: no audio or video files found (looked for {' '.join(AUDIO_EXTS + VIDEO_EXTS)})")
        all_labels = _labels_for(root, rels, labels)
        T = config.clip_frames
        stride = config.stride or T
        # [rel, label, cache path, meta (ends, has_video) once cached, arrays kept in memory if not]
        entries, bad = [], []
        for rel, label in zip(rels, all_labels):
            try:
                cache_path = os.path.join(self.cache_dir, _cache_key(os.path.join(root, rel), config, mel) + ".npz")
            except OSError as e:
                bad.append(f"{rel} ({e.strerror})")
                continue
            meta = _load(cache_path, ("ends", "has_video")) if os.path.exists(cache_path) else None
            entries.append([rel, label, cache_path, meta, None])
        todo = [e for e in entries if e[3] is None]
        write_error = None
        if todo:
            from tqdm import tqdm
            try:
                os.makedirs(self.cache_dir, exist_ok=True)
            except OSError:
                pass                                      # reported when the first write fails
            for e in tqdm(todo, desc="decoding clips", unit="file", disable=None if progress else True):
                try:
                    arrays = decode_file(os.path.join(root, e[0]), config, mel)
                except Exception as err:  # noqa: BLE001 - a damaged file is skipped, never fatal
                    bad.append(f"{e[0]} ({reason(err, 80)})")
                    continue
                try:
                    self._write(e[2], arrays)
                except OSError as err:
                    write_error = write_error or f"{self.cache_dir}: {err.strerror or err}"
                    e[4] = arrays
                e[3] = {k: arrays[k] for k in ("ends", "has_video")}
        self.files, self.file_labels, self._cache_paths, self._sizes = [], [], [], []
        self._memory: dict[int, dict] = {}
        short = 0
        for rel, label, cache_path, meta, arrays in entries:
            if meta is None:
                continue
            if len(meta["ends"]) < T:
                short += 1
                continue
            if arrays is not None:
                self._memory[len(self.files)] = arrays
            self.files.append(os.path.join(root, rel))
            self.file_labels.append(label)
            self._cache_paths.append(cache_path)
            self._sizes.append((len(meta["ends"]), bool(meta["has_video"])))
        if write_error:
            warnings.warn(f"cannot write the clip cache ({write_error}); keeping decoded clips in memory", stacklevel=2)
        if bad:
            names = ", ".join(bad[:20]) + (f" and {len(bad) - 20} more" if len(bad) > 20 else "")
            warnings.warn(f"skipped {len(bad)} unreadable file(s): {names}", stacklevel=2)
        if short:
            warnings.warn(f"skipped {short} file(s) shorter than one clip ({T} frames = {T / config.fps:.2f} s)",
                          stacklevel=2)
        if not self.files:
            raise UserError(f"{root}: no usable clips ({len(bad)} unreadable, {short} shorter than {T} frames of "
                            f"{T / config.fps:.2f} s); give readable audio/video files longer than one clip")
        self.labels = sorted({x for x in self.file_labels if x})
        index = {x: i for i, x in enumerate(self.labels)}
        self._label_index = [index.get(x, -1) for x in self.file_labels]
        self.has_video = any(v for _, v in self._sizes)
        starts = [(fi, s) for fi, (n, _) in enumerate(self._sizes) for s in range(0, n - T + 1, stride)]
        self._clips = np.array(starts, np.int64).reshape(-1, 2)
        on_disk = sum(os.path.getsize(p) for fi, p in enumerate(self._cache_paths)
                      if fi not in self._memory and os.path.exists(p))
        if on_disk <= MEMORY_LIMIT:
            for fi, p in enumerate(self._cache_paths):
                if fi not in self._memory:
                    self._memory[fi] = self._read(p)

    @staticmethod
    def _write(cache_path: str, arrays: dict) -> None:
        from stylegan.atomic import write_atomically

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        write_atomically(cache_path, write, suffix=".npz")

    @staticmethod
    def _read(cache_path: str) -> dict:
        arrays = _load(cache_path)
        if arrays is None:
            raise RuntimeError(f"{cache_path}: the clip cache file vanished or is damaged; build the ClipSet again")
        return arrays

    def __len__(self) -> int:
        return len(self._clips)

    def __getitem__(self, i: int) -> dict:
        fi, start = (int(x) for x in self._clips[i])
        a = self._memory.get(fi) or self._read(self._cache_paths[fi])
        T, W = self.config.clip_frames, self.mel.window_frames
        ends = a["ends"][start:start + T]
        mels = a["mel_rows"][ends[:, None] - W + np.arange(W)]          # [T, W, n_mels]
        S = self.config.frame_size or 0
        has_video = bool(a["has_video"])
        frames = a["frames"][start:start + T] if has_video else np.zeros((T, 3, S, S), np.uint8)
        return {"mels": torch.from_numpy(np.ascontiguousarray(mels.transpose(0, 2, 1), np.float32)),
                "onset": torch.from_numpy(a["onset"][start:start + T].copy()),
                "onset_peak": torch.from_numpy(a["onset_peak"][start:start + T].astype(np.float32)),
                "mel_rows": torch.from_numpy((ends - ends[0]).astype(np.int64)),   # each frame's window end, in mel rows
                "rms": torch.from_numpy(a["rms"][start:start + T].copy()),
                "frames": torch.from_numpy(np.ascontiguousarray(frames)),
                "has_video": torch.tensor(has_video),
                "label": self.file_labels[fi], "label_index": self._label_index[fi],
                "source": self.files[fi], "start": start}


def collate_clips(items: list[dict]) -> dict:
    """Batch ClipSet items: tensors stacked, numbers as tensors, strings as lists (a DataLoader collate_fn)."""
    out = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(values[0], (bool, int, float)):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out
