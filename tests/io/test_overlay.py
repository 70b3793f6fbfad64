"""jaxcam.overlay / jaxcam.heatmap against matplotlib's colormaps and the blend formula."""
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

import jaxcam


def _image(n=None, h=16, w=20, seed=0):
    shape = (h, w, 3) if n is None else (n, h, w, 3)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_heatmap_is_the_matplotlib_colormap():
    cam = np.linspace(0, 1, 50, dtype=np.float32).reshape(5, 10)
    for name in ("jet", "viridis", "inferno"):
        expected = np.rint(matplotlib.colormaps[name](cam)[..., :3] * 255).astype(np.uint8)
        np.testing.assert_array_equal(jaxcam.heatmap(cam, name), expected)


def test_overlay_is_the_blend_of_image_and_heatmap():
    img = _image()
    cam = np.random.default_rng(1).random((16, 20)).astype(np.float32)
    heat = matplotlib.colormaps["jet"](cam)[..., :3] * 255
    for alpha in (0.0, 0.3, 1.0):
        expected = (1 - alpha) * img + alpha * np.rint(heat)
        out = jaxcam.overlay(img, cam, "jet", alpha)
        assert out.dtype == np.uint8 and out.shape == img.shape
        assert np.abs(out.astype(float) - expected).max() <= 0.5 + 1e-6
    np.testing.assert_array_equal(jaxcam.overlay(img, cam, alpha=0.0), img)


def test_overlay_differs_from_the_image_where_the_map_is_high():
    img = np.full((32, 32, 3), 128, np.uint8)
    cam = np.zeros((32, 32), np.float32)
    cam[:16, :16] = 1.0
    out = jaxcam.overlay(img, cam, "jet", 0.5).astype(int)
    hot, cold = out[:16, :16], out[16:, 16:]
    # jet(1) is dark red, jet(0) dark blue: red dominates where the map is high, blue elsewhere.
    assert (hot[..., 0] > hot[..., 2] + 50).all() and (cold[..., 2] > cold[..., 0] + 50).all()


def test_batched_equals_one_by_one_and_map_is_resized():
    imgs = _image(n=3, h=24, w=24)
    cams = np.random.default_rng(2).random((3, 6, 6)).astype(np.float32)
    batch = jaxcam.overlay(imgs, cams, "viridis", 0.4)
    assert batch.shape == (3, 24, 24, 3)
    for i in range(3):
        np.testing.assert_array_equal(batch[i], jaxcam.overlay(imgs[i], cams[i], "viridis", 0.4))
    # a constant low-resolution map gives the same result as the constant full-size map
    np.testing.assert_array_equal(jaxcam.overlay(imgs[0], np.full((3, 3), 0.25)),
                                  jaxcam.overlay(imgs[0], np.full((24, 24), 0.25)))


def test_float_images_and_jax_maps():
    img = _image()
    cam = jnp.full((16, 20), 0.5)
    np.testing.assert_array_equal(jaxcam.overlay(img / 255.0, cam), jaxcam.overlay(img, np.asarray(cam)))


def test_clear_errors():
    img = _image()
    with pytest.raises(ValueError, match="unknown colormap 'jett'.*jet"):
        jaxcam.overlay(img, np.zeros((16, 20)), colormap="jett")
    with pytest.raises(ValueError, match="alpha"):
        jaxcam.overlay(img, np.zeros((16, 20)), alpha=2.0)
    with pytest.raises(ValueError, match="one map per image"):
        jaxcam.overlay(_image(n=2), np.zeros((3, 16, 20)))
    with pytest.raises(ValueError, match="RGB"):
        jaxcam.overlay(np.zeros((16, 20)), np.zeros((16, 20)))
