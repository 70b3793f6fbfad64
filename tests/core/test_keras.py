"""Keras 3 models (JAX backend) passed to jaxcam directly.

References are independent of the adapter: the keras.io Grad-CAM recipe computed by hand with
jax.grad on a keras.applications architecture (random weights, no download), the CAM closed form and
a brute-force Ablation-CAM loop in numpy on small functional models, 1-D and 2-D.

Keras reads its backend when first imported: this file asks for JAX when keras is not imported yet
(jaxcam itself never sets it).
"""
import os
import sys

if "keras" not in sys.modules:
    os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import jaxcam  # noqa: E402
import jaxcam.keras  # noqa: E402
from tests.helpers import finish, gap_ablation, gap_cam, gap_logits  # noqa: E402


def _resize_finish(heatmap, size):
    """jaxcam's documented post-processing: ReLU, min-max, bilinear (half-pixel) resize, min-max."""
    m = finish(np.asarray(heatmap))
    up = np.asarray(jax.image.resize(jnp.asarray(m, jnp.float32), (m.shape[0], *size), "bilinear", antialias=False))
    lo, hi = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
    return (up - lo) / (hi - lo)


def test_grad_cam_equals_the_keras_io_recipe_on_mobilenet_v2():
    keras.utils.set_random_seed(0)
    net = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=7,
                                         classifier_activation=None)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    # keras.io "Grad-CAM class activation visualization", with jax.grad in place of GradientTape
    grad_model = keras.Model(net.input, [net.get_layer("out_relu").output, net.output])
    a, preds = (np.asarray(t) for t in grad_model(x))
    c = preds.argmax(-1)
    dense = net.layers[-1]
    kernel, bias = jnp.asarray(dense.kernel.value), jnp.asarray(dense.bias.value)

    def class_score(a):  # the layers after out_relu: global average pooling and the Dense
        return (a.mean(axis=(1, 2)) @ kernel + bias)[jnp.arange(len(c)), c].sum()

    np.testing.assert_allclose(np.asarray(a.mean(axis=(1, 2)) @ kernel + bias), preds, rtol=1e-4, atol=1e-4)
    grads = np.asarray(jax.grad(class_score)(jnp.asarray(a)))
    pooled = grads.mean(axis=(1, 2))
    heatmap = np.einsum("nhwc,nc->nhw", a, pooled)
    got = np.asarray(jaxcam.grad_cam(net, x, layer="out_relu"))
    np.testing.assert_allclose(got, _resize_finish(heatmap, (96, 96)), atol=1e-4)
    assert "out_relu" in jaxcam.list_layers(jaxcam.keras.model(net))  # at the model's own 96 px


def _gap_model(rank, channels):
    keras.utils.set_random_seed(rank)
    conv = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D}[rank]
    pool = {1: keras.layers.GlobalAveragePooling1D, 2: keras.layers.GlobalAveragePooling2D}[rank]
    inp = keras.Input((None,) * rank + (channels,))
    h = conv(4, 3, padding="same", activation="tanh", name="stem")(inp)
    f = keras.layers.ReLU(name="features")(conv(5, 3, padding="same", name="conv")(h))
    out = keras.layers.Dense(3, name="fc")(pool(name="gap")(f))
    return keras.Model(inp, out)


@pytest.mark.parametrize("rank,shape", [(1, (2, 12, 2)), (2, (2, 6, 7, 3))])
def test_cam_and_ablation_equal_closed_forms(rank, shape):
    net = _gap_model(rank, shape[-1])
    x = np.random.default_rng(rank).normal(size=shape).astype(np.float32)
    a = np.asarray(keras.Model(net.input, net.get_layer("features").output)(x), np.float64)
    w, b = (np.asarray(v.value, np.float64) for v in net.get_layer("fc").weights)
    logits = gap_logits(a, w, b)
    np.testing.assert_allclose(np.asarray(jaxcam.keras.model(net)(x)), logits, rtol=1e-4, atol=1e-5)
    c = logits.argmax(-1)
    expected = gap_cam(a, w, c)
    np.testing.assert_allclose(np.asarray(jaxcam.cam(net, x, layer="features")), expected, atol=2e-5)
    np.testing.assert_allclose(np.asarray(jaxcam.grad_cam(net, x, layer="features")), expected, atol=2e-5)
    np.testing.assert_allclose(np.asarray(jaxcam.ablation_cam(net, x, layer="features")), gap_ablation(a, w, b, c),
                               atol=1e-4)


def test_keras_layers_jit_and_errors():
    net = _gap_model(2, 3)
    x = np.ones((1, 6, 6, 3), np.float32)
    before = [np.asarray(v.value).copy() for v in net.variables]
    names = jaxcam.list_layers(jaxcam.keras.model(net), x.shape)
    assert names == ["stem", "conv", "features"]
    with pytest.raises(ValueError, match="features"):
        jaxcam.grad_cam(net, x, layer="featurs")
    model = jaxcam.keras.model(net)
    jitted = jax.jit(lambda m, v: jaxcam.grad_cam(m, v, layer="features"))
    np.testing.assert_allclose(np.asarray(jitted(model, x)), np.asarray(jaxcam.grad_cam(net, x, layer="features")),
                               atol=1e-6)
    assert all(np.array_equal(np.asarray(v.value), b) for v, b in zip(net.variables, before))

    class Sub(keras.Model):
        def call(self, x):
            return x.mean(axis=(1, 2))

    with pytest.raises(TypeError, match="subclassed"):
        jaxcam.keras.model(Sub())
