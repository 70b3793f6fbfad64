"""Every registry method on 1-D (N, L, C) and 3-D (N, D, H, W, C) inputs, checked by value.

References are independent of jaxcam's method code:
- closed forms under a GAP + FC head (dy/dA = W[:, c] / #locations everywhere), written in numpy;
- brute-force numpy loops for the ablation family (the head's algebra re-run per ablation);
- FullGrad by hand: jax.grad of a plain-JAX twin of the network with explicit bias probes;
- for the methods without a short closed form: the same network laid on a 2-D grid of height 1 (a
  1-D signal is a 1 x L image; a 3-D volume of depth 1 is an image). Their 2-D maps are checked
  against pytorch-grad-cam / torchcam elsewhere, so equal maps carry those checks to 1-D and 3-D.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
from jaxcam.methods import registry
from tests.helpers import (RANDOM_SEED, finish, gap_ablation, gap_closed_forms, gap_gradient, gap_location_ablations,
                           gap_logits, minmax, score_cam_reference)

RANKS = {"1d": ((3,), (2, 12, 2)), "3d": ((3, 3, 3), (2, 3, 5, 4, 1))}


class Features(nn.Module):
    kernel: tuple

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(5, self.kernel, padding="SAME", name="conv")(x))


class GapNet(nn.Module):
    """stem conv -> tanh -> features (conv + ReLU) -> global average pool -> Dense(3)."""

    kernel: tuple

    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Conv(4, self.kernel, padding="SAME", name="stem")(x))
        a = Features(self.kernel, name="features")(x)
        return nn.Dense(3, name="fc")(a.mean(axis=tuple(range(1, a.ndim - 1))))


def _model(kernel, shape, seed=0):
    module = GapNet(kernel)
    x = jax.random.normal(jax.random.key(seed), shape)
    variables = module.init(jax.random.key(seed + 1), x)
    return jaxcam.Model(module, variables, jaxcam.ModelInfo(classifier="fc")), x


def _parts(model, x):
    _, state = model.module.apply(model.variables, x, capture_intermediates=True, mutable=["intermediates"])
    a = np.asarray(state["intermediates"]["features"]["__call__"][0], np.float64)
    fc = model.variables["params"]["fc"]
    return a, np.asarray(fc["kernel"], np.float64), np.asarray(fc["bias"], np.float64)


@pytest.fixture(params=list(RANKS), scope="module")
def setup(request):
    kernel, shape = RANKS[request.param]
    model, x = _model(kernel, shape)
    a, w, b = _parts(model, x)
    logits = gap_logits(a, w, b)
    c = logits.argmax(-1)
    return model, x, a, w, b, logits, c, gap_gradient(a, w, c)


OPTIONS = {"random_cam": {"seed": RANDOM_SEED}}


@pytest.mark.parametrize("name", ["grad_cam", "hires_cam", "xgrad_cam", "shapley_cam", "grad_cam_elementwise",
                                  "layer_cam", "grad_cam_pp", "cam", "eigen_cam", "eigen_grad_cam", "seg_eigen_cam",
                                  "fem", "random_cam"])
def test_closed_forms_under_a_gap_fc_head(setup, name):
    model, x, a, w, b, logits, c, g = setup
    expected = finish(gap_closed_forms(a, w, c)[name])
    got = np.asarray(registry.get(name)(model, x, layer="features", **OPTIONS.get(name, {})))
    assert got.shape == x.shape[:-1]
    assert expected.max() == 1.0
    np.testing.assert_allclose(got, expected, atol=2e-5, err_msg=name)


def test_ablation_family_by_brute_force(setup):
    model, x, a, w, b, logits, c, g = setup
    np.testing.assert_allclose(np.asarray(jaxcam.ablation_cam(model, x, layer="features")), gap_ablation(a, w, b, c),
                               atol=1e-4)
    spatial, fast = gap_location_ablations(a, w, b, c)
    np.testing.assert_allclose(np.asarray(jaxcam.spatial_ablation_cam(model, x, layer="features")), spatial, atol=1e-4)
    np.testing.assert_allclose(np.asarray(jaxcam.fast_ablation_cam(model, x, layer="features")), fast, atol=1e-4)


def test_score_cam_by_brute_force(setup):
    """The layer has the input's size (no upsampling): s_k = y(x * minmax(A_k)), w = softmax(s)."""
    model, x, a, w, b, logits, c, g = setup
    np.testing.assert_allclose(np.asarray(jaxcam.score_cam(model, x, layer="features")),
                               score_cam_reference(a, c, model, x), atol=1e-4)


def _conv(p, x, probe=None):
    space = "DHW"[3 - (x.ndim - 2):]
    out = jax.lax.conv_general_dilated(x, p["kernel"], (1,) * (x.ndim - 2), "SAME",
                                       dimension_numbers=(f"N{space}C", f"{space}IO", f"N{space}C")) + p["bias"]
    return out if probe is None else out + probe


def test_fullgrad_by_hand_on_any_rank(setup):
    """FullGrad = psi(|x dy/dx|) + sum over the two biased convs of psi(|b dy/d(conv output)|)."""
    model, x, a, w, b, logits, c, g = setup
    params = model.variables["params"]
    classes = jnp.asarray(c)

    def score(x, probes):
        h = jnp.tanh(_conv(params["stem"], x, probes[0]))
        h = jax.nn.relu(_conv(params["features"]["conv"], h, probes[1]))
        z = h.mean(axis=tuple(range(1, h.ndim - 1))) @ params["fc"]["kernel"] + params["fc"]["bias"]
        return z[jnp.arange(len(c)), classes].sum()

    zeros = (jnp.zeros(x.shape[:-1] + (4,)), jnp.zeros(x.shape[:-1] + (5,)))
    gx, gp = jax.grad(score, argnums=(0, 1))(x, zeros)

    def psi(v):
        v = np.asarray(v, np.float64)
        space = tuple(range(1, v.ndim - 1))
        v = v - v.min(axis=space, keepdims=True)
        return (v / (v.max(axis=space, keepdims=True) + 1e-7)).sum(-1)

    total = psi(np.abs(gx * x)) + psi(np.abs(np.asarray(params["stem"]["bias"]) * gp[0])) + \
        psi(np.abs(np.asarray(params["features"]["conv"]["bias"]) * gp[1]))
    np.testing.assert_allclose(np.asarray(jaxcam.fullgrad(model, x)), minmax(total), atol=1e-4)
    raw = np.asarray(jaxcam.fullgrad(model, x, normalize=False))  # the sum itself (no min-max)
    np.testing.assert_allclose(raw, total, rtol=1e-5, atol=1e-5)


def _as_2d(kernel, shape, seed=0):
    """The same network and input laid on a 2-D grid: 1-D (N, L, C) as (N, L, 1, C) with kernels (k, 1);
    3-D (N, 1, H, W, C) as (N, H, W, C)."""
    model, x = _model(kernel, shape, seed)
    if len(kernel) == 1:
        module = GapNet(kernel + (1,))
        reshape = lambda k: k[:, None] if k.ndim == 3 else k  # noqa: E731
        x2 = x[:, :, None]
    else:
        module = GapNet(kernel[1:])
        reshape = lambda k: k[kernel[0] // 2] if k.ndim == 5 else k  # noqa: E731  (depth 1: the centre slice)
        x2 = x[:, 0]
    variables = jax.tree_util.tree_map(reshape, model.variables)
    return model, x, jaxcam.Model(module, variables, model.info), x2


EMBEDDED = ("gradient_cams", "finer_cam", "refine_cam", "smoothgrad_cam_pp", "is_cam", "ss_cam", "kpca_cam",
            "deep_feature_factorization", "guided_grad_cam", "layer_cam")
OPTIONS_EMBEDDED = {"refine_cam": {"layer": ["stem", "features"]}, "layer_cam": {"layer": ["stem", "features"]}, "ss_cam": {"num_samples": 3},
                    "is_cam": {"num_samples": 3}, "deep_feature_factorization": {"n_components": 2, "iterations": 20},
                    "smoothgrad_cam_pp": {"num_samples": 3}}


@pytest.mark.parametrize("rank", ["1d", "3d"])
def test_methods_without_a_short_closed_form_equal_their_2d_maps(rank):
    kernel, shape = RANKS[rank]
    shape = shape if rank == "1d" else (shape[0], 1) + shape[2:]
    model, x, model2, x2 = _as_2d(kernel, shape)
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(model2(x2)), atol=1e-5)
    for name in EMBEDDED:
        options = dict(OPTIONS_EMBEDDED.get(name, {}))
        layer = options.pop("layer", "features")
        got, ref = (registry.get(name)(m, v, layer=layer, **options) for m, v in ((model, x), (model2, x2)))
        got, ref = jax.tree_util.tree_map(np.asarray, (got, ref))
        flat_got, flat_ref = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref)
        assert flat_got, name
        for g_, r_ in zip(flat_got, flat_ref):
            assert g_.size == r_.size, name
            np.testing.assert_allclose(g_.reshape(r_.shape), r_, atol=2e-5, err_msg=name)


@pytest.mark.parametrize("rank", ["1d", "3d"])
def test_automatic_layer_for_every_rank(rank):
    kernel, shape = RANKS[rank]
    model, x = _model(kernel, shape)
    model = model.replace(info=jaxcam.ModelInfo(name="gapnet"))
    with pytest.warns(UserWarning, match="layer='features'"):
        got = np.asarray(jaxcam.grad_cam(model, x))
    np.testing.assert_allclose(got, np.asarray(jaxcam.grad_cam(model, x, layer="features")), atol=1e-6)


def test_sess_refuses_signals_and_volumes_in_one_line():
    """SESS slides square windows over rescaled images: defined on 2-D inputs only."""
    for kernel, shape in RANKS.values():
        model, x = _model(kernel, shape)
        with pytest.raises(ValueError, match="images") as err:
            jaxcam.sess(model, x, layer="features")
        assert "\n" not in str(err.value)
