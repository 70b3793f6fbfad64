"""The CAM method family: closed forms, token models, multi-layer, guided backprop, errors.

Each check compares against something computed independently of jaxcam's method code: exact
answers of linear / GAP+FC toy models worked out in numpy, gradients taken through an explicit
additive perturbation instead of jaxcam's split, numpy's SVD. pytorch-grad-cam parity is in
tests/methods/test_parity_pgc_families.py. Tiny models keep compilations cheap.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxcam
from tests.helpers import ConvReLU
from jaxcam._src.projection import first_component
from jaxcam._src.runner import run
from jaxcam.methods.ablation import ablation_cam_map
from jaxcam.methods.guided import guided_relu
from jaxcam.methods.score import align_corners_matrix

TARGETS = np.array([1, 3])


def minmax(cam):
    cam = np.asarray(cam, np.float64)
    cam = cam - cam.min(axis=(1, 2), keepdims=True)
    top = cam.max(axis=(1, 2), keepdims=True)
    return np.where(top > 0, cam / np.where(top > 0, top, 1), 0.0)


def finish(raw, size):
    """ReLU -> min-max -> half-pixel bilinear resize (torch, independent of jaxcam) -> min-max."""
    cam = minmax(np.maximum(raw, 0.0))
    if cam.shape[1:] != tuple(size):
        t = torch.from_numpy(cam[:, None].astype(np.float32))
        cam = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()
    return minmax(cam)


class TinyNet(nn.Module):
    """block1 -> block2 (stride 2) -> global average (or max) pooling -> fc."""

    pool: str = "avg"

    @nn.compact
    def __call__(self, x):
        a = ConvReLU(6, name="block1")(x)
        a = ConvReLU(8, 2, name="block2")(a)
        pooled = a.mean(axis=(1, 2)) if self.pool == "avg" else a.max(axis=(1, 2))
        return nn.Dense(5, name="fc")(pooled)


def tiny(pool="avg", seed=0):
    info = jaxcam.ModelInfo(name=f"tiny_{pool}", default_layer="block2", classifier="fc", input_size=16)
    return jaxcam.models.build(TinyNet(pool), info, seed=seed)


@pytest.fixture(scope="module")
def net():
    return tiny()


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)


# ---------------------------------------------------------------- GAP+FC closed forms ---------


def test_gap_fc_hires_equals_grad_cam_and_cam(net, x):
    """Under GAP+FC, dy/dA = W[:, c] / (h w) everywhere: HiResCAM = Grad-CAM = CAM / (h w)."""
    maps = jaxcam.gradient_cams(net, x, layer="block2", targets=TARGETS, methods=("grad_cam", "hires_cam"))
    np.testing.assert_allclose(maps["hires_cam"], maps["grad_cam"], atol=1e-5)
    np.testing.assert_allclose(jaxcam.cam(net, x, targets=TARGETS), maps["grad_cam"], atol=1e-5)
    assert np.ptp(np.asarray(maps["grad_cam"])) > 0.5  # not a degenerate all-zero map


def block2_by_hand(net, x):
    """TinyNet's block2 activations (N, 8, 8, 8), by plain convolutions of the parameters."""
    p = jax.tree_util.tree_map(np.asarray, net.variables["params"])

    def conv(a, q, stride):
        out = jax.lax.conv_general_dilated(a, q["conv"]["kernel"], (stride, stride), ((1, 1), (1, 1)),
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return np.maximum(np.asarray(out, np.float64) + q["conv"]["bias"], 0)

    return conv(conv(x, p["block1"], 1), p["block2"], 2), p["fc"]["kernel"].astype(np.float64)


def test_cam_by_hand(net, x):
    """CAM from the fc kernel and the block2 activations computed by hand in numpy."""
    a, w = block2_by_hand(net, x)
    raw = np.einsum("nhwc,cn->nhw", a, w[:, TARGETS])
    np.testing.assert_allclose(jaxcam.cam(net, x, targets=TARGETS), finish(raw, (16, 16)), atol=1e-5)


def test_cam_errors_are_clear(net, x):
    with pytest.raises(ValueError, match="GAP\\+FC"):
        jaxcam.cam(net, x, layer="block1")  # 6 channels, fc expects 8
    with pytest.raises(ValueError, match="GAP\\+FC"):
        jaxcam.cam(tiny(pool="max"), x)  # right shapes, but max pooling: caught numerically
    with pytest.raises(TypeError, match="one class per image"):
        jaxcam.cam(net, x, targets=lambda s: s[:, 0])
    no_classifier = jaxcam.Model(net.module, net.variables, jaxcam.ModelInfo(default_layer="block2"))
    with pytest.raises(ValueError, match="classifier"):
        jaxcam.cam(no_classifier, x)


# ---------------------------------------------------------------- Score-CAM, exact ------------


class LinearToy(nn.Module):
    """A = 2x2 stride-2 conv of x (linear, no bias); logits = fc(mean_ij A)."""

    @nn.compact
    def __call__(self, x):
        a = nn.Conv(4, (2, 2), (2, 2), padding="VALID", use_bias=False, name="feat")(x)
        return nn.Dense(3, name="fc")(a.mean(axis=(1, 2)))


def test_score_cam_on_linear_model_is_exact():
    """Every quantity of Score-CAM has a closed form here; computed in numpy (masks by np.interp)."""
    rng = np.random.default_rng(3)
    xs = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    model = jaxcam.models.build(LinearToy(), jaxcam.ModelInfo(default_layer="feat", classifier="fc"), seed=1)
    k = np.asarray(model.variables["params"]["feat"]["kernel"])  # (2, 2, 3, 4)
    w, b = (np.asarray(model.variables["params"]["fc"][n]) for n in ("kernel", "bias"))
    targets = np.array([0, 2])

    def feat(inputs):  # (N, 8, 8, 3) -> (N, 4, 4, 4)
        blocks = inputs.reshape(-1, 4, 2, 4, 2, 3).transpose(0, 1, 3, 2, 4, 5)
        return np.einsum("nijabc,abck->nijk", blocks, k)

    def up(m):  # (4, 4) -> (8, 8), align_corners=True, one axis at a time with np.interp
        pos = np.arange(8) * 3 / 7
        rows = np.stack([np.interp(pos, np.arange(4), col) for col in m.T], axis=1)
        return np.stack([np.interp(pos, np.arange(4), row) for row in rows])

    a = feat(xs)
    raw = []
    for n, c in enumerate(targets):
        scores = []
        for ch in range(4):
            m = up(a[n, :, :, ch])
            m = (m - m.min()) / (m.max() - m.min() + 1e-8)
            masked = xs[n : n + 1] * m[None, :, :, None]
            scores.append(feat(masked).mean(axis=(1, 2))[0] @ w[:, c] + b[c])
        weights = np.exp(np.array(scores) - max(scores))
        raw.append(a[n] @ (weights / weights.sum()))
    expected = finish(np.stack(raw), (8, 8))
    got = jaxcam.score_cam(model, xs, targets=targets, chunk_size=3)  # 4 channels: a chunk of 3 + remainder
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_align_corners_matrix_matches_torch():
    got = align_corners_matrix(11, 4) @ np.arange(4.0)
    t = torch.arange(4.0)[None, None, None]
    expected = torch.nn.functional.interpolate(t, size=(1, 11), mode="bilinear", align_corners=True)[0, 0, 0]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-6)


# ---------------------------------------------------------------- gradient family -------------


def test_gradient_rules_closed_forms_under_gap_fc(net, x):
    """Under GAP+FC, G_k = W[k, c] / (h w) at every location, so every rule has a closed form in
    the fc kernel and the activations (computed by hand): checked for the single methods and for
    the batched `gradient_cams` call."""
    a, w = block2_by_hand(net, x)
    hw = a.shape[1] * a.shape[2]
    g = (w[:, TARGETS].T / hw)[:, None, None, :]  # (N, 1, 1, C), constant over locations
    s = a.sum(axis=(1, 2), keepdims=True)
    alpha = g**2 / (2 * g**2 + s * g**3 + 1e-6)
    expected = {
        "grad_cam": (g * a).sum(-1),
        "hires_cam": (g * a).sum(-1),
        "grad_cam_elementwise": np.maximum(g * a, 0).sum(-1),
        "grad_cam_pp": (hw * np.maximum(g, 0) * alpha * a).sum(-1),
        "xgrad_cam": (g * s / (s + 1e-7) * a).sum(-1),
        "layer_cam": (np.maximum(g, 0) * a).sum(-1),
    }
    together = jaxcam.gradient_cams(net, x, layer="block2", targets=TARGETS)
    for name, raw in expected.items():
        want = finish(raw, (16, 16))
        assert (np.ptp(want, axis=(1, 2)) > 0.5).all(), name
        np.testing.assert_allclose(getattr(jaxcam, name)(net, x, layer="block2", targets=TARGETS), want, atol=1e-5,
                                   err_msg=name)
        np.testing.assert_allclose(together[name], want, atol=1e-5, err_msg=name)


def test_first_component_matches_numpy_svd():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(3, 4, 5, 6)).astype(np.float32)
    got = np.asarray(first_component(a))
    for n in range(3):
        m = a[n].reshape(20, 6)
        m = m - m.mean(axis=0)
        v = np.linalg.svd(m)[2][0]
        v = v if v.sum() >= 0 else -v
        np.testing.assert_allclose(got[n], (m @ v).reshape(4, 5), atol=1e-4)
    assert not np.isnan(np.asarray(first_component(jnp.zeros((1, 3, 3, 4))))).any()
    assert not np.isnan(np.asarray(first_component(jnp.ones((1, 3, 3, 4))))).any()


# ---------------------------------------------------------------- several layers -------------


def test_multi_layer_of_one_layer_twice_is_that_layer(net, x):
    """Values of multi_layer are checked against pgc (test_parity_pgc_family.py::test_multi_layer_matches);
    here: the fusion of a layer with itself is that layer's closed-form CAM, and errors."""
    a, w = block2_by_hand(net, x)
    want = finish(np.einsum("nhwc,cn->nhw", a, w[:, TARGETS]), (16, 16))
    fused, each = jaxcam.multi_layer(jaxcam.grad_cam, net, x, ["block2", "block2"], targets=TARGETS)
    assert each.shape == (2, 2, 16, 16)
    np.testing.assert_allclose(fused, want, atol=1e-5)
    np.testing.assert_allclose(each, np.stack([want, want]), atol=1e-5)
    with pytest.raises(ValueError, match="non-empty"):
        jaxcam.grad_cam(net, x, layer=[])


# ---------------------------------------------------------------- token models ----------------


class Block(nn.Module):
    @nn.compact
    def __call__(self, t):
        t = t + nn.MultiHeadDotProductAttention(num_heads=2, name="attn")(nn.LayerNorm(name="norm1")(t))
        return t + nn.Dense(16, name="fc2")(nn.gelu(nn.Dense(32, name="fc1")(nn.LayerNorm(name="norm2")(t))))


class TinyViT(nn.Module):
    """4x4 patches of a 16x16 image -> 16 tokens + class token, 2 blocks, head on the class token.

    `delta` is added to block 0's output: d score / d delta is the gradient at that layer, taken
    without jaxcam's split.
    """

    @nn.compact
    def __call__(self, x, delta=None, return_tokens=False):
        p = nn.Conv(16, (4, 4), (4, 4), padding="VALID", name="patch")(x)
        t = p.reshape(p.shape[0], -1, 16)
        cls = self.param("cls", nn.initializers.normal(1.0), (1, 1, 16))
        t = jnp.concatenate([jnp.broadcast_to(cls, (t.shape[0], 1, 16)), t], axis=1)
        t = t + self.param("pos", nn.initializers.normal(0.5), (1, 17, 16))
        t = Block(name="blocks_0")(t)
        if return_tokens:
            return t
        if delta is not None:
            t = t + delta
        t = Block(name="blocks_1")(t)
        return nn.Dense(5, name="head")(nn.LayerNorm(name="norm")(t[:, 0]))


@pytest.fixture(scope="module")
def vit():
    return jaxcam.models.build(TinyViT(), jaxcam.ModelInfo(name="tiny_vit", default_layer="blocks_0", input_size=16))


def test_token_grad_cam_matches_perturbation_gradient(vit, x):
    tokens = np.asarray(jax.jit(lambda v: vit.module.apply(v, x, return_tokens=True))(vit.variables))  # (2, 17, 16)

    def total(delta):
        return vit.module.apply(vit.variables, x, delta)[np.arange(2), TARGETS].sum()

    grads = np.asarray(jax.jit(jax.grad(total))(jnp.zeros_like(tokens)))
    a, g = (v[:, 1:].reshape(2, 4, 4, 16) for v in (tokens, grads))
    expected = finish(np.einsum("nc,nhwc->nhw", g.mean(axis=(1, 2)), a), (16, 16))
    got = jaxcam.grad_cam(vit, x, targets=TARGETS, reshape_transform=jaxcam.tokens_to_grid)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_token_ablation_writes_back_into_tokens(vit, x):
    """Ablation through the transform's transpose: channel k zeroed on the patch tokens only."""
    tokens = jax.jit(lambda v: vit.module.apply(v, x, return_tokens=True))(vit.variables)

    def score(delta):
        return vit.module.apply(vit.variables, x, delta)[np.arange(2), TARGETS]

    drop = jnp.eye(16)[:, None, None, :] * tokens[None].at[:, :, 0].set(0.0)  # (16, N, 17, 16)
    y, y_k = jax.jit(lambda d: (score(jnp.zeros_like(tokens)), jax.vmap(score)(-d)))(drop)  # (N,), (16, N)
    a = np.asarray(tokens)[:, 1:].reshape(2, 4, 4, 16)
    expected = finish(np.einsum("nc,nhwc->nhw", np.asarray((y[None] - y_k) / y[None]).T, a), (16, 16))
    got = jaxcam.ablation_cam(vit, x, targets=TARGETS, reshape_transform=jaxcam.tokens_to_grid)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_token_layer_without_transform_is_a_clear_error(vit, x):
    with pytest.raises(ValueError, match="reshape_transform"):
        jaxcam.grad_cam(vit, x)
    with pytest.raises(ValueError, match="reshape_transform failed"):
        jaxcam.grad_cam(vit, x, reshape_transform=lambda t: t.reshape(t.shape[0], 5, 5, -1))
    with pytest.raises(ValueError, match="square grid"):
        jaxcam.tokens_to_grid(jnp.zeros((1, 13, 4)))


# ---------------------------------------------------------------- guided backprop -------------


def test_guided_relu_rule():
    v = jnp.array([-1.0, 2.0, 3.0, 0.5])
    g = jnp.array([5.0, -2.0, 4.0, 0.0])
    _, pullback = jax.vjp(guided_relu, v)
    np.testing.assert_array_equal(pullback(g)[0], [0.0, 0.0, 4.0, 0.0])


def test_guided_backprop_restores_relu(net, x):
    """Values: test_parity_pgc_family.py (guided backprop and guided Grad-CAM vs pgc, unscaled)."""
    relu = jax.nn.relu
    guided = jaxcam.guided_backprop(net, x, targets=TARGETS)
    assert jax.nn.relu is relu and nn.relu is relu
    plain = jax.grad(lambda v: net(v)[np.arange(2), TARGETS].sum())(x)
    assert np.abs(np.asarray(guided) - np.asarray(plain)).max() > 1e-4  # the rule changed something


class NoReLU(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(jnp.tanh(x).mean(axis=(1, 2)))  # no ReLU at all (jnp.maximum(x, 0) is guided now)


def test_guided_backprop_without_relu_calls_is_a_clear_error(x):
    model = jaxcam.models.build(NoReLU(), jaxcam.ModelInfo())
    with pytest.raises(ValueError, match="no ReLU"):
        jaxcam.guided_backprop(model, x)


# ---------------------------------------------------------------- options ---------------------


def test_aug_smooth_errors(net, x):
    """Values of both modes: test_options_values.py::test_aug_smooth_modes_match_brute_force."""
    with pytest.raises(ValueError, match="aug_smooth"):
        jaxcam.grad_cam(net, x, aug_smooth="rotate")
    with pytest.raises(ValueError, match="eigen_smooth"):
        run(ablation_cam_map, net, x, None, None, eigen_smooth=True, score="logit", value=0.0, chunk_size=None)
