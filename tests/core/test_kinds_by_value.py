"""Every method with a closed form or a brute-force reference, on Keras 3 (1-D, 2-D) and Flax NNX (1-D, 3-D)
models passed directly, checked by value.

The network: stem conv -> tanh -> `features` (conv + ReLU) -> global average pool -> Dense(3). Under a
GAP + FC head the gradient methods, CAM, the Eigen family, FEM and Random-CAM have closed forms in the
features A, the Dense W and b, and the ablation and Score families are brute-force numpy loops over A
(tests/helpers.py: the same references tests/methods/test_every_rank.py checks Linen with). A, W and b
are read from the model by its own library (a Keras sub-model, the NNX submodules), not through jaxcam.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxcam
from jaxcam.methods import registry
from tests.core.test_keras import _gap_model, keras
from tests.helpers import (RANDOM_SEED, finish, gap_ablation, gap_closed_forms, gap_location_ablations, gap_logits,
                           score_cam_reference)

CASES = {"keras-1d": (3,), "keras-2d": (3, 3), "nnx-1d": (3,), "nnx-3d": (3, 3, 3)}
SHAPES = {1: (2, 12, 2), 2: (2, 6, 7, 3), 3: (2, 3, 5, 4, 1)}
GRADIENT_RULES = ("grad_cam", "hires_cam", "xgrad_cam", "grad_cam_elementwise", "layer_cam", "grad_cam_pp")
OTHERS = ("shapley_cam", "cam", "eigen_cam", "eigen_grad_cam", "seg_eigen_cam", "fem", "random_cam")
TOL, LOOP_TOL = 4e-6, 1e-4  # measured: closed forms 4.0e-7, loops 2.6e-5 (worst of the four cases)


class NNXFeatures(nnx.Module):
    def __init__(self, kernel, rngs):
        self.conv = nnx.Conv(4, 5, kernel, padding="SAME", rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.conv(x))


class NNXGapNet(nnx.Module):
    def __init__(self, kernel, channels, rngs):
        self.stem = nnx.Conv(channels, 4, kernel, padding="SAME", rngs=rngs)
        self.features = NNXFeatures(kernel, rngs)
        self.fc = nnx.Linear(5, 3, rngs=rngs)

    def __call__(self, x):
        a = self.features(jnp.tanh(self.stem(x)))
        return self.fc(a.mean(axis=tuple(range(1, a.ndim - 1))))


def _nnx_case(kernel, x):
    net = NNXGapNet(kernel, x.shape[-1], nnx.Rngs(len(kernel)))
    for conv in (net.stem, net.features.conv, net.fc):  # non-zero biases (they start at zero)
        conv.bias[...] = 0.3 * jax.random.normal(jax.random.key(7), conv.bias.shape)
    a = net.features(jnp.tanh(net.stem(x)))
    return net, net, a, net.fc.kernel[...], net.fc.bias[...]


def _keras_case(kernel, x):
    net = _gap_model(len(kernel), x.shape[-1])
    for layer in (net.get_layer("stem"), net.get_layer("conv"), net.get_layer("fc")):
        layer.bias.assign(0.3 * np.random.default_rng(7).normal(size=layer.bias.shape))
    a = keras.Model(net.input, net.get_layer("features").output)(x)
    w, b = (v.value for v in net.get_layer("fc").weights)
    return net, jaxcam.keras.model(net), a, w, b


@pytest.fixture(params=list(CASES), scope="module")
def case(request):
    kernel = CASES[request.param]
    x = np.random.default_rng(len(kernel)).normal(size=SHAPES[len(kernel)]).astype(np.float32)
    net, forward, a, w, b = (_keras_case if request.param.startswith("keras") else _nnx_case)(kernel, x)
    a, w, b = (np.asarray(v, np.float64) for v in (a, w, b))
    logits = gap_logits(a, w, b)
    np.testing.assert_allclose(np.asarray(forward(x)), logits, rtol=1e-4, atol=1e-5)  # A, W, b are the model's
    return request.param, net, forward, x, a, w, b, logits.argmax(-1)


def test_closed_forms_under_a_gap_fc_head(case):
    name, net, _, x, a, w, b, c = case
    expected = {m: finish(v) for m, v in gap_closed_forms(a, w, c).items()}
    got = {m: np.asarray(v) for m, v in jaxcam.gradient_cams(net, x, layer="features", methods=GRADIENT_RULES).items()}
    got.update({m: np.asarray(registry.get(m)(net, x, layer="features", **({"seed": RANDOM_SEED} if m == "random_cam"
                                                                              else {}))) for m in OTHERS})
    errors = {m: float(np.abs(got[m].reshape(expected[m].shape) - expected[m]).max()) for m in got}
    print(f"{name}: closed forms, worst {max(errors.values()):.1e}")
    assert all(got[m].shape == x.shape[:-1] for m in got)
    assert all(e < TOL for e in errors.values()), errors


def test_ablation_and_score_families_by_brute_force(case):
    name, net, forward, x, a, w, b, c = case
    spatial, fast = gap_location_ablations(a, w, b, c)
    expected = {"ablation_cam": gap_ablation(a, w, b, c), "spatial_ablation_cam": spatial,
                "fast_ablation_cam": fast, "score_cam": score_cam_reference(a, c, forward, x)}
    errors = {m: float(np.abs(np.asarray(registry.get(m)(net, x, layer="features")) - v).max())
              for m, v in expected.items()}
    print(f"{name}: brute-force loops, worst {max(errors.values()):.1e}")
    assert all(e < LOOP_TOL for e in errors.values()), errors
