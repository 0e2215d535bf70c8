"""`sgvis dataset`: images / video / procedural sources, skip counting, manifest, zip, atomic writes."""
import argparse
import json
import os
import zipfile

import numpy as np
import pytest

from sgvis.data import dataset as ds
from sgvis.errors import UserError

Image = pytest.importorskip("PIL.Image")


def run_command(*argv):
    """Local harness until `sgvis dataset` is wired into sgvis.cli: parse with our subparser, run func."""
    parser = argparse.ArgumentParser(prog="sgvis")
    ds.register_cli(parser.add_subparsers())
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def make_image_folder(root, with_bad=True):
    root.mkdir()
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray(rng.integers(0, 255, (50, 20, 3), dtype=np.uint8)).save(root / "sub" / "b.jpg")
    Image.fromarray(rng.integers(0, 255, (24, 24, 4), dtype=np.uint8), "RGBA").save(root / "c.png")
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8), "L").save(root / "d.bmp")
    (root / "notes.txt").write_text("not an image, ignored")
    if with_bad:
        (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 3)
        good = (root / "a.png").read_bytes()
        (root / "truncated.png").write_bytes(good[: len(good) // 3])
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / "tiny.png")
    return root


def test_from_image_folder_skips_corrupt_and_tiny(tmp_path, capsys):
    src = make_image_folder(tmp_path / "imgs")
    out = tmp_path / "set"
    assert run_command("dataset", out, "--images", src, "--resolution", 16, "--workers", 2, "--quiet") == 0
    assert "4 images" in capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "sgvis-dataset" and m["count"] == 4 and m["resolution"] == 16
    assert m["skipped"]["corrupt"] == 2 and m["skipped"]["too_small"] == 1
    assert m["source"] == "images" and "licence" in m and "unknown" in m["licence"]
    assert sorted(p.name for p in out.iterdir()) == ["00000000.png", "00000001.png", "00000002.png",
                                                     "00000003.png", "manifest.json"]
    for p in out.glob("*.png"):
        with Image.open(p) as im:
            assert im.size == (16, 16) and im.mode == "RGB"
    # Loadable for training.
    data = ds.open_dataset(out)
    assert len(data) == 4 and data[3].shape == (3, 16, 16) and data.resolution == 16
    # --min-size lets small images in (upscaled).
    out2 = tmp_path / "set2"
    ds.build_dataset(out2, resolution=16, images=[src], min_size=4, workers=1, progress=False)
    assert json.loads((out2 / "manifest.json").read_text())["count"] == 5


def test_centre_crop_and_resize():
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:, :16] = (255, 0, 0)           # left quarter: cropped away
    arr[:, 16:32] = (0, 255, 0)
    arr[:, 32:48] = (0, 0, 255)
    arr[:, 48:] = (255, 255, 255)       # right quarter: cropped away
    out = np.asarray(ds.square_resize(Image.fromarray(arr), 16))
    assert out.shape == (16, 16, 3)
    assert (out[:, :6, 1] > 200).all() and (out[:, :6, 0] < 30).all()     # green left
    assert (out[:, -6:, 2] > 200).all() and (out[:, -6:, 0] < 30).all()   # blue right


def write_video(path, n_frames=30, fps=10, size=(64, 48)):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n_frames):
            arr = np.zeros((size[1], size[0], 3), np.uint8)
            arr[..., 0] = (i * 37) % 256
            arr[..., 1] = np.linspace(0, 255, size[0])[None, :].astype(np.uint8)
            arr[: size[1] // 2, :, 2] = (255 - i * 8) % 256
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_from_video(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "loop.mp4")                        # 3 s at 10 fps
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 garbage" * 10)
    out = tmp_path / "vj.zip"
    m = ds.build_dataset(out, resolution=16, videos=[videos], fps=2, progress=False, workers=1)
    assert m["count"] == 6                                  # t = 0, 0.5, ..., 2.5 s
    assert m["skipped"]["unreadable_videos"] == 1
    assert m["source"] == "video" and m["sources"][0]["fps"] == 2
    data = ds.open_dataset(out)
    frames = np.stack([data.load(i) for i in range(len(data))])
    assert frames.shape == (6, 16, 16, 3)
    assert len({f.tobytes() for f in frames}) == 6
    # --max-frames-per-video caps each video.
    m = ds.build_dataset(tmp_path / "capped", resolution=16, videos=[videos / "loop.mp4"], fps=5,
                         max_frames_per_video=4, progress=False, workers=1)
    assert m["count"] == 4


def test_procedural_zip_is_deterministic(tmp_path):
    a = ds.build_dataset(tmp_path / "a.zip", resolution=16, procedural=6, seed=3, workers=1, progress=False)
    assert a["count"] == 6 and a["source"] == "procedural" and a["seed"] == 3 and "CC0" in a["licence"]
    with zipfile.ZipFile(tmp_path / "a.zip") as z:
        names = sorted(z.namelist())
        assert names == [f"{i:08d}.png" for i in range(6)] + ["manifest.json"]
    ds.build_dataset(tmp_path / "b", resolution=16, procedural=6, seed=3, workers=2, progress=False)
    da, db = ds.open_dataset(tmp_path / "a.zip"), ds.open_dataset(tmp_path / "b")
    assert all(np.array_equal(da.load(i), db.load(i)) for i in range(6))
    styles = ds.build_dataset(tmp_path / "c", resolution=16, procedural=2, styles=["flow", "plasma"], workers=1,
                              progress=False)
    assert styles["sources"][0]["styles"] == ["flow", "plasma"]


def test_remake_a_zip_dataset_at_a_lower_resolution(tmp_path):
    """--images accepts a zip of images (another dataset): the same images at another resolution, in order,
    e.g. the low-resolution stage of a grown (train-gan --grow-from) run."""
    ds.build_dataset(tmp_path / "big.zip", resolution=32, procedural=5, seed=2, workers=1, progress=False)
    m = ds.build_dataset(tmp_path / "small.zip", resolution=8, images=[tmp_path / "big.zip"], workers=2,
                         progress=False)
    assert m["count"] == 5 and m["sources"][0]["files"] == 5             # manifest.json is not an image
    big, small = ds.open_dataset(tmp_path / "big.zip"), ds.open_dataset(tmp_path / "small.zip")
    for i in range(5):
        expected = np.asarray(Image.fromarray(big.load(i)).resize((8, 8), Image.LANCZOS))
        got = small.load(i)
        assert np.abs(got.astype(int) - expected.astype(int)).mean() < 3, i   # image i is image i, downsized
    (tmp_path / "broken.zip").write_bytes(b"PK not really")
    with pytest.raises(UserError, match="not a readable zip"):
        ds.build_dataset(tmp_path / "x.zip", resolution=8, images=[tmp_path / "broken.zip"], progress=False)
    assert not (tmp_path / "x.zip").exists()


def test_mixed_sources_jpg_and_max_images(tmp_path):
    src = make_image_folder(tmp_path / "imgs", with_bad=False)
    m = ds.build_dataset(tmp_path / "mix.zip", resolution=16, images=[src], procedural=10, max_images=7,
                         image_format="jpg", workers=1, progress=False)
    assert m["count"] == 7 and m["source"] == "images+procedural" and "unknown" in m["licence"]
    assert ds.open_dataset(tmp_path / "mix.zip").names[0].endswith(".jpg")


def test_refuses_to_overwrite_and_writes_atomically(tmp_path):
    out = tmp_path / "set.zip"
    run_command("dataset", out, "--procedural", 2, "--resolution", 8, "--workers", 1, "--quiet")
    before = out.read_bytes()
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        run_command("dataset", out, "--procedural", 3, "--resolution", 8, "--workers", 1, "--quiet")
    assert out.read_bytes() == before
    run_command("dataset", out, "--procedural", 3, "--resolution", 8, "--workers", 1, "--quiet", "--overwrite")
    assert ds.open_dataset(out).manifest["count"] == 3
    # A build that fails leaves neither output nor temporary files behind.
    empty = tmp_path / "only-bad"
    empty.mkdir()
    (empty / "x.png").write_bytes(b"garbage")
    with pytest.raises(UserError, match="no usable images.*1 corrupt"):
        run_command("dataset", tmp_path / "new", "--images", empty, "--resolution", 8, "--workers", 1, "--quiet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["only-bad", "set.zip"]


@pytest.mark.parametrize("argv, message", [
    (["--procedural", "2", "--resolution", "100"], "power of two"),
    ([], "nothing to build"),
    (["--images", "/nonexistent/dir"], "no such file"),
    (["--video", "/nonexistent.mp4"], "no such file"),
    (["--procedural", "2", "--styles", "warp,bogus"], "unknown procedural style"),
])
def test_bad_input_is_a_user_error(tmp_path, argv, message):
    with pytest.raises(UserError, match=message):
        run_command("dataset", tmp_path / "out", "--quiet", *argv)


def test_bad_output_location_and_empty_folders(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        run_command("dataset", tmp_path / "missing" / "out", "--procedural", 1, "--quiet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files"):
        run_command("dataset", tmp_path / "out", "--images", tmp_path / "empty", "--quiet")


def test_reading_bad_datasets(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        ds.open_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty"):
        ds.open_dataset(tmp_path / "empty")
    raw = make_image_folder(tmp_path / "raw", with_bad=False)
    with pytest.raises(UserError, match="no manifest.json"):
        ds.open_dataset(raw)
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match="not a zip"):
        ds.open_dataset(tmp_path / "junk.zip")
    good = tmp_path / "good"
    ds.build_dataset(good, resolution=8, procedural=3, workers=1, progress=False)
    os.unlink(good / "00000001.png")
    with pytest.raises(UserError, match="manifest says 3 images but 2"):
        ds.open_dataset(good)
    (good / "00000001.png").write_bytes(b"garbage")
    data = ds.open_dataset(good)
    with pytest.raises(UserError, match="00000001.png is unreadable"):
        data[1]
