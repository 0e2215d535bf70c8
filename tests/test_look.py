"""The contour look: isolines that travel with the picture, so motion in soft colour fields shows to optical flow;
on for the built-in model only, a live control, one clear line for a bad setting."""
import numpy as np
import pytest
import torch

import stylegan
from audio_fixtures import click_track, write_audio
from conftest import tiny_generator
from test_safety_and_errors import run_cli


def soft_field(shift_px: float = 0.0, size: int = 128) -> torch.Tensor:
    """A soft colour field like the built-in model's pictures (two wide blobs), moved right by shift_px; [1,3,H,W]
    in [-1, 1]."""
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                          indexing="ij")
    x = x - shift_px
    a = torch.exp(-((x - 45) ** 2 + (y - 60) ** 2) / (2 * 30.0 ** 2))
    b = torch.exp(-((x - 90) ** 2 + (y - 75) ** 2) / (2 * 22.0 ** 2))
    img = torch.stack([0.9 * a + 0.2 * b, 0.3 * a + 0.8 * b, 0.5 * (1 - a)], 0)[None]
    return (img * 2 - 1).float()


def to_gray_u8(img: torch.Tensor) -> np.ndarray:
    import cv2
    rgb = ((img[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def flow_between(a: torch.Tensor, b: torch.Tensor) -> float:
    from sgvis.eval.av_align import flow_trajectory
    return float(flow_trajectory([to_gray_u8(a), to_gray_u8(b), to_gray_u8(b)])[0][1])


def test_contours_make_a_soft_field_shift_visible_to_optical_flow():
    from sgvis.backends.look import Look
    look = Look({"contours": {"amount": 1.0}})
    plain = flow_between(soft_field(0), soft_field(2))
    lined = flow_between(look(soft_field(0)), look(soft_field(2)))
    assert plain < 0.05                     # a 2 px shift of a soft field: flow sees next to nothing
    assert lined > 0.5                      # with its isolines, the same shift reads as motion
    assert flow_between(look(soft_field(0)), look(soft_field(0))) < 0.02     # no move: (almost) no flow


def test_contours_travel_with_the_picture_and_stay_in_range():
    from sgvis.backends.look import Look
    look = Look({"contours": {"amount": 1.0}})
    a, b = look(soft_field(0)), look(soft_field(8))
    assert torch.allclose(b[..., 40:120], a[..., 32:112], atol=1e-4)      # the lines moved with the content
    assert a.min() >= -1 and a.max() <= 1
    lines = (a - soft_field(0)).abs().amax(1)[0]                           # where the look changed the picture
    assert 0.05 < float((lines > 0.2).float().mean()) < 0.5                # thin lines, not a wash over it all


def test_amount_auto_is_on_for_the_builtin_model_only_and_is_a_live_control():
    from sgvis.backends.look import Look
    assert Look({}, builtin_model=True).contours == 1.0
    assert Look({}, builtin_model=False).contours == 0.0
    look = Look({}, builtin_model=False)
    img = soft_field(0)
    assert torch.equal(look(img), img)                                     # off: untouched
    assert look.apply_control("look.contours", 0.5) and look.contours == 0.5
    half, full = look(img), Look({"contours": {"amount": 1.0}})(img)
    assert torch.allclose(half - img, 0.5 * (full - img), atol=1e-5)
    assert not look.apply_control("motion.amount", 1.0)


@pytest.mark.parametrize("setting, match", [
    ({"contours": {"amount": 2}}, "look.contours.amount must be a number from 0 to 1"),
    ({"contours": {"levels": "many"}}, "look.contours.levels"),
    ({"contours": {"lines": 3}}, "look.contours.lines"),
    ({"contours": 1}, "look.contours"),
])
def test_bad_look_settings_are_one_clear_error(setting, match):
    from sgvis.backends.look import resolve_look
    from sgvis.errors import UserError
    with pytest.raises(UserError, match=match):
        resolve_look(setting, builtin_model=True)


def test_builtin_model_is_recognised_by_name_and_path():
    from sgvis.backends.stylegan import default_model_path, is_builtin_model
    assert is_builtin_model(None) and is_builtin_model("default") and is_builtin_model(default_model_path())
    assert not is_builtin_model("/some/where/else.pkl")


def test_render_applies_the_look_to_your_model_only_when_asked(tmp_path):
    model = tmp_path / "m.safetensors"
    stylegan.save(tiny_generator("stylegan2", resolution=32), model)
    samples, _ = click_track(1.0, 22050)
    wav = tmp_path / "a.wav"
    write_audio(wav, samples, 22050)
    frames = {}
    for name, extra in (("auto", []), ("on", ["--set", "look.contours.amount=1"])):
        out = tmp_path / name
        result = run_cli("render", str(wav), "-o", str(tmp_path / f"{name}.mp4"), "--model", str(model),
                         "--png-dir", str(out), "--fps", "10", *extra)
        assert result.returncode == 0, result.stderr
        from PIL import Image
        frames[name] = np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("frame_*.png"))]).astype(float)
    assert np.abs(frames["on"] - frames["auto"]).mean() > 2          # auto left your model's pictures alone
    result = run_cli("render", str(wav), "-o", str(tmp_path / "bad.mp4"), "--model", str(model),
                     "--set", "look.contours.amount=3")
    assert result.returncode == 2 and "look.contours.amount" in result.stderr
    assert not (tmp_path / "bad.mp4").exists()


def test_the_builtin_model_moves_on_the_beat_as_optical_flow_sees_it(tmp_path):
    """End to end, as `sgvis render` runs for a user with the built-in model: a click track's render moves (not
    frozen) and its flow peaks land on the clicks (AV-Align with TempoTokens' 0.1 px floor); with the look switched
    off the same render is frozen to the flow."""
    from sgvis.eval.av_align import av_align
    samples, _ = click_track(4.0, 22050, bpm=100)
    wav = tmp_path / "clicks.wav"
    write_audio(wav, samples, 22050)
    scores = {}
    for name, extra in (("look", []), ("plain", ["--set", "look.contours.amount=0"])):
        video = tmp_path / f"{name}.mp4"
        result = run_cli("render", str(wav), "-o", str(video), "--size", "128", *extra)
        assert result.returncode == 0, result.stderr
        scores[name] = av_align(str(video))
    assert "frozen" in scores["plain"]["flags"]
    look = scores["look"]
    # Not frozen and no cuts.  (The strobe heuristic is not asked for: on a sparse click track it sits at its
    # limit, the known sparse-music case of BENCHMARKS.md.)
    assert look["motion"]["moving_share"] > 0.5 and not {"frozen", "cuts"} & set(look["flags"]), look["flags"]
    assert look["av_align"] >= 0.4 and look["hits"] >= 0.6 * look["audio_peaks"], (look["av_align"], look["hits"])
    # Without the look the steering still moves on the beats (its drift glides on them), but by less than optical
    # flow's floor: most of those steps are no video peak at all.
    assert look["hits"] >= 2 * scores["plain"]["hits"], (look["hits"], scores["plain"]["hits"])
