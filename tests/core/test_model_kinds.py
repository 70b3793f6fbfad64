"""Model kinds: plain functions (`Model.from_functions`) and inputs with 1 or 3 spatial axes.

References are independent: the same network as a Linen module, and the CAM / ablation / Score-CAM
closed forms of a GAP + FC head computed in numpy.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam

METHODS = ("grad_cam", "grad_cam_pp", "xgrad_cam", "layer_cam", "hires_cam", "score_cam", "ablation_cam", "eigen_cam")


class Features(nn.Module):
    """conv + ReLU: the layer CAM explains (its output feeds the global average pool)."""

    kernel: tuple
    strides: int = 1

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(6, self.kernel, strides=self.strides, padding="SAME", name="conv")(x))


class GapNet(nn.Module):
    """stem conv -> features -> global average pool -> Dense; any spatial rank."""

    kernel: tuple

    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Conv(4, self.kernel, name="stem")(x))
        a = Features(self.kernel, name="features")(x)
        return nn.Dense(3, name="fc")(a.mean(axis=tuple(range(1, a.ndim - 1))))


def _linen(kernel, shape, seed=0):
    module = GapNet(kernel)
    x = jax.random.normal(jax.random.key(seed), shape)
    variables = module.init(jax.random.key(seed + 1), x)
    return jaxcam.Model(module, variables, jaxcam.ModelInfo(default_layer="features")), x


def _minmax(m):
    axes = tuple(range(1, m.ndim))
    lo, hi = m.min(axis=axes, keepdims=True), m.max(axis=axes, keepdims=True)
    return np.where(hi > lo, (m - lo) / np.where(hi > lo, hi - lo, 1), 0.0)


def _numpy_parts(model, x):
    """A (N, ..., C) captured from the model; the head's algebra (GAP + FC) in numpy."""
    a = np.asarray(model.module.apply(
        model.variables, x, capture_intermediates=True, mutable=["intermediates"])[1]["intermediates"]["features"]["__call__"][0])
    fc = model.variables["params"]["fc"]
    kernel, bias = np.asarray(fc["kernel"]), np.asarray(fc["bias"])
    space = tuple(range(1, a.ndim - 1))
    logits = a.mean(axis=space) @ kernel + bias
    return a, kernel, bias, logits, space


@pytest.mark.parametrize("kernel,shape", [((3,), (2, 24, 2)), ((3, 3, 3), (2, 6, 8, 8, 1))], ids=["1d", "3d"])
def test_gap_net_closed_forms_any_rank(kernel, shape):
    model, x = _linen(kernel, shape)
    a, w, b, logits, space = _numpy_parts(model, x)
    np.testing.assert_allclose(np.asarray(model(x)), logits, rtol=1e-5, atol=1e-5)
    c = logits.argmax(-1)
    cam = np.einsum("n...k,kn->n...", a, w[:, c])  # CAM (Zhou et al.): sum_k w_kc A_k
    expected = _minmax(np.maximum(cam, 0))
    assert expected.max() == 1.0
    got = np.asarray(jaxcam.grad_cam(model, x, layer="features"))
    assert got.shape == x.shape[:-1]
    np.testing.assert_allclose(got, expected, atol=1e-5)

    # Ablation-CAM: y - y^(k) = w_kc mean(A_k); weights (y - y^(k)) / y
    y = logits[np.arange(len(c)), c]
    drop = a.mean(axis=space) * w[:, c].T  # (N, C)
    ablation = np.einsum("nk,n...k->n...", drop / y[:, None], a)
    np.testing.assert_allclose(np.asarray(jaxcam.ablation_cam(model, x, layer="features")),
                               _minmax(np.maximum(ablation, 0)), atol=1e-4)

    # Score-CAM (no upsampling: the layer has the input's size): softmax_k y(x * minmax(A_k)) weights
    scores = []
    for k in range(a.shape[-1]):
        m = a[..., k]
        lo = m.min(axis=space, keepdims=True)
        m = (m - lo) / (m.max(axis=space, keepdims=True) - lo + 1e-8)
        scores.append(np.asarray(model(x * m[..., None]))[np.arange(len(c)), c])
    s = np.exp(np.stack(scores, 1) - np.max(scores, axis=0)[:, None])
    score = np.einsum("nk,n...k->n...", s / s.sum(1, keepdims=True), a)
    np.testing.assert_allclose(np.asarray(jaxcam.score_cam(model, x, layer="features")),
                               _minmax(np.maximum(score, 0)), atol=1e-4)


def test_1d_map_resized_to_the_signal_length():
    """A strided 1-D layer: the map is linearly interpolated (half-pixel centres) to the input length."""

    class Strided(nn.Module):
        @nn.compact
        def __call__(self, x):
            a = Features((3,), strides=4, name="features")(x)
            return nn.Dense(3, name="fc")(a.mean(axis=1))

    module = Strided()
    x = jax.random.normal(jax.random.key(3), (2, 32, 1))
    model = jaxcam.Model(module, module.init(jax.random.key(4), x))
    a, w, b, logits, space = _numpy_parts(model, x)
    c = logits.argmax(-1)
    low = _minmax(np.maximum(np.einsum("nlk,kn->nl", a, w[:, c]), 0))
    pos = (np.arange(32) + 0.5) * a.shape[1] / 32 - 0.5
    expected = _minmax(np.stack([np.interp(pos, np.arange(a.shape[1]), m) for m in low]))
    np.testing.assert_allclose(np.asarray(jaxcam.grad_cam(model, x, layer="features")), expected, atol=1e-5)


def test_a_token_layer_of_an_image_model_still_asks_for_a_reshape_transform():
    model, x = _linen((3, 3), (1, 8, 8, 3))
    with pytest.raises(ValueError, match="reshape_transform"):
        jaxcam.grad_cam(jaxcam.Model.from_functions(lambda p, x: x.reshape(1, 64, 3), lambda p, a: a.mean(1), {}),
                        x, layer="features")


def _functions_twin(model):
    """The same GapNet written as plain JAX functions of its params (no Flax)."""
    params = model.variables["params"]

    def conv(p, x):
        return jax.lax.conv_general_dilated(x, p["kernel"], (1,) * (x.ndim - 2), "SAME",
                                            dimension_numbers=_nwc(x.ndim)) + p["bias"]

    def features(p, x):
        return jax.nn.relu(conv(p["features"]["conv"], jnp.tanh(conv(p["stem"], x))))

    def head(p, a):
        return a.mean(axis=tuple(range(1, a.ndim - 1))) @ p["fc"]["kernel"] + p["fc"]["bias"]

    return jaxcam.Model.from_functions(features, head, params)


def _nwc(ndim):
    space = "DHW"[3 - (ndim - 2):]
    return (f"N{space}C", f"{space}IO", f"N{space}C")


@pytest.mark.parametrize("kernel,shape,methods", [
    ((3, 3), (2, 12, 12, 3), METHODS), ((3,), (2, 20, 2), ("grad_cam", "ablation_cam"))], ids=["2d", "1d"])
def test_from_functions_equals_the_linen_model(kernel, shape, methods):
    linen, x = _linen(kernel, shape, seed=5)
    plain = _functions_twin(linen)
    np.testing.assert_allclose(np.asarray(plain(x)), np.asarray(linen(x)), atol=1e-5)
    for name in methods:
        ref = np.asarray(getattr(jaxcam, name)(linen, x, layer="features"))
        got = np.asarray(getattr(jaxcam, name)(plain, x))  # default layer: "features"
        assert ref.max() == pytest.approx(1.0), name
        np.testing.assert_allclose(got, ref, atol=1e-6, err_msg=name)


def test_from_functions_unknown_layer_lists_the_valid_one():
    linen, x = _linen((3, 3), (1, 8, 8, 3))
    with pytest.raises(ValueError, match="features"):
        jaxcam.grad_cam(_functions_twin(linen), x, layer="layer4")


def test_signal_and_volume_figures_draw_the_map():
    from jaxcam.viz import plots

    cam = np.linspace(0, 1, 16, dtype=np.float32)
    fig = plots.signal_figure(np.sin(np.arange(16.0)), cam)
    band = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(band)[0], cam)  # the coloured band is the map
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), np.sin(np.arange(16.0)), rtol=1e-6)

    import matplotlib.pyplot as plt

    volume = np.zeros((4, 5, 6), np.float32)
    volume[0] = 1.0
    cam3 = np.zeros((4, 5, 6), np.float32)
    cam3[0, 2, 3] = 1.0
    fig3 = plots.volume_figure(volume, cam3, slices=4, alpha=0.5)
    first = fig3.axes[0].images[0].get_array()
    expected = 0.5 * 1.0 + 0.5 * np.asarray(plt.get_cmap("jet")(1.0)[:3])
    np.testing.assert_allclose(np.asarray(first)[2, 3], expected, atol=1e-6)
    with pytest.raises(ValueError, match="map"):
        plots.signal_figure(np.zeros(8), np.zeros(7))
    plt.close("all")
