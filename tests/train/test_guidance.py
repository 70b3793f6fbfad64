"""CAM guidance (jaxcam.losses): the loss's parts against numpy, its bad-input errors, and a tiny
guided loop that moves the map's energy off a decoy patch compared with the unguided run (same seed)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxcam
from jaxcam import losses

SIZE, PATCH = 12, 3


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Conv(4, (3, 3), name="conv1")(x))
        x = jnp.tanh(nn.Conv(4, (3, 3), name="conv2")(x))
        return nn.Dense(2, name="fc")(x.reshape(x.shape[0], -1))


def decoy_batch(n=32, seed=0):
    """Class 1: a bright 4x4 square in the middle; a corner patch whose level is the class (the decoy)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    x = rng.normal(0, 0.3, (n, SIZE, SIZE, 1)).astype(np.float32)
    x[labels == 1, 4:8, 4:8] += 1.0
    x[:, :PATCH, :PATCH] = np.where(labels == 1, 2.0, -2.0)[:, None, None, None]
    avoid = np.zeros((SIZE, SIZE), np.float32)
    avoid[:PATCH + 1, :PATCH + 1] = 1.0
    return jnp.asarray(x), jnp.asarray(labels), jnp.asarray(avoid)


def model_of(params):
    return jaxcam.Model(Tiny(), {"params": params}, jaxcam.ModelInfo(default_layer="conv2"))


def train(weight, steps=25):
    x, y, avoid = decoy_batch()
    params = Tiny().init(jax.random.key(0), x)["params"]
    tx = optax.adam(1e-2)

    def loss(params):
        model = model_of(params)
        ce = optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()
        return ce + weight * losses.guidance_loss(model, x, avoid=avoid, method="hires_cam", targets=y)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    maps = jaxcam.hires_cam(model_of(params), x, "conv2", y, normalize=False)
    return float(losses.energy_share(maps, avoid).mean())


def test_guidance_moves_map_energy_off_the_decoy():
    unguided, guided = train(0.0), train(5.0)
    print(f"raw HiResCAM energy on the decoy: unguided {unguided:.3f}, guided {guided:.3f}")
    assert guided < 0.5 * unguided, (guided, unguided)


def test_energy_share_and_loss_against_numpy():
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(3, 5, 6))
    region = (rng.random((3, 5, 6)) > 0.5).astype(float)
    want = [(m ** 2 * r).sum() / (m ** 2).sum() for m, r in zip(maps, region)]
    np.testing.assert_allclose(losses.energy_share(jnp.asarray(maps), jnp.asarray(region)), want, rtol=1e-5)
    assert float(losses.energy_share(jnp.zeros((1, 5, 6)), jnp.ones((5, 6)))[0]) == 0.0

    x, y, avoid = decoy_batch(n=4)
    model = model_of(Tiny().init(jax.random.key(0), x)["params"])
    raw = np.asarray(jaxcam.grad_cam(model, x, "conv2", y, normalize=False), np.float64)
    a, f = np.asarray(avoid), 1.0 - np.asarray(avoid)
    share = lambda r: ((raw ** 2 * r).sum((1, 2)) / (raw ** 2).sum((1, 2))).mean()
    got = losses.guidance_loss(model, x, avoid=avoid, focus=f, targets=y)
    np.testing.assert_allclose(float(got), share(a) + 1.0 - share(f), rtol=1e-5)

    both = jnp.stack([jnp.zeros(4, jnp.int32), jnp.ones(4, jnp.int32)], axis=1)  # (N, T): both classes' maps
    per_class = [np.asarray(jaxcam.grad_cam(model, x, "conv2", c, normalize=False), np.float64) for c in (0, 1)]
    want = np.mean([((r ** 2 * a).sum((1, 2)) / (r ** 2).sum((1, 2))).mean() for r in per_class])
    got = losses.guidance_loss(model, x, avoid=jnp.broadcast_to(avoid, (4, SIZE, SIZE)), targets=both)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    traced = jax.jit(lambda t: losses.guidance_loss(model, x, avoid=avoid, targets=t))(both)  # (N, T) traced
    np.testing.assert_allclose(float(traced), want, rtol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "needs masks"),
    ({"avoid": np.ones((5, 5))}, "expected (4, 12, 12)"),
    ({"avoid": np.ones((3, SIZE, SIZE))}, "expected (4, 12, 12)"),
    ({"focus": np.full((SIZE, SIZE), 2.0)}, "values must lie in [0, 1]"),
    ({"avoid": np.full((SIZE, SIZE), np.nan)}, "NaN"),
    ({"avoid": np.ones((SIZE, SIZE)), "method": "guided_backprop"}, "does not return one map"),
    ({"avoid": np.ones((SIZE, SIZE)), "method": "grad_cam_typo"}, "Did you mean"),
    ({"avoid": np.ones((SIZE, SIZE)), "method": "cam", "normalize": False}, "no raw map"),
])
def test_bad_masks_and_methods_are_one_line_errors(kwargs, message):
    x, y, _ = decoy_batch(n=4)
    model = model_of(Tiny().init(jax.random.key(0), x)["params"])
    with pytest.raises(ValueError) as info:
        losses.guidance_loss(model, x, targets=y, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
