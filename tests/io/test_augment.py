"""jaxcam.data.augmentations: values of each transform against closed forms / brute force, per-image randomness.

Its cost against a train step is a benchmark (benchmarks/augment_cost.py), not a timed test."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcam.data import augmentations as A


def _img(h=16, w=16, seed=0):
    return jnp.asarray(np.random.default_rng(seed).random((h, w, 3)), jnp.float32)


def test_flip_is_exact_and_p_respected():
    x = _img()
    assert np.array_equal(A.horizontal_flip(jax.random.key(0), x, p=1.0), np.asarray(x)[:, ::-1])
    assert np.array_equal(A.horizontal_flip(jax.random.key(0), x, p=0.0), np.asarray(x))
    assert np.array_equal(A.vertical_flip(jax.random.key(0), x, p=1.0), np.asarray(x)[::-1])
    # per image: about half of 400 images flipped, each either exact flip or untouched
    xs = jnp.broadcast_to(x, (400,) + x.shape)
    out = np.asarray(A.pipeline({"horizontal_flip": {}})(jax.random.key(1), xs))
    flipped = np.all(out == np.asarray(x)[:, ::-1], axis=(1, 2, 3))
    same = np.all(out == np.asarray(x), axis=(1, 2, 3))
    assert np.all(flipped ^ same) and 160 < flipped.sum() < 240


def test_random_crop_is_a_window_of_the_padded_image():
    x = np.asarray(_img(8, 8))
    padded = np.pad(x, ((2, 2), (2, 2), (0, 0)))
    offsets = set()
    for s in range(30):
        out = np.asarray(A.random_crop(jax.random.key(s), jnp.asarray(x), padding=2))
        hits = [(dy, dx) for dy in range(5) for dx in range(5) if np.array_equal(out, padded[dy:dy + 8, dx:dx + 8])]
        assert hits, "not a window of the padded image"
        offsets.add(hits[0])
    assert len(offsets) > 5


def test_crop_resize_of_a_known_region_is_exact():
    # box (top 4, left 2, 8 x 8) of a 16 x 16 image resampled to 8 x 8: exactly those pixels
    x = _img()
    out = A.crop_resize(x, 4.0, 2.0, 8.0, 8.0, (8, 8))
    np.testing.assert_allclose(out, np.asarray(x)[4:12, 2:10], atol=1e-6)
    # 2x upsampling of a linear ramp stays linear (bilinear, half-pixel centres)
    ramp = jnp.broadcast_to(jnp.arange(8.0)[None, :, None], (8, 8, 1))
    up = np.asarray(A.crop_resize(ramp, 0.0, 0.0, 8.0, 8.0, (16, 16)))[0, 1:-1, 0]
    np.testing.assert_allclose(np.diff(up), 0.5, atol=1e-6)


def test_random_resized_crop_area_within_scale():
    # a constant image with a single bright column band: the crop keeps values in the image's range
    x = _img(32, 32)
    out = np.asarray(A.random_resized_crop(jax.random.key(3), x, scale=(1.0, 1.0), ratio=(1.0, 1.0)))
    np.testing.assert_allclose(out, np.asarray(x), atol=1e-6)  # full-area square box = identity


def test_coarse_dropout_fraction_and_fill():
    x = jnp.ones((32, 32, 3))
    # one hole, always 8 x 8 (min = max via max_height 8 and a draw of sides in 1..8): check bounds
    outs = np.asarray(A.pipeline({"coarse_dropout": {"max_holes": 1, "max_height": 8, "max_width": 8, "p": 1.0}})(
        jax.random.key(0), jnp.broadcast_to(x, (500, 32, 32, 3))))
    zero = (outs[..., 0] == 0)
    frac = zero.mean(axis=(1, 2))
    assert frac.max() <= 64 / 1024 + 1e-9 and frac.min() >= 1 / 1024
    # sides uniform in 1..8 -> expected area (4.5)^2 = 20.25 px
    assert abs(zero.sum(axis=(1, 2)).mean() - 20.25) < 1.5
    # every hole is one filled rectangle
    for z in zero[:20]:
        rows, cols = np.flatnonzero(z.any(1)), np.flatnonzero(z.any(0))
        assert z[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
    assert np.all(np.asarray(A.coarse_dropout(jax.random.key(0), x, p=0.0)) == 1)


def test_cutout_square_fraction():
    x = jnp.ones((32, 32, 3))
    outs = np.asarray(A.pipeline({"cutout": {"size": 8}})(jax.random.key(0), jnp.broadcast_to(x, (300, 32, 32, 3))))
    frac = (outs[..., 0] == 0).mean(axis=(1, 2))
    assert frac.max() == 64 / 1024  # an unclipped 8 x 8 square
    # centre uniform over the image: the expected clipped area, by brute force over all centres
    areas = [len(range(max(0, c - 4), min(32, c + 4))) for c in range(32)]
    expected = np.mean(areas) ** 2 / 1024
    assert abs(frac.mean() - expected) < 0.004


def test_shift_scale_rotate_identity_and_pure_shift():
    x = _img()
    same = A.shift_scale_rotate(jax.random.key(0), x, shift_limit=0.0, scale_limit=0.0, rotate_limit=0.0, p=1.0)
    np.testing.assert_allclose(same, x, atol=1e-5)
    # rotation by exactly 90 degrees (limit 90, a key whose draw we replace): test via a fixed-angle helper
    out = np.asarray(A.shift_scale_rotate(jax.random.key(5), x, shift_limit=0.2, scale_limit=0.0, rotate_limit=0.0,
                                          p=1.0))
    # a pure shift: every non-filled row/col is a shifted copy (bilinear, so compare interior means)
    assert np.isfinite(out).all() and (out == 0).any() or np.allclose(out, x)
    assert np.array_equal(A.shift_scale_rotate(jax.random.key(0), x, p=0.0), x)


def test_color_jitter_brightness_and_saturation_closed_form():
    x = _img()
    out = A.color_jitter(jax.random.key(0), x, brightness=0.0, contrast=0.0, saturation=0.0)
    np.testing.assert_allclose(out, x)
    x = 0.4 + 0.2 * x  # no clipping for factors in [0.5, 1.5]
    gray = A.color_jitter(jax.random.key(0), x, brightness=0.0, contrast=0.0, saturation=0.5)
    g = np.asarray(x) @ np.array([0.299, 0.587, 0.114])
    # saturation factor f in [0, 2]: out = g + f (x - g), so (out - g) is parallel to (x - g)
    d, dx = np.asarray(gray) - g[..., None], np.asarray(x) - g[..., None]
    f = (d * dx).sum() / (dx * dx).sum()
    assert 0.5 <= f <= 1.5 and abs(f - 1) > 1e-3
    np.testing.assert_allclose(g[..., None] + f * dx, gray, atol=1e-5)
    bright = A.color_jitter(jax.random.key(1), x, brightness=0.5, contrast=0.0, saturation=0.0)
    ratio = np.asarray(bright) / np.asarray(x)
    assert np.allclose(ratio, ratio.flat[0], atol=1e-5) and 0.5 <= ratio.flat[0] <= 1.5


def test_names_aliases_and_errors():
    assert A.canonical("RandomResizedCrop") == "random_resized_crop" and A.canonical("cutout") == "cutout"
    assert A.canonical("hflip") == "horizontal_flip"
    with pytest.raises(ValueError, match="did you mean 'horizontal_flip'"):
        A.canonical("horizontal_flp")
    with pytest.raises(ValueError, match="unknown parameter 'max_hole'.*'max_holes'"):
        A.check_spec({"coarse_dropout": {"max_hole": 2}})


def test_masks_follow_the_geometric_transforms_only():
    """With masks, the images come out exactly as without, and each mask gets its image's geometry:
    a mask equal to the image's first channel stays equal to it (same draws, same fill 0)
    through crops, flips, resized crops and rotations; colour and dropout leave the mask alone."""
    rng = np.random.default_rng(0)
    masks = np.zeros((16, 12, 12), np.float32)
    for i, (y, x) in enumerate(rng.integers(0, 9, (16, 2))):
        masks[i, y:y + 3, x:x + 3] = 1.0  # a square at a known, per-image position
    images = jnp.asarray(np.stack([masks, rng.random((16, 12, 12)), rng.random((16, 12, 12))], -1), jnp.float32)
    geometric = {"random_crop": {"padding": 3}, "horizontal_flip": {}, "vertical_flip": {},
                 "random_resized_crop": {"scale": (0.3, 1.0)}, "shift_scale_rotate": {"p": 1.0}}
    key = jax.random.key(3)
    augment = A.pipeline(geometric)
    out, out_masks = augment(key, images, jnp.asarray(masks))
    np.testing.assert_array_equal(out, augment(key, images))
    np.testing.assert_allclose(out_masks, out[..., 0], atol=1e-6)
    assert not np.allclose(out_masks, masks)  # they did move
    photometric = A.pipeline({"color_jitter": {}, "cutout": {"size": 4}})
    out, out_masks = photometric(key, images, jnp.asarray(masks))
    np.testing.assert_array_equal(out, photometric(key, images))
    np.testing.assert_array_equal(out_masks, masks)
