"""`reshape_transform` by value for every method that takes it.

Two networks with the same weights: `grid` explains its conv layer's (N, h, w, C) output directly; `tokens`
flattens the same output into (N, h*w, C) tokens at a layer of its own and reshapes them back downstream,
so explaining its token layer with ``reshape_transform`` (tokens -> grid) must give the grid network's
maps exactly. The grid network's maps are checked against independent references elsewhere (the
coverage table of tests/methods/test_option_values_pgc.py lists each method's default test); grad_cam and
ablation_cam also have direct token tests (tests/methods/test_families.py). This test proves the option
reaches every method and that each method's token path (ReshapedSplit: the view and, for perturbations,
its transpose writing back into the tokens) changes nothing else.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
from jaxcam.methods import registry

TAKES_IT = [m for m in registry.names() if "reshape_transform" in {o.name for o in registry.get(m).options}]
TARGETS = np.array([1, 3])
GRID = (8, 8)
# Measured max |difference| of the finished maps (2026-12-05): 0 (finer_cam 4.2e-7) for every method but the two
# location ablations, whose softmax drops y - y^(ij) are small differences of near-equal scores
# (float32 rounding of the head's two equivalent orders of operations, amplified by the min-max):
# fast_ablation_cam 2.9e-5, spatial_ablation_cam 3.4e-6.
TOL = {"fast_ablation_cam": 1e-4, "spatial_ablation_cam": 2e-5}


class Flatten(nn.Module):
    def __call__(self, a):
        return a.reshape(a.shape[0], -1, a.shape[-1])


class Net(nn.Module):
    tokens: bool = False

    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Conv(6, (3, 3), name="stem")(x))
        a = nn.Conv(8, (3, 3), strides=(2, 2), name="features")(h)
        if self.tokens:
            t = Flatten(name="tokens")(a)
            a = t.reshape(t.shape[0], *GRID, t.shape[-1])
        a = jax.nn.relu(a)
        return nn.Dense(5, name="fc")(a.mean(axis=(1, 2)))


@pytest.fixture(scope="module")
def pair():
    info = jaxcam.ModelInfo(name="grid_net", default_layer="features", input_size=16)
    grid = jaxcam.models.build(Net(), info)
    tokens = jaxcam.Model(Net(tokens=True), grid.variables,
                          jaxcam.ModelInfo(name="token_net", default_layer="tokens", input_size=16))
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    np.testing.assert_array_equal(np.asarray(grid(x)), np.asarray(tokens(x)))  # the same network
    return grid, tokens, x


def to_grid(t):
    return t.reshape(t.shape[0], *GRID, t.shape[-1])


def test_every_method_taking_it_is_listed():
    assert len(TAKES_IT) >= 19, TAKES_IT


@pytest.mark.parametrize("name", [m for m in TAKES_IT if m not in ("grad_cam", "ablation_cam")])
def test_reshape_transform_equals_the_grid_model(pair, name):
    grid, tokens, x = pair
    method = registry.get(name)
    expected = method(grid, x, layer="features", targets=TARGETS)
    got = method(tokens, x, layer="tokens", targets=TARGETS, reshape_transform=to_grid)
    expected, got = (expected, got) if isinstance(expected, dict) else ({name: expected}, {name: got})
    assert sorted(got) == sorted(expected)
    for key in expected:
        e, g = np.asarray(expected[key]), np.asarray(got[key])
        assert e.shape == (2, 16, 16) and float(np.ptp(e)) > 0, key  # a real map, not a blank one
        print(f"MEASURED {key}: {float(np.abs(g - e).max()):.2e}")
        np.testing.assert_allclose(g, e, atol=TOL.get(name, 2e-6), err_msg=key)
