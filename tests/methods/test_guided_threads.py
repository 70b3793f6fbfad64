"""Guided backprop patches nothing global: guided and plain Grad-CAM in two threads at once are both right."""
import threading

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxcam


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv1")(x))
        x = jnp.maximum(nn.Conv(6, (3, 3), strides=2, name="conv2")(x), 0)  # a ReLU written by hand
        return nn.Dense(3, name="fc")(x.mean(axis=(1, 2)))


def _model():
    variables = Net().init(jax.random.key(0), jnp.zeros((1, 12, 12, 3)))
    return jaxcam.Model(Net(), variables, jaxcam.ModelInfo(name="net", default_layer="conv2", classifier="fc"))


def _numpy_guided(model, x, c):
    """Guided backprop by hand: forward through the two layers, backward with the guided rule."""
    p = jax.tree_util.tree_map(np.asarray, model.variables["params"])
    conv = lambda v, w, b, s: jax.lax.conv_general_dilated(
        v, w, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
    z1 = np.asarray(conv(x, p["conv1"]["kernel"], p["conv1"]["bias"], 1))
    a1 = np.maximum(z1, 0)
    z2 = np.asarray(conv(a1, p["conv2"]["kernel"], p["conv2"]["bias"], 2))
    g_pool = np.broadcast_to(p["fc"]["kernel"][:, c] / (z2.shape[1] * z2.shape[2]), z2.shape)
    g_z2 = np.where((z2 > 0) & (g_pool > 0), g_pool, 0.0)
    _, vjp2 = jax.vjp(lambda v: conv(v, p["conv2"]["kernel"], 0, 2), a1)
    g_a1 = np.asarray(vjp2(jnp.asarray(g_z2, jnp.float32))[0])
    g_z1 = np.where((z1 > 0) & (g_a1 > 0), g_a1, 0.0)
    _, vjp1 = jax.vjp(lambda v: conv(v, p["conv1"]["kernel"], 0, 1), x)
    return np.asarray(vjp1(jnp.asarray(g_z1, jnp.float32))[0])


def test_guided_matches_a_hand_computation_and_plain_grads_stay_plain():
    model = _model()
    x = jax.random.normal(jax.random.key(1), (2, 12, 12, 3))
    got = np.asarray(jaxcam.guided_backprop(model, x, targets=1))
    want = _numpy_guided(model, np.asarray(x), 1)
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    plain = np.asarray(jax.grad(lambda v: model(v)[:, 1].sum())(x))
    assert not np.allclose(plain, got)  # guided differs from the plain gradient here


def test_two_threads_guided_and_plain_both_right():
    model = _model()
    x = jax.random.normal(jax.random.key(2), (2, 12, 12, 3))
    guided_ref = np.asarray(jaxcam.guided_backprop(model, x, targets=0))
    cam_ref = np.asarray(jaxcam.grad_cam(model, x, targets=0))
    plain_ref = np.asarray(jax.grad(lambda v: model(v)[:, 0].sum())(x))
    errors, barrier = [], threading.Barrier(2)

    def run(fn, ref, rounds=4):
        barrier.wait()
        for i in range(rounds):
            jax.clear_caches() if i == 0 else None  # force fresh traces while the other thread traces
            if not np.allclose(np.asarray(fn()), ref, atol=1e-5):
                errors.append(fn)

    plain = lambda: jax.grad(lambda v: model(v)[:, 0].sum())(x + 0.0)
    threads = [threading.Thread(target=run, args=(lambda: jaxcam.guided_backprop(model, x, targets=0), guided_ref)),
               threading.Thread(target=run, args=(lambda: jaxcam.grad_cam(model, x, targets=0), cam_ref)),
               ]
    for t in threads:
        t.start()
    run_plain = threading.Thread(target=lambda: [errors.append("plain") for _ in range(3)
                                                 if not np.allclose(np.asarray(plain()), plain_ref, atol=1e-5)])
    run_plain.start()
    for t in threads + [run_plain]:
        t.join()
    assert errors == []
