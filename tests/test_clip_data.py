"""sgvis.data.clip_data (training clips for the learned steering) and sgvis.audio.synth (synthesized training music)."""
import hashlib
import os
import shutil

import numpy as np
import pytest
import torch

from audio_fixtures import click_track, write_audio
from sgvis.audio import decode as audio_in
from sgvis.data import clip_data
from sgvis.data.clip_data import ClipSet, ClipSetConfig, collate_clips, write_synth_music
from sgvis.errors import UserError
from sgvis.features.analysis import FeatureExtractor, MelConfig, frame_features
from sgvis.outputs.files import VideoSink
from sgvis.steer.reactive import OFFLINE_LOOKAHEAD_S
from sgvis.audio.synth import random_song, synth_music

SR = 22050
FPS = 30.0


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A click track (wav) and a 2 s mp4 (25 fps, 48x32, brightness ramping 5 per frame, red bands at the left
    and right that a centre crop removes) carrying the click track as sound."""
    d = tmp_path_factory.mktemp("media")
    y, clicks = click_track(3.0, SR)
    write_audio(d / "clicks.wav", y, SR)
    sink = VideoSink(str(d / "ramp.mp4"), 25, 48, 32, audio_path=str(d / "clicks.wav"))
    for k in range(50):
        img = np.full((32, 48, 3), 5 * k, np.uint8)
        img[:, :8] = img[:, -8:] = (255, 0, 0)
        sink.write(img)
    sink.close()
    return d, clicks


def folder(tmp_path, name, *files):
    root = tmp_path / name
    root.mkdir()
    for src, dst in files:
        os.makedirs(os.path.dirname(root / dst), exist_ok=True)
        shutil.copy(src, root / dst)
    return root


def all_frames(ds, key):
    """Per-frame values of a one-file ClipSet with stride == clip_frames, in time order."""
    return torch.cat([ds[i][key] for i in range(len(ds))])


def test_audio_clips_match_render_features(media, tmp_path):
    d, clicks = media
    root = folder(tmp_path, "a", (d / "clicks.wav", "clicks.wav"))
    cfg = ClipSetConfig(fps=FPS, clip_frames=8, frame_size=None)
    ds = ClipSet(str(root), cfg, cache_dir=str(tmp_path / "cache"), progress=False)
    n = int(np.floor(audio_in.probe(str(root / "clicks.wav")).duration * FPS))
    assert n == 90 and len(ds) == n // 8 and ds.files == [str(root / "clicks.wav")] and not ds.has_video
    item = ds[3]
    assert item["mels"].shape == (8, 80, 43) and item["mels"].dtype == torch.float32
    assert item["onset"].shape == item["rms"].shape == (8,) and item["onset"].dtype == torch.float32
    assert item["frames"].shape == (8, 3, 0, 0) and item["frames"].dtype == torch.uint8
    assert not item["has_video"] and item["label"] == "" and item["label_index"] == -1 and item["start"] == 24
    # What render steers with: the same frame_features over the same decoded audio.
    mel = MelConfig()
    blocks = audio_in.decode_blocks(str(root / "clicks.wav"), mel.sample_rate, "mono")
    feats = list(frame_features(FeatureExtractor(mel), blocks, n, FPS, OFFLINE_LOOKAHEAD_S))
    want = np.stack([f.mel for f in feats[:len(ds) * 8]])
    np.testing.assert_allclose(all_frames(ds, "mels").numpy(), want, atol=0.01)      # stored as float16
    for key in ("onset", "rms"):
        want = np.float32([getattr(f, key) for f in feats[:len(ds) * 8]])
        np.testing.assert_array_equal(all_frames(ds, key).numpy(), want)
    # Onsets peak at the clicks.
    onset = all_frames(ds, "onset").numpy()
    near = np.zeros(len(onset), bool)
    peaks = []
    for c in clicks[clicks * FPS < len(onset) - 1]:
        k = int(round(c * FPS))
        near[k - 1:k + 2] = True
        peaks.append(onset[k - 1:k + 2].max())
    assert len(peaks) == 6 and min(peaks) > 3 * np.median(onset[~near])
    # Overlapping clips with a stride.
    ds4 = ClipSet(str(root), ClipSetConfig(fps=FPS, clip_frames=8, stride=4, frame_size=None),
                  cache_dir=str(tmp_path / "cache"), progress=False)
    assert len(ds4) == (n - 8) // 4 + 1 and ds4[1]["start"] == 4
    torch.testing.assert_close(ds4[2]["mels"], ds[1]["mels"])


def test_video_frames_follow_the_source(media, tmp_path):
    d, _ = media
    root = folder(tmp_path, "v", (d / "ramp.mp4", "ramp.mp4"), (d / "clicks.wav", "z.wav"))
    ds = ClipSet(str(root), ClipSetConfig(fps=FPS, clip_frames=6, frame_size=16), cache_dir=str(tmp_path / "c"),
                 progress=False)
    assert ds.has_video and ds.files == [str(root / "ramp.mp4"), str(root / "z.wav")]
    video = [ds[i] for i in range(len(ds)) if ds[i]["source"].endswith("ramp.mp4")]
    assert len(video) == 15 and all(v["has_video"] for v in video)     # the sound's 3 s at 30 fps, clips of 6
    frames = torch.cat([v["frames"] for v in video]).numpy()
    assert frames.shape == (90, 3, 16, 16) and frames.dtype == np.uint8
    # Frame i shows source frame floor(i * 25 / 30) (brightness 5 per frame), the last one after the picture's
    # 2 s; the red bands at the sides are cropped away.
    want = 5 * np.minimum(np.floor(np.arange(90) * 25 / 30), 49)
    np.testing.assert_allclose(frames[:, 1].reshape(90, -1).mean(1), want, atol=4)
    assert np.abs(frames[:, 0].astype(float) - want[:, None, None]).max() < 40
    audio = next(ds[i] for i in range(len(ds)) if ds[i]["source"].endswith("z.wav"))
    assert not audio["has_video"] and audio["frames"].shape == (6, 3, 16, 16) and not audio["frames"].any()


def test_cache_reused_and_keyed(media, tmp_path, monkeypatch):
    d, _ = media
    root = folder(tmp_path, "c", (d / "ramp.mp4", "ramp.mp4"), (d / "clicks.wav", "clicks.wav"))
    cache = tmp_path / "cache"
    cfg = ClipSetConfig(fps=FPS, clip_frames=8, frame_size=16)
    first = ClipSet(str(root), cfg, cache_dir=str(cache), progress=False)
    assert len(os.listdir(cache)) == 2

    def boom(*a, **k):
        raise AssertionError("decoded again")
    with monkeypatch.context() as m:
        for name in ("decode_blocks", "probe"):
            m.setattr(audio_in, name, boom)
        m.setattr(clip_data, "video_frames", boom)
        again = ClipSet(str(root), cfg, cache_dir=str(cache), progress=False)
        shorter = ClipSet(str(root), ClipSetConfig(fps=FPS, clip_frames=4, frame_size=16), cache_dir=str(cache),
                          progress=False)     # clip length only cuts the cached frames differently
    assert len(again) == len(first) and len(shorter) > len(first)
    for i in (0, len(first) - 1):
        for key in ("mels", "onset", "rms", "frames"):
            torch.testing.assert_close(again[i][key], first[i][key])
    ClipSet(str(root), ClipSetConfig(fps=15, clip_frames=8, frame_size=16), cache_dir=str(cache), progress=False)
    assert len(os.listdir(cache)) == 4
    os.utime(root / "clicks.wav", ns=(1, 1))                            # a changed file is decoded again
    ClipSet(str(root), cfg, cache_dir=str(cache), progress=False)
    assert len(os.listdir(cache)) == 5
    # $SGVIS_CACHE picks the default folder; an unwritable cache still gives clips (kept in memory).
    monkeypatch.setenv("SGVIS_CACHE", str(tmp_path / "env"))
    ClipSet(str(root), cfg, progress=False)
    assert len(os.listdir(tmp_path / "env" / "clips")) == 2
    (tmp_path / "file").write_text("x")
    with pytest.warns(UserWarning, match="cannot write the clip cache"):
        mem = ClipSet(str(root), cfg, cache_dir=str(tmp_path / "file"), progress=False)
    torch.testing.assert_close(mem[1]["mels"], first[1]["mels"])


def test_labels(media, tmp_path):
    d, _ = media
    wav = d / "clicks.wav"
    kw = dict(config=ClipSetConfig(fps=10, clip_frames=4, frame_size=None), cache_dir=str(tmp_path / "c"),
              progress=False)
    # (a) CSV with a header: relative paths, base names, names without extension; unmatched files get "".
    root = folder(tmp_path, "csv", (wav, "x/a.wav"), (wav, "b.wav"), (wav, "c.wav"), (wav, "d.wav"))
    (tmp_path / "l.csv").write_text("id,Path,caption\n1,x/a.wav,rain on a roof\n2,b.wav,dog barking\n"
                                    "3,c,rain on a roof\n")
    with pytest.warns(UserWarning, match="no label for 1 of 4"):
        ds = ClipSet(str(root), labels=str(tmp_path / "l.csv"), **kw)
    assert ds.labels == ["dog barking", "rain on a roof"]
    by_file = {os.path.basename(ds[i]["source"]): (ds[i]["label"], ds[i]["label_index"]) for i in range(len(ds))}
    assert by_file == {"a.wav": ("rain on a roof", 1), "b.wav": ("dog barking", 0), "c.wav": ("rain on a roof", 1),
                       "d.wav": ("", -1)}
    # (b) VGGSound: no header, youtube_id,start_seconds,label,split; files {id}_{start:06d}.*
    root = folder(tmp_path, "vgg", (wav, "abc-_1_000030.wav"), (wav, "zz_000000.flac"))
    (tmp_path / "vgg.csv").write_text("abc-_1,30,playing drums,train\nzz,0,waves,test\nother,5,cat,train\n")
    ds = ClipSet(str(root), labels=str(tmp_path / "vgg.csv"), **kw)
    assert ds.labels == ["playing drums", "waves"]
    got = sorted((ds[i]["label"], ds[i]["label_index"]) for i in (0, len(ds) - 1))
    assert got == [("playing drums", 0), ("waves", 1)]
    # (c) Landscape layout: the folder name.
    root = folder(tmp_path, "land", (wav, "ocean_waves/1.wav"), (wav, "fire_crackling/2.wav"))
    ds = ClipSet(str(root), **kw)
    assert ds.labels == ["fire crackling", "ocean waves"] and ds[0]["label"] == "fire crackling"
    batch = collate_clips([ds[0], ds[len(ds) - 1]])
    assert batch["label"] == ["fire crackling", "ocean waves"] and batch["label_index"].tolist() == [0, 1]
    # A CSV that cannot be parsed, or read.
    (tmp_path / "bad.csv").write_text("name;what\nfoo;bar\n")
    for bad in ("bad.csv", "missing.csv"):
        with pytest.raises(UserError, match="labels CSV") as e:
            ClipSet(str(root), labels=str(tmp_path / bad), **kw)
        assert "\n" not in str(e.value)


def test_bad_and_short_files_skipped(media, tmp_path):
    d, _ = media
    y, _ = click_track(0.2, SR)
    write_audio(tmp_path / "short.wav", y, SR)
    (tmp_path / "corrupt.mp3").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not media")
    kw = dict(config=ClipSetConfig(fps=FPS, clip_frames=8, frame_size=16), cache_dir=str(tmp_path / "c"),
              progress=False)
    junk = [(tmp_path / n, n) for n in ("short.wav", "corrupt.mp3", "empty.wav", "notes.txt")]
    root = folder(tmp_path, "mixed", (d / "clicks.wav", "good.wav"), *junk)
    with pytest.warns(UserWarning) as record:
        ds = ClipSet(str(root), **kw)
    messages = [str(w.message) for w in record]
    assert any("skipped 2 unreadable" in m and "corrupt.mp3" in m and "empty.wav" in m for m in messages)
    assert any("skipped 1 file(s) shorter than one clip" in m for m in messages)
    assert ds.files == [str(root / "good.wav")] and len(ds) == 11
    with pytest.warns(UserWarning) as record, pytest.raises(UserError, match="no usable clips") as e:
        ClipSet(str(folder(tmp_path, "bad", *junk)), **kw)
    assert len(record) == 2 and "\n" not in str(e.value) and "2 unreadable, 1 shorter" in str(e.value)
    with pytest.raises(UserError, match="no audio or video files"):
        ClipSet(str(folder(tmp_path, "none", *junk[3:])), **kw)
    with pytest.raises(UserError, match="no such folder"):
        ClipSet(str(tmp_path / "nowhere"), **kw)


def test_dataloader(media, tmp_path):
    d, _ = media
    root = folder(tmp_path, "dl", (d / "ramp.mp4", "forest/ramp.mp4"), (d / "clicks.wav", "city/c.wav"))
    ds = ClipSet(str(root), ClipSetConfig(fps=FPS, clip_frames=5, frame_size=8), cache_dir=str(tmp_path / "c"),
                 progress=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, collate_fn=collate_clips,
                                         generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert sum(len(b["source"]) for b in batches) == len(ds) == 18 + 18
    b = batches[0]
    assert b["mels"].shape == (4, 5, 80, 43) and b["frames"].shape == (4, 5, 3, 8, 8)
    assert b["onset"].shape == b["rms"].shape == (4, 5) and b["has_video"].dtype == torch.bool
    assert b["label_index"].dtype == torch.int64 and b["start"].shape == (4,)
    assert all((lab == "forest") == bool(v) for lab, v in zip(b["label"], b["has_video"]))


def test_synth_music(tmp_path):
    paths = write_synth_music(str(tmp_path / "a"), 3, seconds=4.0, seed=1, progress=False)
    again = write_synth_music(str(tmp_path / "b"), 2, seconds=4.0, seed=1, progress=False)
    other = write_synth_music(str(tmp_path / "c"), 1, seconds=4.0, seed=2, progress=False)
    digest = [hashlib.sha1(open(p, "rb").read()).hexdigest() for p in paths + again + other]
    assert [os.path.basename(p) for p in paths] == ["track_000.wav", "track_001.wav", "track_002.wav"]
    assert digest[:2] == digest[3:5] and len(set(digest[:3] + digest[5:])) == 4
    info = audio_in.probe(paths[0])
    assert (info.sample_rate, info.channels, info.codec) == (22050, 1, "pcm_s16le")
    assert abs(info.duration - 4.0) < 1e-3
    y = synth_music(5, 2.0, sr=16000)
    assert y.dtype == np.float32 and len(y) == 32000 and 0.5 < np.abs(y).max() <= 0.9 + 1e-6
    songs = [random_song(s) for s in range(12)]
    bpms = [s.bpm for s in songs]
    assert min(bpms) >= 80 and max(bpms) <= 160 and max(bpms) - min(bpms) > 30
    assert len({s.chords for s in songs}) > 6 and len({s.kick for s in songs}) > 3
    assert any(s.swing > 0 for s in songs) and any(s.swing == 0 for s in songs)
    assert any(sec.name == "silence" and not sec.parts for s in songs for sec in s.sections)
    assert len({(s.chord_timbre, s.bass_timbre) for s in songs}) > 4
