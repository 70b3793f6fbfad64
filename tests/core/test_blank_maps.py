"""A blank (constant) map is never silent: a BlankMapWarning names the cause and the fix.

The three causes are built so that the map is constant for a reason known independently of jaxcam:
a layer with one cell, an ablation window that covers the whole grid (one window position), and a class
whose weights and bias are zero (its logit is 0 whatever the image: zero gradient everywhere).
"""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
BlankMapWarning = jaxcam.BlankMapWarning


@pytest.fixture(scope="module")
def model():
    return jaxcam.models.resnet18(num_classes=3)


def blank_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, BlankMapWarning)]


def test_one_cell_layer(model):
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))  # layer4 of a ResNet at 32 px: 1 x 1
    with pytest.warns(BlankMapWarning, match=r"grad_cam .*layer 'layer4' has a 1x1 grid.*larger input") as record:
        maps = jaxcam.grad_cam(model, x, layer="layer4")
    assert float(jnp.abs(maps).max()) == 0.0
    assert len(blank_warnings(record)) == 1
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        maps = jaxcam.grad_cam(model, x, layer="layer3")  # 2 x 2: not constant, no warning
    assert float(maps.max()) == 1.0 and not blank_warnings(record)


def test_window_covering_the_grid(model):
    x = jax.random.normal(jax.random.key(1), (1, 64, 64, 3))  # layer4: 2 x 2
    with pytest.warns(BlankMapWarning, match=r"fast_ablation_cam .*window=2 covers the whole 2x2 grid.*window=1"):
        maps = jaxcam.fast_ablation_cam(model, x, layer="layer4", window=2)
    assert float(jnp.abs(maps).max()) == 0.0
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        maps = jaxcam.fast_ablation_cam(model, x, layer="layer4", window=1)
    assert not blank_warnings(record) and float(maps.max()) == 1.0


def test_target_without_gradient(model):
    params = jax.tree_util.tree_map(lambda v: v, model.variables)
    params["params"]["fc"]["kernel"] = params["params"]["fc"]["kernel"].at[:, 0].set(0.0)
    params["params"]["fc"]["bias"] = params["params"]["fc"]["bias"].at[0].set(0.0)
    dead = jaxcam.Model(model.module, params, model.info)
    x = jax.random.normal(jax.random.key(2), (2, 64, 64, 3))
    assert float(jnp.abs(dead(x)[:, 0]).max()) == 0.0  # the class's logit is 0 for every image
    with pytest.warns(BlankMapWarning, match=r"no positive evidence at layer 'layer4'.*normalize=False"):
        maps = jaxcam.grad_cam(dead, x, layer="layer4", targets=0)
    assert float(jnp.abs(maps).max()) == 0.0


def test_once_per_call_site_and_silent_inside_transformations(model):
    x = jax.random.normal(jax.random.key(0), (1, 32, 32, 3))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("default")  # Python's default: once per message and call site
        for _ in range(3):
            jaxcam.grad_cam(model, x, layer="layer4")
        assert len(blank_warnings(record)) == 1
        traced = jax.jit(lambda v: jaxcam.grad_cam(model, v, layer="layer4"))(x)  # no host check in a trace
    assert len(blank_warnings(record)) == 1 and float(jnp.abs(traced).max()) == 0.0


def test_method_run_by_another_is_not_reported_itself(model):
    """SESS runs its base method on many patches; only the outer call is checked."""
    x = jax.random.normal(jax.random.key(3), (1, 64, 64, 3))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        maps = jaxcam.sess(model, x, layer="layer4", num_scales=2, chunk_size=64)
    assert not [m for m in blank_warnings(record) if "grad_cam" in m]
    assert np.isfinite(np.asarray(maps)).all()
