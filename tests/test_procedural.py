"""The procedural image source: deterministic, varied, colourful, resolution-independent."""
import numpy as np
import pytest

from sgvis.data import procedural


def test_same_seed_same_image_and_different_seeds_differ():
    a = procedural.render(1234, 32)
    b = procedural.render(1234, 32)
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
    assert np.array_equal(a, b)
    c = procedural.render(1235, 32)
    assert not np.array_equal(a, c)
    # Tuple seeds (dataset seed, index) are independent streams.
    assert np.array_equal(procedural.render((7, 3), 16), procedural.render((7, 3), 16))
    assert not np.array_equal(procedural.render((7, 3), 16), procedural.render((7, 4), 16))
    assert not np.array_equal(procedural.render((7, 3), 16), procedural.render((8, 3), 16))


@pytest.mark.parametrize("style", procedural.STYLES)
def test_every_style_renders_colourful_images(style):
    for seed in range(2):
        img = procedural.render(seed, 32, style=style).reshape(-1, 3).astype(np.float32)
        std = img.std(axis=0)
        # Two-colour palettes (e.g. magenta on black) may leave one channel nearly flat, never two.
        assert np.sort(std)[1] > 8, f"{style} seed {seed}: flat (std per channel {std})"
        # Not grey: channels differ from one another somewhere.
        assert np.abs(img - img.mean(axis=1, keepdims=True)).mean() > 3, f"{style} seed {seed} is grey"


def test_random_styles_are_varied_and_colourful():
    imgs = [procedural.render((0, i), 16) for i in range(24)]
    stds = np.array([im.reshape(-1, 3).std(axis=0) for im in imgs])
    assert np.median(stds.min(axis=1)) > 15          # typical image: every channel varies
    assert (stds.min(axis=1) > 4).mean() > 0.8
    means = np.array([im.reshape(-1, 3).mean(axis=0) for im in imgs])
    assert means.std(axis=0).min() > 15            # palettes vary from image to image
    assert len({im.tobytes() for im in imgs}) == len(imgs)


def test_small_resolutions_are_downsampled_versions_of_the_same_image():
    small = procedural.render_float(42, 32)
    big = procedural.render_float(42, 256)
    down = big.reshape(32, 8, 32, 8, 3).mean(axis=(1, 3))
    assert np.abs(small - down).max() < 1e-4


def test_bad_arguments():
    with pytest.raises(ValueError, match="style"):
        procedural.render(0, 16, style="nope")
    with pytest.raises(ValueError, match="resolution"):
        procedural.render(0, 2)
    with pytest.raises(ValueError, match="seed"):
        procedural.render(-1, 16)


def _upsampling_error(style, seeds=range(6)):
    """Mean |image - (image at 1/4 size, bilinearly upsampled back)| over a few seeds at 256^2."""
    import torch
    import torch.nn.functional as F
    errs = []
    for i in seeds:
        a = torch.from_numpy(procedural.render_float((3, i), 256, style=style)).permute(2, 0, 1)[None]
        back = F.interpolate(F.avg_pool2d(a, 4), scale_factor=4, mode="bilinear", align_corners=False)
        errs.append(float((a - back).abs().mean()))
    return float(np.mean(errs))


def test_soft_styles_keep_nothing_that_a_quarter_size_image_loses():
    # What the default model's two-stage recipe relies on: a 64^2 image holds the whole of a soft 256^2 one.
    soft = {s: _upsampling_error(s) for s in procedural.SOFT_STYLES}
    assert max(soft.values()) < 0.004, soft
    # ... unlike the banded and streaked styles, where the measure does see the lost detail.
    banded = {s: _upsampling_error(s) for s in ("warp", "flow", "metaballs")}
    assert min(banded.values()) > 4 * max(soft.values()), (soft, banded)

