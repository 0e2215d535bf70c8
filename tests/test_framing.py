"""Framing (--fit crop|letterbox|stretch, render.fit) on pixel content, and the default model's border: no rim."""
import numpy as np
import pytest
import torch

from conftest import tiny_generator
from sgvis.errors import UserError
from sgvis.outputs.framing import check_fit, fit_images, fit_rects

GREY, WHITE, BLACK = 0.0, 1.0, -1.0          # in the generator's [-1, 1]


def disc_picture(n: int = 200, radius: float = 0.35) -> torch.Tensor:
    """[1, 3, n, n]: a white disc (radius `radius` of the side) centred on mid grey: aspect is measurable, and
    grey is neither the disc nor a letterbox bar."""
    c = (torch.arange(n) + 0.5) / n - 0.5
    inside = (c[None, :] ** 2 + c[:, None] ** 2) <= radius ** 2
    img = torch.where(inside, WHITE, GREY)
    return img.expand(1, 3, n, n).clone()


def disc_extent(frame: np.ndarray) -> tuple[int, int]:
    """Width and height (pixels) of the bright disc in an RGB uint8 frame."""
    bright = frame.mean(-1) > 200
    cols, rows = np.flatnonzero(bright.any(0)), np.flatnonzero(bright.any(1))
    return cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1


def to_uint8(img: torch.Tensor) -> np.ndarray:
    from sgvis.backends.stylegan import images_to_uint8
    return images_to_uint8(img)[0].numpy()


@pytest.mark.parametrize("size", [(320, 180), (180, 320), (401, 97)])
def test_crop_fills_the_frame_and_keeps_the_aspect(size):
    w, h = size
    out = to_uint8(fit_images(disc_picture(radius=0.1), size, "crop"))
    assert out.shape == (h, w, 3)
    dw, dh = disc_extent(out)
    assert abs(dw - dh) <= 2, (dw, dh)                       # still a circle
    scale = max(w, h) / 200                                  # covers: the longer side is the picture's side
    assert abs(dw - 0.2 * 200 * scale) <= 3
    # Filled: no black anywhere (the picture has none), the border is the picture's grey.
    assert out.min() > 100
    edges = np.concatenate([out[0], out[-1], out[:, 0], out[:, -1]])
    assert np.all(np.abs(edges.astype(int) - 128) <= 1)
    # Centred: the disc's middle is the frame's middle.
    bright = out.mean(-1) > 200
    ys, xs = np.nonzero(bright)
    assert abs(xs.mean() - (w - 1) / 2) < 1 and abs(ys.mean() - (h - 1) / 2) < 1


@pytest.mark.parametrize("size", [(320, 180), (180, 320)])
def test_letterbox_keeps_the_whole_picture_with_black_bars(size):
    w, h = size
    out = to_uint8(fit_images(disc_picture(), size, "letterbox"))
    assert out.shape == (h, w, 3)
    side = min(w, h)
    dw, dh = disc_extent(out)
    assert abs(dw - dh) <= 2 and abs(dw - 0.7 * side) <= 3
    bar = (max(w, h) - side) // 2
    bars = [out[:, :bar], out[:, bar + side:]] if w > h else [out[:bar], out[bar + side:]]
    for b in bars:
        assert b.size and np.all(b == 0)                     # exactly black
    picture = out[:, bar:bar + side] if w > h else out[bar:bar + side]
    assert picture.min() > 100                               # the picture, all of it, between the bars
    assert np.all(np.abs(picture[:, [0, -1]].astype(int) - 128) <= 1)


def test_stretch_distorts_by_the_aspect():
    out = to_uint8(fit_images(disc_picture(), (320, 160), "stretch"))
    dw, dh = disc_extent(out)
    assert abs(dw / dh - 2.0) < 0.05
    assert out.min() > 100


def test_same_aspect_is_a_plain_resize_in_every_mode():
    img = disc_picture()
    outs = [fit_images(img, (100, 100), fit) for fit in ("crop", "letterbox", "stretch")]
    assert all(torch.equal(outs[0], o) for o in outs[1:])
    assert fit_images(img, (200, 200), "crop") is img


def test_crop_equals_resizing_everything_and_cutting():
    """The crop resamples only the part it keeps, at the exact cover scale: the same pixels as resizing the whole
    picture and cutting the middle out."""
    import torch.nn.functional as F
    img = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for w, h in [(128, 72), (72, 128), (150, 50), (48, 27)]:
        s = max(w, h) / 64
        full = F.interpolate(img, size=(round(64 * s), round(64 * s)), mode="bicubic", align_corners=False,
                             antialias=True)
        y, x = (full.shape[2] - h) // 2, (full.shape[3] - w) // 2
        torch.testing.assert_close(fit_images(img, (w, h), "crop"), full[:, :, y:y + h, x:x + w], rtol=0,
                                   atol=1e-4)


def test_fit_rects_and_bad_values():
    assert fit_rects(100, 100, 200, 100, "letterbox") == ((0.0, 0.0, 100.0, 100.0), (50, 0, 100, 100))
    assert fit_rects(100, 100, 200, 100, "crop") == ((0.0, 25.0, 100.0, 75.0), (0, 0, 200, 100))
    assert fit_rects(100, 100, 200, 100, "stretch") == ((0.0, 0.0, 100.0, 100.0), (0, 0, 200, 100))
    assert check_fit(None) == "crop"
    with pytest.raises(UserError, match="--fit must be one of crop, letterbox, stretch"):
        check_fit("zoom")


def test_backend_frames_are_framed(monkeypatch):
    """StyleGANBackend.frames: the generator's picture framed by the backend's fit, as uint8 frames."""
    from sgvis.backends.stylegan import StyleGANBackend
    G = tiny_generator(resolution=32)
    ws = torch.zeros(1, G.num_ws, G.w_dim)
    for fit in ("crop", "letterbox", "stretch"):
        backend = StyleGANBackend(G, torch.device("cpu"), precision="fp32", size=(320, 180), fit=fit)
        backend.synthesize = lambda ws: disc_picture(radius=0.1).expand(len(ws), -1, -1, -1)
        frame = backend.frames(ws)[0].numpy()
        assert frame.shape == (180, 320, 3)
        dw, dh = disc_extent(frame)
        if fit == "stretch":
            assert abs(dw / dh - 320 / 180) < 0.05
        else:
            assert abs(dw - dh) <= 2
        assert (frame[:, :20] == 0).all() == (fit == "letterbox")


def test_bad_fit_is_one_line(tmp_path):
    from test_safety_and_errors import _one_clear_line, run_cli
    from audio_fixtures import click_track
    from sgvis.audio.synth import write_wav
    wav = tmp_path / "t.wav"
    write_wav(str(wav), click_track(0.5, 22050)[0], 22050)
    _one_clear_line(run_cli("render", str(wav), "-o", str(tmp_path / "o.mp4"), "--fit", "zoom"), "--fit")
    _one_clear_line(run_cli("render", str(wav), "-o", str(tmp_path / "o.mp4"), "--set", "render.fit=wide"),
                    "render.fit")
    assert not (tmp_path / "o.mp4").exists()


def test_window_draw_crop_fills_letterbox_bars_stretch_fills():
    """The live window's quad (Renderer.draw, offscreen EGL) framed like the frames."""
    try:
        from sgvis.outputs.display import HeadlessSurface, Renderer
        surface = HeadlessSurface((160, 90))
    except Exception as e:                           # noqa: BLE001 - no EGL here
        pytest.skip(f"no headless OpenGL: {str(e).splitlines()[0]}")
    try:
        frame = to_uint8(disc_picture(64, radius=0.1))
        for fit in ("crop", "letterbox", "stretch"):
            renderer = Renderer(surface.ctx, (64, 64), fit=fit)
            renderer.upload(frame)
            surface.begin()
            renderer.draw(160, 90)
            surface.present()
            out = surface.read()
            dw, dh = disc_extent(out)
            if fit == "letterbox":
                assert (out[:, :30] == 0).all() and (out[:, -30:] == 0).all() and out[:, 40:120].min() > 100
                assert abs(dw - dh) <= 2
            else:
                assert out.min() > 100                        # fills the window
                if fit == "crop":
                    assert abs(dw - dh) <= 2 and abs(dw - 0.2 * 160) <= 3
                else:
                    assert abs(dw - 0.2 * 160) <= 3 and abs(dh - 0.2 * 90) <= 3 and dw > dh + 8
    finally:
        surface.close()


def test_grown_networks_upsample_the_image_border_clamped():
    """The cause of the default model's rim: zero padding in the skip path's upsampling pulls the border of the
    finished low-resolution image towards 0 (mid grey).  Clamped, a flat image stays flat to its edge; the
    fast path does the same as the reference."""
    from cuda_ops import setup_filter, upsample2d, upsample2d_clamped
    from stylegan.fast import FastSynthesis
    f = setup_filter([1, 3, 3, 1])
    flat = torch.full([1, 3, 8, 8], -0.6)
    assert torch.allclose(upsample2d_clamped(flat, f), torch.full([1, 3, 16, 16], -0.6))
    assert upsample2d(flat, f)[0, 0, 0, 5] > -0.5                    # zero padding: lighter border
    G = tiny_generator(resolution=32, grown_from=8)
    assert [b.clamp_image_border for b in G.synthesis.blocks()] == [False, False, True, True]
    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(1)), None)
    ref = G.synthesis(ws, noise_mode="const")
    fast = FastSynthesis(G, device=torch.device("cpu"), precision="fp32")(ws)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-4)
    plain = tiny_generator(resolution=32)
    plain.load_state_dict(G.state_dict())
    other = plain.synthesis(ws, noise_mode="const")
    assert torch.equal(other[..., 4:-4, 4:-4], ref[..., 4:-4, 4:-4])   # only the border differs
    assert not torch.equal(other, ref)
    with pytest.raises(ValueError, match="grown_from"):
        tiny_generator(resolution=32, grown_from=32)


def ring_difference(frames: torch.Tensor, k: int = 2) -> float:
    """Mean grey level of the outer k-pixel ring minus that of the k-pixel ring just inside it."""
    g = frames.float().mean(-1)
    h, w = g.shape[1:]
    outer = torch.ones(h, w, dtype=torch.bool)
    outer[k:h - k, k:w - k] = False
    inner = torch.zeros(h, w, dtype=torch.bool)
    inner[k:h - k, k:w - k] = True
    inner[2 * k:h - 2 * k, 2 * k:w - 2 * k] = False
    return (g[:, outer].mean() - g[:, inner].mean()).item()


@pytest.mark.parametrize("size, fit", [(None, "crop"), ((320, 180), "crop"), ((192, 192), "stretch")])
def test_default_model_has_no_light_rim(size, fit):
    """The outer 2 px of the default model's frames are within a couple of grey levels of the 2 px inside them
    (they were ~15 levels lighter before the grown blocks upsampled the 64^2 image border-clamped)."""
    from sgvis.backends.stylegan import StyleGANBackend, load_model
    G = load_model("default")
    backend = StyleGANBackend(G, torch.device("cpu"), size=size, fit=fit)
    torch.manual_seed(0)
    with torch.inference_mode():
        ws = G.mapping(torch.randn(24, G.z_dim), None)
    frames = torch.cat([backend.frames(ws[i:i + 8]) for i in range(0, len(ws), 8)])
    assert abs(ring_difference(frames)) < 2.5, ring_difference(frames)
