"""Guided backprop and Guided Grad-CAM through ReLU6 / jnp.clip / lax.clamp activations (MobileNet,
EfficientNet-Lite), checked against a hand-written guided rule: a plain-JAX twin of the network whose
activations are a custom_vjp with backward g * (0 < x < 6) * (g > 0).

pytorch-grad-cam's GuidedBackpropReLUModel guides torch.nn.ReLU modules only (ReLU6 is a Hardtanh),
so there is no pgc reference for clipping activations; the ReLU case is checked against pgc in
tests/methods/test_parity_pgc_families.py.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam

ACTIVATIONS = {"clip": lambda x: jnp.clip(x, 0.0, 6.0), "relu6": jax.nn.relu6,
               "clamp": lambda x: jax.lax.clamp(0.0, x, 6.0)}


class ClipNet(nn.Module):
    activation: str

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        x = act(nn.Conv(6, (3, 3), padding="SAME", name="conv1")(x) * 4.0)  # scaled: some units saturate
        x = act(nn.Conv(5, (3, 3), padding="SAME", name="conv2")(x))
        return nn.Dense(4, name="fc")(x.mean(axis=(1, 2)))


@jax.custom_vjp
def hand_guided_relu6(x):
    return jnp.minimum(jnp.maximum(x, 0.0), 6.0)


hand_guided_relu6.defvjp(lambda x: (hand_guided_relu6(x), x),
                         lambda x, g: (g * ((x > 0) & (x < 6) & (g > 0)),))


def _conv(p, x):
    return jax.lax.conv_general_dilated(x, p["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) \
        + p["bias"]


def _hand_guided(params, x, classes):
    def score(x):
        h = hand_guided_relu6(_conv(params["conv1"], x) * 4.0)
        h = hand_guided_relu6(_conv(params["conv2"], h))
        z = h.mean(axis=(1, 2)) @ params["fc"]["kernel"] + params["fc"]["bias"]
        return z[jnp.arange(len(classes)), classes].sum()

    return jax.grad(score)(x)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_guided_backprop_through_clipping_activations_equals_the_hand_rule(activation):
    module = ClipNet(activation)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    variables = module.init(jax.random.key(1), x)
    model = jaxcam.Model(module, variables)
    classes = np.asarray(model(x)).argmax(-1)
    expected = np.asarray(_hand_guided(variables["params"], x, jnp.asarray(classes)))
    h = np.asarray(_conv(variables["params"]["conv1"], x)) * 4.0
    assert (h > 6).any() and (h < 0).any()  # both sides of the clip are exercised
    got = np.asarray(jaxcam.guided_backprop(model, x))
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    cam = np.asarray(jaxcam.grad_cam(model, x, layer="conv2"))
    np.testing.assert_allclose(np.asarray(jaxcam.guided_grad_cam(model, x, layer="conv2")), expected * cam[..., None],
                               rtol=1e-5, atol=1e-7)
