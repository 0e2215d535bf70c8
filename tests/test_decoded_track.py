"""A render decodes its range of the track once (sgvis.audio.track): the scan, the frame analysis and the muxed
sound all come from that one decode, and the copies it keeps read back exactly."""
import os
import tempfile
import threading

import numpy as np
import pytest

import stylegan
from audio_fixtures import click_track, read_video, write_audio
from conftest import tiny_generator

import sgvis.audio.decode as audio_decode
import sgvis.audio.track as track_module
import sgvis.outputs.files as files_module
from sgvis.audio.track import DecodedTrack, SampleSpool

SR = 44100


@pytest.fixture(scope="module")
def stereo_clicks(tmp_path_factory):
    """Stereo 44.1 kHz clicks with a different level in each channel (a downmix that drops one shows)."""
    d = tmp_path_factory.mktemp("audio")
    mono, _ = click_track(3.0, SR)
    path = d / "clicks.flac"
    write_audio(path, np.stack([mono, 0.5 * mono]), SR, channels=2)
    return str(path)


def test_mux_copy_is_the_decode_at_the_videos_format_and_analysis_copy_the_mono_decode(stereo_clicks):
    with DecodedTrack(stereo_clicks, 0.5, 2.5, 22050, mux=(SR, "stereo")) as track:
        scanned = np.concatenate([b[0] for b in track.decode()])
        again = np.concatenate([b[0] for b in track.analysis_blocks()])
        muxed = np.concatenate(list(track.blocks(SR, "stereo")), axis=1)
        other = np.concatenate(list(track.blocks(48000, "stereo")), axis=1)     # another format: decoded anew
        held = track.held_seconds
    straight_mux = np.concatenate(list(audio_decode.decode_blocks(stereo_clicks, SR, "stereo", 0.5, 2.5)), axis=1)
    straight_mono = np.concatenate([b[0] for b in audio_decode.decode_blocks(stereo_clicks, 22050, "mono", 0.5,
                                                                             2.5)])
    np.testing.assert_array_equal(muxed, straight_mux)
    np.testing.assert_array_equal(scanned, again)
    assert abs(len(scanned) - len(straight_mono)) <= 2
    n = min(len(scanned), len(straight_mono))
    # the same mix as FFmpeg's own stereo -> mono, up to the resampler's rounding at the edges
    err = np.abs(scanned[64:n - 64] - straight_mono[64:n - 64])
    assert err.max() < 2e-3 * np.abs(straight_mono).max(), err.max()
    assert abs(held - 2.0) < 1e-3
    assert other.shape[0] == 2 and abs(other.shape[1] - 2 * 48000) <= 2


def test_spool_moves_to_an_unnamed_file_and_reads_back_from_two_threads(tmp_path, monkeypatch):
    monkeypatch.setattr(track_module, "SPOOL_MEMORY", 1000)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    spool = SampleSpool(2)
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((2, n)).astype(np.float32) for n in (7, 3000, 1, 5000)]
    for b in blocks:
        spool.append(b)
    assert spool._file._rolled                     # on disk now, past the memory limit
    assert os.listdir(tmp_path) == []              # ... in a file with no name
    want = np.concatenate(blocks, axis=1)
    got = [None, None]

    def read(k):
        got[k] = np.concatenate(list(spool.read(block_samples=333 + k)), axis=1)

    threads = [threading.Thread(target=read, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spool.close()
    np.testing.assert_array_equal(got[0], want)
    np.testing.assert_array_equal(got[1], want)


def test_a_render_decodes_the_track_once(tmp_path, stereo_clicks, monkeypatch):
    from sgvis.render import RenderJob, render
    model = tmp_path / "tiny.safetensors"
    stylegan.save(tiny_generator("stylegan2", resolution=32), model)
    calls = []
    real = audio_decode.decode_blocks

    def counting(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    for module in (audio_decode, track_module, files_module):
        monkeypatch.setattr(module, "decode_blocks", counting)
    out = tmp_path / "out.mp4"
    render(RenderJob(audio=stereo_clicks, output=str(out), model=str(model), fps=10.0))
    assert calls == [stereo_clicks]
    frames, vdur, adur, codec = read_video(out)
    assert codec == "aac" and len(frames) == 30 and abs(adur - 3.0) <= 0.1
