"""Equinox modules passed to jaxcam directly, on 1-D, 2-D and 3-D inputs (Equinox's channels-first,
per-example convention; jaxcam vmaps and moves the channel axis).

References are independent of the adapter: the activations computed by calling the Equinox layers
by hand, then Grad-CAM / CAM / Eigen-CAM closed forms under the GAP + FC head and a brute-force
Ablation-CAM loop in numpy.
"""
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
import jaxcam.equinox
from tests.helpers import finish as _finish, first_component as _first_component, gap_ablation, gap_cam, gap_logits as _logits

SHAPES = {1: (2, 10, 2), 2: (2, 7, 6, 3), 3: (2, 3, 4, 5, 1)}


def _net(rank, channels, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    space = tuple(range(1, rank + 1))
    return eqx.nn.Sequential([
        eqx.nn.Conv(rank, channels, 4, 3, padding=1, key=k1), eqx.nn.Lambda(jnp.tanh),
        eqx.nn.Conv(rank, 4, 5, 3, padding=1, key=k2), eqx.nn.Lambda(jax.nn.relu),
        eqx.nn.Lambda(lambda a: a.mean(axis=space)), eqx.nn.Linear(5, 3, key=k3)])


def _activations(net, x):
    """A (N, ..., C) by calling the layers by hand, one example at a time, channels first."""
    out = []
    for example in np.asarray(x):
        h = jnp.moveaxis(jnp.asarray(example), -1, 0)
        for layer in net.layers[:4]:
            h = layer(h)
        out.append(np.moveaxis(np.asarray(h, np.float64), 0, -1))
    return np.stack(out)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_equinox_maps_equal_closed_forms(rank):
    shape = SHAPES[rank]
    net = _net(rank, shape[-1])
    x = jax.random.normal(jax.random.key(rank), shape)
    a = _activations(net, x)
    w, b = np.asarray(net.layers[5].weight, np.float64).T, np.asarray(net.layers[5].bias, np.float64)
    logits = _logits(a, w, b)
    np.testing.assert_allclose(np.asarray(jaxcam.equinox.model(net)(x)), logits, rtol=1e-4, atol=1e-5)
    c = logits.argmax(-1)
    expected = gap_cam(a, w, c)  # Grad-CAM = CAM under GAP + FC
    np.testing.assert_allclose(np.asarray(jaxcam.grad_cam(net, x, layer="layers[3]")), expected, atol=2e-5)
    model = jaxcam.equinox.model(net, jaxcam.ModelInfo(default_layer="layers.3", classifier="layers[5]"))
    np.testing.assert_allclose(np.asarray(jaxcam.cam(model, x)), expected, atol=2e-5)
    np.testing.assert_allclose(np.asarray(jaxcam.eigen_cam(net, x, layer="layers/3")), _finish(_first_component(a)),
                               atol=2e-5)
    np.testing.assert_allclose(np.asarray(jaxcam.ablation_cam(net, x, layer="layers[3]")), gap_ablation(a, w, b, c),
                               atol=1e-4)


def test_equinox_layers_and_errors():
    net = _net(2, 3)
    x = jnp.ones((1, 6, 6, 3))
    model = jaxcam.equinox.model(net)
    assert jaxcam.list_layers(model, x.shape) == ["layers/0", "layers/1", "layers/2", "layers/3"]
    with pytest.raises(ValueError, match="layers/3"):
        jaxcam.grad_cam(net, x, layer="layers[7]")
    with pytest.raises(ValueError, match="classifier"):
        jaxcam.cam(net, x, layer="layers[3]")
    with pytest.raises(TypeError, match="eqx.Module"):
        jaxcam.equinox.model(object())
    leaves_before = jax.tree_util.tree_leaves(net)
    jaxcam.grad_cam(net, x, layer="layers[3]")
    assert all(p is q for p, q in zip(jax.tree_util.tree_leaves(net), leaves_before))  # the module is untouched
