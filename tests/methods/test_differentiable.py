"""Maps are differentiable: jax.grad through a method agrees with float64 central finite differences.

A tiny smooth CNN (softplus, tanh) in float64 under ``jax.enable_x64``; for each method, the loss
L = sum(map * R) (R fixed, random) is differentiated by ``jax.grad`` w.r.t. the input and the
parameters together, and each gradient is checked along a random direction v against
(L(theta + eps v) - L(theta - eps v)) / (2 eps) -- an independent computation that uses only forward
calls. Relative error bound 1e-5 (measured figures: docs/differentiable.md).
Then composition: a map under jit, vmapped over an ensemble of parameter sets, and inside an
optax step.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcam

EPS = 1e-6  # central differences: truncation ~eps^2, rounding ~1e-16/eps
RTOL = 1e-5

# (method, layer): "conv2" feeds a non-linear head (tanh -> mean -> fc): ablation runs the head;
# "conv3" feeds mean -> fc only (affine): ablation takes its exact one-contraction shortcut.
CASES = [
    ("grad_cam", "conv2"), ("hires_cam", "conv2"), ("grad_cam_elementwise", "conv2"), ("grad_cam_pp", "conv2"),
    ("xgrad_cam", "conv2"), ("layer_cam", "conv2"), ("score_cam", "conv2"), ("ablation_cam", "conv2"),
    ("ablation_cam", "conv3"), ("spatial_ablation_cam", "conv2"), ("fast_ablation_cam", "conv2"),
    ("eigen_cam", "conv2"), ("eigen_grad_cam", "conv2"),
]


class SmoothNet(nn.Module):
    dtype: type = jnp.float64  # of the parameters

    @nn.compact
    def __call__(self, x):
        x = nn.softplus(nn.Conv(4, (3, 3), name="conv1", param_dtype=self.dtype)(x))
        x = jnp.tanh(nn.Conv(5, (3, 3), name="conv2", param_dtype=self.dtype)(x))
        x = nn.Conv(6, (3, 3), name="conv3", param_dtype=self.dtype)(x)
        return nn.Dense(3, name="fc", param_dtype=self.dtype)(x.mean(axis=(1, 2)))


@pytest.fixture
def x64():
    """float64 inside the test only (the setting is restored on exit)."""
    with jax.enable_x64(True):
        yield


def smooth_model(seed=0, dtype=jnp.float64):
    x = jax.random.normal(jax.random.key(seed + 100), (2, 8, 8, 2), dtype)
    variables = SmoothNet(dtype).init(jax.random.key(seed), x)
    return jaxcam.Model(SmoothNet(dtype), variables), x


def tree_dot(a, b):
    return sum(jnp.vdot(u, v) for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def random_like(tree, key):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [jax.random.normal(k, v.shape, v.dtype) for k, v in zip(keys, leaves)])


def relative_errors(fn, model, x):
    """|grad . v - central difference| / |central difference| along a random input and a random parameter direction."""
    weights = jax.random.normal(jax.random.key(7), fn(model.variables, x).shape, jnp.float64)

    def loss(variables, x):
        return jnp.sum(fn(variables, x) * weights)

    g_vars, g_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(model.variables, x)
    v_vars = random_like(model.variables, jax.random.key(1))
    v_x = jax.random.normal(jax.random.key(2), x.shape, x.dtype)
    fd_x = (loss(model.variables, x + EPS * v_x) - loss(model.variables, x - EPS * v_x)) / (2 * EPS)
    plus = jax.tree_util.tree_map(lambda p, v: p + EPS * v, model.variables, v_vars)
    minus = jax.tree_util.tree_map(lambda p, v: p - EPS * v, model.variables, v_vars)
    fd_p = (loss(plus, x) - loss(minus, x)) / (2 * EPS)
    err_x = abs(float(jnp.vdot(g_x, v_x)) - float(fd_x)) / abs(float(fd_x))
    err_p = abs(float(tree_dot(g_vars, v_vars)) - float(fd_p)) / abs(float(fd_p))
    return err_x, err_p


@pytest.mark.parametrize("normalize", [False, True], ids=["raw", "normalized"])
@pytest.mark.parametrize("name, layer", CASES, ids=[f"{m}-{l}" for m, l in CASES])
def test_gradient_matches_finite_differences(x64, name, layer, normalize):
    model, x = smooth_model()
    method = jaxcam.registry.get(name).fn
    targets = jnp.array([0, 2])

    def fn(variables, x):
        return method(model.with_variables(variables), x, layer, targets, normalize=normalize)

    maps = fn(model.variables, x)
    assert maps.dtype == jnp.float64
    err_x, err_p = relative_errors(fn, model, x)
    print(f"{name} {layer} normalize={normalize}: input {err_x:.1e} params {err_p:.1e}")
    assert err_x <= RTOL and err_p <= RTOL, (err_x, err_p)


# The remaining map methods, each once at its default (normalized) form; `layer` as the method takes it
# (CAM: the layer before the mean + fc head; FullGrad: every bias layer; Refine-CAM: several layers);
# sampling methods with their noise fixed by `seed` (IS-CAM's scales are not random).
MORE = [
    ("cam", "conv3", {}), ("fem", "conv2", {}), ("finer_cam", "conv2", {"comparisons": (1,)}),
    ("shapley_cam", "conv2", {}), ("fullgrad", None, {}), ("ss_cam", "conv2", {"num_samples": 2, "seed": 3}),
    ("is_cam", "conv2", {"num_samples": 2}), ("smoothgrad_cam_pp", "conv2", {"num_samples": 2, "seed": 0}),
    ("kpca_cam", "conv2", {}), ("seg_eigen_cam", "conv2", {}), ("refine_cam", ["conv1", "conv2"], {}),
    ("sess", "conv2", {"num_scales": 2}),
]


def with_random_biases(model):
    """Non-zero biases (flax initializes them to 0, where FullGrad's |bias x gradient| sits on its kink)."""
    leaves = jax.tree_util.tree_flatten_with_path(model.variables)[0]
    keys = dict(zip([jax.tree_util.keystr(p) for p, _ in leaves], jax.random.split(jax.random.key(5), len(leaves))))
    return model.with_variables(jax.tree_util.tree_map_with_path(
        lambda p, v: v + 0.3 * jax.random.normal(keys[jax.tree_util.keystr(p)], v.shape, v.dtype)
        if "bias" in jax.tree_util.keystr(p) else v, model.variables))


@pytest.mark.parametrize("name, layer, options", MORE, ids=[m for m, _, _ in MORE])
def test_remaining_methods_match_finite_differences(x64, name, layer, options):
    model, x = smooth_model()
    model = with_random_biases(model.replace(info=jaxcam.ModelInfo(classifier="fc", default_layer="conv2")))
    method = jaxcam.registry.get(name).fn
    targets = jnp.array([0, 2])

    def fn(variables, x):
        return method(model.with_variables(variables), x, layer, targets, **options)

    assert fn(model.variables, x).dtype == jnp.float64
    err_x, err_p = relative_errors(fn, model, x)
    print(f"{name}: input {err_x:.1e} params {err_p:.1e}")
    assert err_x <= RTOL and err_p <= RTOL, (err_x, err_p)


# ---------------------------------------------------------------- composition


def test_map_under_jit_and_vmap_over_an_ensemble():
    """A map is a pure function of (parameters, input): jit it, vmap it over stacked parameter sets."""
    model, x = smooth_model(dtype=jnp.float32)
    members = [SmoothNet(jnp.float32).init(jax.random.key(s), x) for s in range(3)]
    stacked = jax.tree_util.tree_map(lambda *v: jnp.stack(v), *members)

    @jax.jit
    def ensemble(variables, x):
        return jax.vmap(lambda v: jaxcam.grad_cam(model.with_variables(v), x, "conv2", jnp.array([0, 2])))(variables)

    maps = ensemble(stacked, x)
    assert maps.shape == (3, 2, 8, 8)
    for k, member in enumerate(members):
        one = jaxcam.grad_cam(model.with_variables(member), x, "conv2", jnp.array([0, 2]))
        np.testing.assert_allclose(maps[k], one, atol=1e-5)


def test_optax_steps_on_a_loss_of_a_map():
    """jax.grad of a loss of a map, inside a jitted optax loop: the loss goes down."""
    model, x = smooth_model(dtype=jnp.float32)
    params = model.variables["params"]
    tx = optax.adam(3e-2)

    def loss(params):
        m = model.with_variables({"params": params})
        return jnp.mean(jaxcam.grad_cam(m, x, "conv2", jnp.array([0, 2]), normalize=False)[:, :3, :3] ** 2)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = tx.update(grads, state)
        return optax.apply_updates(params, updates), state, value

    state = tx.init(params)
    values = []
    for _ in range(10):
        params, state, value = step(params, state)
        values.append(float(value))
    assert np.all(np.isfinite(values)) and values[-1] < 0.5 * values[0], values
