"""bfloat16 convolutions through oneDNN (jaxcam.nn.ops / jaxcam.nn._onednn, issue 25).

Every check compares against a float64 reference computed from the SAME bfloat16-rounded operands, so
the only error left is the kernel's: float32 accumulation (negligible) plus one rounding of the result
to bfloat16, at most half a unit in the last place, i.e. 2**-8 of the value (bfloat16 keeps 8
significant bits). The bound used is

    |got - ref| <= 2**-8 * |ref| + 2**-16 * (|x| conv |w|)

(the second term covers float32 accumulation and cancellation; |x| conv |w| is the sum of the terms'
magnitudes). The measured worst case is written beside each test (in units of the first term).
"""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcam import _native
from jaxcam import nn as jnn
from jaxcam.nn import ops

BF16 = jnp.bfloat16
_NHWC = ("NHWC", "HWIO", "NHWC")


def _needs_bf16():
    if not _native.available():
        pytest.skip(f"native extension not loaded: {_native.error()}")
    if not _native.bf16_available():
        pytest.skip("oneDNN has no native bfloat16 kernels on this CPU (no AVX512-BF16 / AMX); "
                    "JAXCAM_NATIVE_BF16=1 forces them")


def _rand_bf16(shape, seed):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32).astype(BF16)


def _f64(a):
    return np.asarray(jnp.asarray(a, jnp.float32), np.float64)


# ------------------------------------------------------------------ float64 references (numpy)


def _dense(w, c_in, groups):
    """A grouped HWIO kernel (k, k, C/G, O) as the equivalent dense one (k, k, C, O), zeros off the groups."""
    k1, k2, cg, o = w.shape
    og = o // groups
    d = np.zeros((k1, k2, c_in, o), np.float64)
    for gi in range(groups):
        d[:, :, gi * cg:(gi + 1) * cg, gi * og:(gi + 1) * og] = w[:, :, :, gi * og:(gi + 1) * og]
    return d


def _windows(xp, k1, k2, s, oh, ow):
    """Tap (i, j) of every output position: xp[:, i + s*oh, j + s*ow, :]."""
    return [[xp[:, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s, :] for j in range(k2)] for i in range(k1)]


def ref_conv(x, w, s, pads, groups):
    x, wd = np.asarray(x, np.float64), _dense(np.asarray(w, np.float64), x.shape[-1], groups)
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    k1, k2 = wd.shape[:2]
    oh, ow = (xp.shape[1] - k1) // s + 1, (xp.shape[2] - k2) // s + 1
    taps = _windows(xp, k1, k2, s, oh, ow)
    return sum(np.einsum("nhwc,co->nhwo", taps[i][j], wd[i, j]) for i in range(k1) for j in range(k2))


def ref_input_grad(g, w, x_shape, s, pads, groups):
    g, wd = np.asarray(g, np.float64), _dense(np.asarray(w, np.float64), x_shape[-1], groups)
    n, h, wid, c = x_shape
    k1, k2 = wd.shape[:2]
    oh, ow = g.shape[1:3]
    dxp = np.zeros((n, h + sum(pads[0]), wid + sum(pads[1]), c))
    for i in range(k1):
        for j in range(k2):
            dxp[:, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s, :] += np.einsum("nhwo,co->nhwc", g, wd[i, j])
    return dxp[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + wid]


def ref_kernel_grad(x, g, w_shape, s, pads, groups):
    x, g = np.asarray(x, np.float64), np.asarray(g, np.float64)
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    k1, k2, cg, o = w_shape
    oh, ow = g.shape[1:3]
    taps = _windows(xp, k1, k2, s, oh, ow)
    dense = np.stack([np.stack([np.einsum("nhwc,nhwo->co", taps[i][j], g) for j in range(k2)]) for i in range(k1)])
    og = o // groups
    out = np.zeros(w_shape)
    for gi in range(groups):
        out[:, :, :, gi * og:(gi + 1) * og] = dense[:, :, gi * cg:(gi + 1) * cg, gi * og:(gi + 1) * og]
    return out


def _ulp_error(got, ref, magnitude):
    """max |got - ref| / (2**-8 |ref| + 2**-16 magnitude): <= 1 means within the bound (see the docstring)."""
    got = _f64(got)
    assert got.shape == ref.shape
    return float(np.max(np.abs(got - ref) / (2.0 ** -8 * np.abs(ref) + 2.0 ** -16 * magnitude + 1e-30)))


# (k, stride, pads, groups, C, O): plain, strided with asymmetric pads, 1x1 stride 2 (ResNet's
# downsample), ResNet's stem, grouped, depthwise (groups = C), depthwise with stride 2 (its input
# gradient skips oneDNN's brgconv_strided: conv_dnnl.cc)
CASES = [(3, 1, ((1, 1), (1, 1)), 1, 16, 32), (3, 2, ((0, 1), (0, 1)), 1, 16, 32), (1, 2, ((0, 0), (0, 0)), 1, 16, 32),
         (7, 2, ((3, 3), (3, 3)), 1, 3, 16), (3, 2, ((1, 1), (1, 1)), 4, 16, 32), (3, 1, ((1, 1), (1, 1)), 16, 16, 16),
         (5, 2, ((1, 2), (1, 2)), 32, 32, 32)]


@pytest.mark.parametrize("k,s,pads,groups,c,o", CASES)
def test_bf16_conv_and_gradients_on_onednn_against_float64(k, s, pads, groups, c, o, monkeypatch):
    """oneDNN's bfloat16 forward, input gradient and kernel gradient: within half a bfloat16 ulp of the
    float64 value of the same bfloat16 operands (plus float32 accumulation); bfloat16 results, as lax's.
    Measured (Zen 4, AVX512-BF16, oneDNN 3.2 avx512_core_bf16): worst 0.99 of the bound over the seven
    cases (0.87-0.99 per result), XLA's bfloat16 path the same figures: both round a float32 sum once."""
    _needs_bf16()
    x, w = _rand_bf16((4, 13, 12, c), 0), _rand_bf16((k, k, c // groups, o), 1)
    y_shape = jax.eval_shape(lambda x, w: ops._onednn.lax_conv(x, w, (s, s), pads, groups), x, w)
    g = _rand_bf16(y_shape.shape, 2)

    def run(conv):
        f = jax.jit(lambda x, w: conv(x, w, (s, s), pads, groups))
        y, vjp = jax.vjp(f, x, w)
        def both(x, w):
            y, vjp = jax.vjp(f, x, w)
            return (y,) + vjp(g)
        return (y,) + vjp(g), jax.jit(both).lower(x, w).as_text()

    got, text = run(ops.conv)
    for target in ("jaxcam_conv_fwd", "jaxcam_conv_bwd_data", "jaxcam_conv_bwd_weights"):
        assert target in text
    with jnn.native(False):
        xla, xla_text = run(ops.conv)
    assert "jaxcam_conv" not in xla_text
    assert [a.dtype for a in got] == [a.dtype for a in xla] == [BF16] * 3  # JAX's rule: bf16 in, bf16 out

    xf, wf, gf = _f64(x), _f64(w), _f64(g)
    refs = (ref_conv(xf, wf, s, pads, groups), ref_input_grad(gf, wf, x.shape, s, pads, groups),
            ref_kernel_grad(xf, gf, w.shape, s, pads, groups))
    mags = (ref_conv(abs(xf), abs(wf), s, pads, groups), ref_input_grad(abs(gf), abs(wf), x.shape, s, pads, groups),
            ref_kernel_grad(abs(xf), abs(gf), w.shape, s, pads, groups))
    errs = [_ulp_error(a, r, m) for a, r, m in zip(got, refs, mags)]
    xla_errs = [_ulp_error(a, r, m) for a, r, m in zip(xla, refs, mags)]
    # the kernel gradient's two routes (conv_dnnl.cc picks one by shape): the bfloat16 primitive, and
    # the float32 primitive on widened operands
    for mode in ("bf16", "f32"):
        monkeypatch.setenv("JAXCAM_BF16_KERNEL_GRAD", mode)
        dw = jax.vjp(lambda x, w: ops.conv(x, w, (s, s), pads, groups), x, w)[1](g)[1]
        assert dw.dtype == BF16
        errs.append(_ulp_error(dw, refs[2], mags[2]))
    print(f"bf16 error / bound: onednn {np.round(errs, 3)} (fwd, dx, dw, dw bf16 route, dw f32 route), "
          f"xla {np.round(xla_errs, 3)}")
    assert max(errs) <= 1.0, errs


def test_bf16_onednn_under_jvp_vmap_and_second_order():
    """The bilinear rules hold in bfloat16 too: jvp, forward over reverse and vmap on oneDNN agree with
    XLA's bfloat16 convolutions within a few bfloat16 ulps of the result's scale (each side rounds to
    bfloat16 at every convolution, so a difference could compound; bound 3%). Measured: 0 (equal)."""
    _needs_bf16()
    x, w = _rand_bf16((2, 9, 10, 8), 0), _rand_bf16((3, 3, 8, 8), 1)
    tx, tw = _rand_bf16(x.shape, 2), _rand_bf16(w.shape, 3)

    def f(x, w):
        return jnp.sum(jnp.sin(ops.conv(x, w, (2, 2), ((1, 1), (1, 1))).astype(jnp.float32)))

    checks = (lambda: jax.jvp(f, (x, w), (tx, tw))[1],
              lambda: jax.jvp(jax.grad(f, (0, 1)), (x, w), (tx, tw))[1],
              lambda: jax.vmap(jax.grad(f, (0, 1)), (0, None))(jnp.stack([x, tx]), w))
    assert "jaxcam_conv_bwd_weights" in jax.jit(checks[1]).lower().as_text()
    worst = 0.0
    for check in checks:
        got = check()
        with jnn.native(False):
            want = check()
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            assert a.dtype == b.dtype
            a, b = _f64(a), _f64(b)
            worst = max(worst, float(np.max(np.abs(a - b)) / max(1.0, np.abs(b).max())))
    print(f"worst difference / scale: {worst:.4f}")
    assert worst <= 0.03


def test_bf16_max_pool_gradient_on_onednn_picks_the_first_maximum():
    """bfloat16 max pooling: the gradient is oneDNN's (bfloat16), equal to XLA's exactly, ties included
    (bfloat16 rounding makes ties common: values are small integers here), overlapping windows too."""
    _needs_bf16()
    x = jnp.round(jax.random.normal(jax.random.key(0), (2, 11, 11, 5)) * 2).astype(BF16)
    c = jnp.round(jax.random.normal(jax.random.key(1), (2, 6, 6, 5)) * 4).astype(BF16)  # exact sums

    def f(x):
        return jnp.sum(ops.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1))).astype(jnp.float32) * c)

    text = jax.jit(jax.grad(f)).lower(x).as_text()
    assert "jaxcam_pool_bwd_from_input" in text
    got = jax.grad(f)(x)
    with jnn.native(False):
        want = jax.grad(f)(x)
    assert got.dtype == want.dtype == BF16
    np.testing.assert_array_equal(_f64(got), _f64(want))


@pytest.mark.parametrize("dtype", [BF16, jnp.float16])
def test_half_precision_max_pool_value_equals_a_brute_force_max(dtype):
    """Half-precision max pooling computes in float32 and casts back (XLA:CPU's bfloat16 reduce_window is ~3x
    slower); that is exact, so the value equals a numpy max over each window, in its own dtype, on both paths."""
    x = jnp.round(jax.random.normal(jax.random.key(2), (2, 12, 13, 3)) * 3).astype(dtype)  # ties
    x = x.at[0, 0, 0, 0].set(jnp.asarray(0.1, dtype))  # one value that is not an integer
    window, strides, pads = (3, 3), (2, 2), ((1, 1), (1, 0))
    xp = np.pad(_f64(x), ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-np.inf)
    oh, ow = (xp.shape[1] - 3) // 2 + 1, (xp.shape[2] - 3) // 2 + 1
    want = np.stack([np.stack([xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2)) for j in range(ow)], 1)
                     for i in range(oh)], 1)
    for native in (True, False):
        with jnn.native(native):
            got = jax.jit(lambda x: ops.max_pool(x, window, strides, pads))(x)
        assert got.dtype == dtype
        np.testing.assert_array_equal(_f64(got), want)


def test_float32_and_mixed_dtypes_unchanged():
    """float32 still takes the float32 kernels; bf16 x f32 operands (which lax rejects) never reach oneDNN."""
    if not _native.available():
        pytest.skip(f"native extension not loaded: {_native.error()}")
    x32, w32 = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2))
    assert ops.native_usable(x32, w32, ((1, 1), (1, 1)))
    assert not ops.native_usable(x32.astype(BF16), w32, ((1, 1), (1, 1)))
    assert not ops._native_ready(x32.astype(jnp.float16), w32.astype(jnp.float16), bf16=True)


def _tiny_step_losses(dtype, steps=3):
    import optax

    import jaxcam
    from jaxcam import train

    model = jaxcam.models.resnet20(num_classes=10, seed=0)
    tx = train.make_optimizer("sgd", optax.constant_schedule(0.05), weight_decay=0.0, momentum=0.9)
    step = train.make_train_step(model, tx, image_size=16, compute_dtype=dtype)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 16).astype(np.int32)
    state = train.replicate(train.init_state(model, tx))
    batch = train.shard_batch(images, labels)
    text = step.lower(state, *batch).as_text()
    losses = []
    for _ in range(steps):
        state, metrics = step(state, *batch)
        losses.append(float(metrics["loss"]))
    return losses, text


def test_bf16_train_step_runs_on_onednn_and_tracks_float32():
    """`make_train_step(compute_dtype=bfloat16)` (CIFAR ResNet-20, 16 px, batch 16, SGD with momentum, 3
    steps on one batch): its convolutions and BatchNorm are oneDNN's bfloat16 kernels. The first step's
    loss (the initial parameters' forward) is within 0.5% of the float32 step's; the next two (after
    updates from bfloat16 gradients, momentum 0.9 on one batch: differences compound) within 5%.
    Measured over data seeds 0-2: first step 0.03-0.14%, next steps 0.5-2.3% (with XLA's BatchNorm
    instead, ops.BF16_BATCH_NORM_ON_ONEDNN = False: 0.01-0.09% and 0.2-1.5%); seed 0 here:
    3.326/1.118/0.429 (f32) against 3.321/1.124/0.424 (bf16)."""
    _needs_bf16()
    f32, _ = _tiny_step_losses(jnp.float32)
    bf16, text = _tiny_step_losses(BF16)
    conv_lines = [line for line in text.splitlines() if "jaxcam_conv_" in line]
    assert conv_lines and all("bf16" in line for line in conv_lines)
    assert any("jaxcam_bn_bwd" in line and "bf16" in line for line in text.splitlines())
    assert {t for t in ("fwd", "bwd_data", "bwd_weights") if any(f"jaxcam_conv_{t}" in line for line in conv_lines)} \
        == {"fwd", "bwd_data", "bwd_weights"}
    rel = [abs(a - b) / abs(b) for a, b in zip(bf16, f32)]
    print(f"losses f32 {f32}, bf16 {bf16}, relative difference {np.round(rel, 4)}")
    assert all(np.isfinite(bf16)) and rel[0] <= 0.005 and max(rel) <= 0.05, (f32, bf16)
    assert bf16[-1] < bf16[0]  # it trains


def test_lax_path_with_jaxcam_native_0():
    """JAXCAM_NATIVE=0 (a fresh process): bfloat16 and float32 convolutions and their gradients are lax's,
    with no oneDNN call, and the bfloat16 values are within the bound above."""
    code = r"""
import jax, jax.numpy as jnp, numpy as np
from jaxcam import _native
from jaxcam.nn import ops
assert not _native.available() and not _native.bf16_available()
for dt in (jnp.float32, jnp.bfloat16):
    x = jax.random.normal(jax.random.key(0), (2, 9, 9, 8)).astype(dt)
    w = jax.random.normal(jax.random.key(1), (3, 3, 8, 4)).astype(dt)
    f = lambda x, w: jnp.sum(ops.conv(x, w, (2, 2), ((1, 1), (1, 1))).astype(jnp.float32) ** 2)
    text = jax.jit(jax.grad(f, (0, 1))).lower(x, w).as_text()
    assert "jaxcam_" not in text, text
    y = ops.conv(x, w, (2, 2), ((1, 1), (1, 1)))
    assert y.dtype == dt
    xf, wf = (np.asarray(a.astype(jnp.float32), np.float64) for a in (x, w))
    ref = np.asarray(ops._onednn.lax_conv(jnp.asarray(xf, jnp.float32), jnp.asarray(wf, jnp.float32), (2, 2),
                                          ((1, 1), (1, 1))), np.float64)
    err = np.abs(np.asarray(y.astype(jnp.float32), np.float64) - ref)
    assert np.all(err <= 2.0 ** -8 * np.abs(ref) + 1e-4 * np.abs(ref).max()), float(err.max())
print("ok")
"""
    env = dict(os.environ, JAXCAM_NATIVE="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_bf16_batch_norm_on_onednn_against_float64(monkeypatch):
    """Training-mode BatchNorm on bfloat16 activations (float32 scale and shift, as a compute_dtype=
    bfloat16 step casts them: bfloat16 parameters are widened): oneDNN's bfloat16 primitive in a training
    step, against float64 from the same bfloat16 values. y and dx: one bfloat16 rounding (bound
    2**-8 |ref| + 2**-16 of the terms' magnitude); statistics, dscale, dshift float32 (bound 2**-16 of
    the magnitude; dscale, dshift then rounded to the bfloat16 parameters by the cast). Measured, as a
    fraction of the bound: y 0.98, dx 0.98, mean 0.001, var 0.02, dscale 0.82, dshift 0.69."""
    _needs_bf16()
    monkeypatch.setattr(ops, "BF16_BATCH_NORM_ON_ONEDNN", True)  # the default (see ops.py)
    eps = 1e-5
    x = (_rand_bf16((4, 7, 6, 32), 0).astype(jnp.float32) * 3 + 1).astype(BF16)
    scale = jax.random.normal(jax.random.key(3), (32,)).astype(BF16)  # bfloat16 params, as the step casts them
    bias = jax.random.normal(jax.random.key(4), (32,)).astype(BF16)
    g = _rand_bf16(x.shape, 5)

    def f(x, scale, bias):
        with jnn._switch.training(True):
            return ops.batch_norm_train(x, scale, bias, eps)

    text = jax.jit(lambda *a: jax.vjp(f, *a)[1]((g, jnp.zeros(32), jnp.zeros(32)))).lower(x, scale, bias).as_text()
    assert "jaxcam_bn_bwd" in text
    (y, mean, var), vjp = jax.vjp(f, x, scale, bias)
    dx, dscale, dbias = vjp((g, jnp.zeros_like(mean), jnp.zeros_like(var)))
    assert (y.dtype, dx.dtype, dscale.dtype, dbias.dtype, mean.dtype) == (BF16, BF16, BF16, BF16, jnp.float32)

    xf, gf, sf, bf = _f64(x), _f64(g), _f64(scale), _f64(bias)
    n = xf.size // 32
    m = xf.mean((0, 1, 2))
    v = ((xf - m) ** 2).mean((0, 1, 2))
    rstd = 1 / np.sqrt(v + eps)
    xhat = (xf - m) * rstd
    y_ref = xhat * sf + bf
    sum_g, sum_gx = gf.sum((0, 1, 2)), (gf * xhat).sum((0, 1, 2))
    dx_ref = sf * rstd * (gf - sum_g / n - xhat * sum_gx / n)
    errs = {
        "y": _ulp_error(y, y_ref, abs(xhat * sf) + abs(bf)),
        "dx": _ulp_error(dx, dx_ref, abs(sf * rstd) * (abs(gf) + abs(gf).mean((0, 1, 2)) + abs(xhat) * abs(gf * xhat).mean((0, 1, 2)))),
        # float32 results: the 2**-8 |ref| term is not needed; statistics
        "mean": float(np.max(np.abs(_f64(mean) - m) / (2.0 ** -16 * np.abs(xf).mean((0, 1, 2))))),
        "var": float(np.max(np.abs(_f64(var) - v) / (2.0 ** -16 * v))),
        # dscale, dshift: float32 sums, then rounded to the parameters' bfloat16 by the cast's transpose
        "dscale": _ulp_error(dscale, sum_gx, abs(gf * xhat).sum((0, 1, 2))),
        "dshift": _ulp_error(dbias, sum_g, abs(gf).sum((0, 1, 2))),
    }
    print("bf16 batch norm error / bound:", {k: round(e, 3) for k, e in errs.items()})
    assert max(errs.values()) <= 1.0, errs


def test_bf16_stays_on_xla_without_native_bf16_kernels():
    """On a CPU without AVX512-BF16/AMX (simulated: ONEDNN_MAX_CPU_ISA=AVX2, a fresh process) bfloat16
    convolutions stay on XLA (oneDNN would emulate them, slower), float32 ones still go to oneDNN."""
    if not _native.available():
        pytest.skip(f"native extension not loaded: {_native.error()}")
    code = r"""
import jax, jax.numpy as jnp
from jaxcam import _native
from jaxcam.nn import ops
assert _native.available() and not _native.bf16_native_isa() and not _native.bf16_available()
f = lambda x, w: jnp.sum(ops.conv(x, w, (1, 1), ((1, 1), (1, 1))).astype(jnp.float32))
for dt, native in ((jnp.float32, True), (jnp.bfloat16, False)):
    x, w = jnp.ones((1, 5, 5, 4), dt), jnp.ones((3, 3, 4, 4), dt)
    assert ("jaxcam_conv_bwd_weights" in jax.jit(jax.grad(f, (0, 1))).lower(x, w).as_text()) == native
print("ok")
"""
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2")
    env.pop("JAXCAM_NATIVE_BF16", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
