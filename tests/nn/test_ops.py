"""jaxcam.nn.ops against the plain lax / flax forms: forward and gradients to 1e-5."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcam import nn as jnn
from jaxcam.nn import ops

jax.config.update("jax_default_matmul_precision", "highest")


def _close(a, b, tol=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(1.0, np.abs(b).max())
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale)


def _rand(shape, seed):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


@pytest.mark.parametrize("k,stride,pads", [(3, 1, ((1, 1), (1, 1))), (3, 2, ((0, 1), (0, 1))),
                                           (5, 2, ((1, 2), (1, 2))), (5, 1, ((2, 2), (2, 2))), (3, 2, ((1, 1), (1, 1)))])
@pytest.mark.parametrize("native", [False, True])
def test_depthwise_matches_grouped_lax_conv(k, stride, pads, native):
    """Both formulations (shifted multiply-adds; oneDNN's depthwise convolution, used in training steps)
    equal lax's grouped convolution: values, both gradients, and under vmap."""
    from jaxcam import _native

    if native and not _native.available():
        pytest.skip(f"native extension not loaded: {_native.error()}")
    x, kernel, c = _rand((2, 9, 8, 6), 0), _rand((k, k, 6), 1), None

    def mine(a, b):
        return ops.depthwise_conv(a, b, stride, pads)

    def ref(x, kernel):
        return lax.conv_general_dilated(x, kernel[:, :, None], (stride, stride), pads,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=6)

    with jnn.native(native):
        out = mine(x, kernel)
        c = _rand(out.shape, 2)
        got = jax.vjp(mine, x, kernel)[1](c)
        text = jax.jit(lambda a, b: jax.vjp(mine, a, b)[1](c)).lower(x, kernel).as_text()
        xs = jnp.stack([x, 1 - x])
        vgot = jax.vmap(lambda a: jax.vjp(mine, a, kernel)[1](c))(xs)
    assert ("jaxcam_conv_bwd_weights" in text) == native
    _close(out, ref(x, kernel))
    want = jax.vjp(ref, x, kernel)[1](c)
    for g, w in zip(got, want):
        _close(g, w)
    vwant = jax.vmap(lambda a: jax.vjp(ref, a, kernel)[1](c))(xs)
    jax.tree_util.tree_map(_close, vgot, vwant)


def test_batch_norm_matches_flax():
    x = _rand((4, 5, 6, 7), 0) * 3 + 1
    bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    mine = jnn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    variables = bn.init(jax.random.key(0), x)
    variables = {"params": {"scale": _rand((7,), 3) + 1, "bias": _rand((7,), 4)},
                 "batch_stats": variables["batch_stats"]}
    assert jax.tree_util.tree_structure(mine.init(jax.random.key(0), x)) == jax.tree_util.tree_structure(variables)
    c = _rand(x.shape, 5)

    def loss(module, params, x):
        y, upd = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, mutable=["batch_stats"])
        return jnp.sum(y * c), (y, upd)

    (_, (y0, s0)), g0 = jax.value_and_grad(loss, argnums=(1, 2), has_aux=True)(bn, variables["params"], x)
    for plain in (False, True):
        with jnn.plain(plain):
            (_, (y1, s1)), g1 = jax.value_and_grad(loss, argnums=(1, 2), has_aux=True)(mine, variables["params"], x)
        _close(y1, y0)
        jax.tree_util.tree_map(_close, s1, s0)
        jax.tree_util.tree_map(_close, g1, g0)
    # eval mode: running statistics
    ev = {"params": variables["params"], "batch_stats": {"mean": _rand((7,), 6), "var": _rand((7,), 7) ** 2}}
    _close(jnn.BatchNorm(use_running_average=True, epsilon=1e-5).apply(ev, x),
           nn.BatchNorm(use_running_average=True, epsilon=1e-5).apply(ev, x))


def test_channel_sums_and_conv_through_ops():
    x = _rand((3, 4, 5, 6), 0)
    _close(ops.channel_sums(x), x.sum((0, 1, 2)))
    w = _rand((3, 3, 6, 4), 1)
    dn = ("NHWC", "HWIO", "NHWC")

    def f(conv):
        return lambda x, w: jnp.sum(jnp.sin(conv(jnp.cos(x), w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn)))

    for a, b in zip(jax.grad(f(ops.conv_general_dilated), (0, 1))(x, w), jax.grad(f(lax.conv_general_dilated), (0, 1))(x, w)):
        _close(a, b)


@pytest.mark.parametrize("k,stride,pads", [(3, 1, ((1, 1), (1, 1))), (3, 2, ((1, 1), (1, 1))), (1, 2, ((0, 0), (0, 0))),
                                           (7, 2, ((3, 3), (3, 3))), (3, 2, ((0, 1), (0, 1))), (1, 1, ((0, 0), (0, 0)))])
def test_conv2d_matches_lax(k, stride, pads):
    x, w = _rand((2, 9, 10, 5), 0), _rand((k, k, 5, 4), 1)
    dn = ("NHWC", "HWIO", "NHWC")

    def ref(x, w):
        return lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=dn)

    out = ops.conv2d(x, w, (stride, stride), pads)
    _close(out, ref(x, w))
    c = _rand(out.shape, 2)
    for a, b in zip(jax.vjp(lambda x, w: ops.conv2d(x, w, (stride, stride), pads), x, w)[1](c), jax.vjp(ref, x, w)[1](c)):
        _close(a, b)
    # through flax's Conv with SAME padding
    conv = jnn.Conv(4, (k, k), (stride, stride), padding="SAME", use_bias=False)
    v = conv.init(jax.random.key(0), x)
    plain = nn.Conv(4, (k, k), (stride, stride), padding="SAME", use_bias=False)
    _close(conv.apply(v, x), plain.apply(v, x))
    for a, b in zip(jax.grad(lambda v, x: jnp.sum(jnp.sin(conv.apply(v, x))), (0, 1))(v, x),
                    jax.grad(lambda v, x: jnp.sum(jnp.sin(plain.apply(v, x))), (0, 1))(v, x)):
        jax.tree_util.tree_map(_close, a, b)


def test_ablation_affine_shortcut_equals_masked_heads(monkeypatch):
    """Ablation-CAM at ResNet layer4 (head: mean -> fc, affine) takes the gradient shortcut; the maps
    equal the masked-copies path to 1e-5 (channel and location ablation)."""
    import jaxcam
    from jaxcam._src.split import Split, parse_layer
    from jaxcam.methods import ablation

    model = jaxcam.models.resnet18(num_classes=5)
    x = _rand((2, 64, 64, 3), 0)
    split = Split(model, parse_layer("layer4"))
    a = split.features(x)
    assert ablation._is_affine(lambda v: split.head(x, v, jnp.array([0, 1])), a)
    assert not ablation._is_affine(lambda v: Split(model, parse_layer("layer3")).head(x, v, jnp.array([0, 1])),
                                   Split(model, parse_layer("layer3")).features(x))
    fast = [jaxcam.ablation_cam(model, x, layer="layer4"), jaxcam.spatial_ablation_cam(model, x, layer="layer4", ablation_value=0.3)]
    monkeypatch.setattr(ablation, "_is_affine", lambda fn, a: False)
    slow = [jaxcam.ablation_cam(model, x, layer="layer4"), jaxcam.spatial_ablation_cam(model, x, layer="layer4", ablation_value=0.3)]
    for f, s in zip(fast, slow):
        assert float(jnp.max(s)) > 0.5  # not blank
        _close(f, s)


def test_ablation_affine_shortcut_through_inference_batch_norm(monkeypatch):
    """A head with an inference BatchNorm (`jaxcam_affine` under oneDNN: affine in its input) still takes the
    gradient shortcut, and its maps equal the masked-copies path."""
    import jaxcam
    from jaxcam._src.split import Split, parse_layer
    from jaxcam.methods import ablation

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = jnn.Conv(6, (3, 3), name="features")(jnp.tanh(x))
            h = jnn.BatchNorm(use_running_average=True, name="bn")(h)
            return nn.Dense(3, name="fc")(h.mean(axis=(1, 2)))

    x = _rand((2, 12, 12, 3), 1)
    variables = Net().init(jax.random.key(0), x)
    stats = {"mean": _rand((6,), 2), "var": 1.0 + jnp.abs(_rand((6,), 3))}
    variables = {**variables, "batch_stats": {"bn": stats}}
    model = jaxcam.Model(Net(), variables)
    split = Split(model, parse_layer("features"))
    assert ablation._is_affine(lambda v: split.head(x, v, jnp.array([0, 1])), split.features(x))
    fast = jaxcam.ablation_cam(model, x, layer="features", targets=np.array([0, 2]))
    monkeypatch.setattr(ablation, "_is_affine", lambda fn, a: False)
    slow = jaxcam.ablation_cam(model, x, layer="features", targets=np.array([0, 2]))
    assert float(jnp.max(slow)) > 0.5  # not blank
    _close(fast, slow)


def test_native_convolutions_load_and_are_used():
    """On Linux x86-64 the installed package carries its oneDNN extension (built at install time) and the
    models' float32 convolutions run it: forward, input gradient and kernel gradient are custom calls."""
    import platform
    import sys

    from jaxcam import _native

    if not (sys.platform == "linux" and platform.machine() == "x86_64"):
        pytest.skip("the native extension is built on Linux x86-64 only")
    assert _native.available(), _native.error()
    x, w = _rand((2, 8, 8, 3), 0), _rand((3, 3, 3, 4), 1)
    def grad():  # a new jit each time: the switch is read when tracing
        return jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(ops.conv2d(x, w, (1, 1), ((1, 1), (1, 1))))), (0, 1)))

    text = grad().lower(x, w).as_text()
    for target in ("jaxcam_conv_fwd", "jaxcam_conv_bwd_data", "jaxcam_conv_bwd_weights"):
        assert target in text
    with jnn.native(False):
        assert "jaxcam_conv" not in grad().lower(x, w).as_text()


def test_conv2d_under_vmap_matches_lax(stride=2, pads=((0, 1), (1, 0))):
    """vmap folds a batched input into N (one native call); per-example kernels and kernel gradients
    take lax's batched convolution. Values and gradients as lax's."""
    xs, w, ws = _rand((3, 2, 7, 6, 4), 0), _rand((3, 3, 4, 5), 1), _rand((3, 3, 3, 4, 5), 2)
    dn = ("NHWC", "HWIO", "NHWC")

    def mine(x, w):
        return jnp.sum(jnp.sin(ops.conv2d(x, w, (stride, stride), pads)))

    def ref(x, w):
        return jnp.sum(jnp.sin(lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=dn)))

    for in_axes, args in (((0, None), (xs, w)), ((0, 0), (xs, ws)), ((None, 0), (xs[0], ws))):
        _close(jax.vmap(mine, in_axes)(*args), jax.vmap(ref, in_axes)(*args))
        for a, b in zip(jax.vmap(jax.grad(mine, (0, 1)), in_axes)(*args), jax.vmap(jax.grad(ref, (0, 1)), in_axes)(*args)):
            _close(a, b)


def test_native_missing_warns_once_and_falls_back(monkeypatch):
    from jaxcam import _native

    def missing():
        raise FileNotFoundError("the onednn-cpu-gomp package is not installed")

    monkeypatch.setattr(_native, "_state", {"loaded": None, "error": None})
    monkeypatch.setattr(_native, "_libdnnl_path", missing)
    x, w = _rand((2, 6, 6, 3), 0), _rand((3, 3, 3, 2), 1)
    with pytest.warns(RuntimeWarning, match="onednn-cpu-gomp") as record:
        out = ops.conv2d(x, w, (1, 1), ((1, 1), (1, 1)))
        ops.conv2d(x, w, (1, 1), ((1, 1), (1, 1)))
        assert not _native.available()
    assert len([r for r in record if "native oneDNN" in str(r.message)]) == 1
    _close(out, lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")))


def _needs_native():
    from jaxcam import _native

    if not _native.available():
        pytest.skip(f"native extension not loaded: {_native.error()}")


def test_batch_norm_native_is_used_and_per_instance_under_vmap():
    """Training-mode BatchNorm runs oneDNN's primitives (forward with the batch statistics, backward);
    under vmap each instance keeps its own statistics (the XLA formulation), as the plain form."""
    _needs_native()
    x, sc, b = _rand((3, 2, 5, 4, 6), 0) * 2 + 1, _rand((6,), 1) + 1, _rand((6,), 2)
    c = _rand(x.shape[1:], 3)

    def loss(x, sc, b):
        y, mean, var = ops.batch_norm_train(x, sc, b, 1e-5)
        return jnp.sum(jnp.sin(y) * c) + jnp.sum(mean) + jnp.sum(var)  # statistics carry no gradient

    with jnn.native(True):
        text = jax.jit(jax.grad(loss, (0, 1, 2))).lower(x[0], sc, b).as_text()
        got = [jax.grad(loss, (0, 1, 2))(x[0], sc, b), jax.vmap(jax.grad(loss, (0, 1, 2)), (0, None, None))(x, sc, b),
               jax.vmap(loss, (0, None, None))(x, sc, b)]
    assert "jaxcam_bn_fwd" in text and "jaxcam_bn_bwd" in text
    with jnn.plain():
        want = [jax.grad(loss, (0, 1, 2))(x[0], sc, b), jax.vmap(jax.grad(loss, (0, 1, 2)), (0, None, None))(x, sc, b),
                jax.vmap(loss, (0, None, None))(x, sc, b)]
    jax.tree_util.tree_map(_close, got, want)


@pytest.mark.parametrize("shape,window,strides,pads,relu", [
    ((2, 9, 10, 5), (3, 3), (2, 2), ((1, 1), (1, 1)), False),
    ((3, 8, 8, 4), (3, 3), (2, 2), ((1, 1), (1, 1)), True),   # ReLU zeros: ties go to the first maximum
    ((2, 7, 6, 3), (2, 2), (2, 2), ((0, 0), (0, 0)), True),
    ((2, 7, 7, 3), (3, 2), (1, 2), ((1, 0), (0, 1)), False),
])
def test_max_pool_matches_flax(shape, window, strides, pads, relu):
    """jaxcam.nn.max_pool (oneDNN's pooling in training) equals flax's max_pool: values, gradients
    (the first maximum of a window takes the cotangent, as XLA's) and under vmap."""
    _needs_native()
    x = _rand(shape, 0)
    x = jax.nn.relu(x) if relu else x

    def ref(x):
        return nn.max_pool(x, window, strides, padding=pads)

    def mine(x):
        return jnn.max_pool(x, window, strides, pads, training=True)

    c = _rand(ref(x).shape, 1)
    text = jax.jit(jax.grad(lambda x: jnp.sum(mine(x) * c))).lower(x).as_text()
    assert "jaxcam_pool_bwd_from_input" in text  # the gradient on oneDNN, the value XLA's reduce_window
    assert "jaxcam_pool" not in jax.jit(lambda x: jnn.max_pool(x, window, strides, pads)).lower(x).as_text()
    t = _rand(shape, 3)  # forward mode, and forward over reverse (a Hessian-vector product)
    _close(jax.jvp(mine, (x,), (t,))[1], jax.jvp(ref, (x,), (t,))[1])
    hvp = [jax.jvp(jax.grad(lambda x: jnp.sum(jnp.sin(f(x)) ** 2)), (x,), (t,))[1] for f in (mine, ref)]
    _close(*hvp)
    _close(mine(x), ref(x), 0)
    _close(jax.vjp(mine, x)[1](c)[0], jax.vjp(ref, x)[1](c)[0])
    xs, cs = jnp.stack([x, 2 * x - 1]), jnp.stack([c, -c])
    _close(jax.vmap(mine)(xs), jax.vmap(ref)(xs), 0)
    for in_axes in ((0, 0), (0, None)):
        got = jax.vmap(lambda x, c: jax.vjp(mine, x)[1](c)[0], in_axes)(xs, cs if in_axes[1] == 0 else c)
        want = jax.vmap(lambda x, c: jax.vjp(ref, x)[1](c)[0], in_axes)(xs, cs if in_axes[1] == 0 else c)
        _close(got, want)


@pytest.mark.parametrize("k,stride,pads,groups", [(3, 1, ((1, 1), (1, 1)), 1), (3, 2, ((0, 1), (0, 1)), 1),
                                                  (1, 2, ((0, 0), (0, 0)), 1), (3, 2, ((1, 1), (1, 1)), 4)])
def test_native_conv_under_every_transformation(k, stride, pads, groups):
    """The oneDNN convolution primitives against lax's convolution under grad, jvp, forward over reverse
    (ShapleyCAM's Hessian-vector products), reverse over reverse and vmap (batched images, batched
    kernels: an ensemble, or both), grouped (depthwise) too; explaining and training take this path."""
    _needs_native()
    x = _rand((2, 9, 10, 4), 0)
    w = _rand((k, k, 4 // groups, 8 if groups == 1 else 4), 1)

    def make(conv):
        return lambda x, w: jnp.sum(jnp.sin(conv(x, w, (stride, stride), pads, groups)))

    mine, ref = make(lambda *a: ops.conv(*a)), make(ops._onednn.lax_conv)
    assert "jaxcam_conv_fwd" in jax.jit(mine).lower(x, w).as_text()
    tx, tw = _rand(x.shape, 2), _rand(w.shape, 3)
    for f in (lambda f: f(x, w), lambda f: jax.grad(f, (0, 1))(x, w),
              lambda f: jax.jvp(f, (x, w), (tx, tw))[1],
              lambda f: jax.jvp(jax.grad(f, (0, 1)), (x, w), (tx, tw))[1],
              lambda f: jax.grad(lambda x, w: jnp.sum(jax.grad(f)(x, w) ** 2), (0, 1))(x, w)):
        jax.tree_util.tree_map(_close, f(mine), f(ref))
    xs, ws = jnp.stack([x, 1 - x, 2 * x]), jnp.stack([w, -w, 0.5 * w])
    for axes, args in (((0, None), (xs, w)), ((0, 0), (xs, ws)), ((None, 0), (x, ws))):
        jax.tree_util.tree_map(_close, jax.vmap(jax.value_and_grad(mine, (0, 1)), axes)(*args),
                               jax.vmap(jax.value_and_grad(ref, (0, 1)), axes)(*args))


def test_methods_explain_through_onednn():
    """Explaining runs the oneDNN kernels too (forward, input gradients, ShapleyCAM's forward-over-reverse
    Hessian-vector products, guided backpropagation through max pooling), with the plain lax path's maps."""
    _needs_native()
    import jaxcam

    model = jaxcam.models.resnet18(num_classes=5)
    x = _rand((2, 64, 64, 3), 0)
    text = jax.jit(lambda x: model(x)).lower(x).as_text()
    assert "jaxcam_conv_fwd" in text
    assert "jaxcam_pool" in jax.jit(jax.grad(lambda x: jnp.sum(model(x)))).lower(x).as_text()
    calls = [lambda: jaxcam.grad_cam(model, x, layer="layer3"), lambda: jaxcam.shapley_cam(model, x, layer="layer3"),
             lambda: jaxcam.guided_backprop(model, x), lambda: jaxcam.score_cam(model, x, layer="layer3", chunk_size=64)]
    got = [call() for call in calls]
    with jnn.plain():
        want = [call() for call in calls]
    for g, w in zip(got, want):
        assert float(jnp.max(jnp.abs(w))) > 0  # not blank
        _close(g, w, 1e-4)


def _bn_closed_form_grads(x, g, m, v, s, eps):
    """numpy float64 gradients of <BN(x; m, v, s, b), g> with respect to x, mean, var, scale, bias."""
    r = 1 / np.sqrt(v + eps)
    axes = tuple(range(x.ndim - 1))
    return (g * s * r, -(g * s * r).sum(axes), -(g * (x - m) * s * r ** 3 / 2).sum(axes),
            (g * (x - m) * r).sum(axes), g.sum(axes))


_BN_FORMS = {"xla": lambda *a: ops._bn_apply(*a), "onednn": lambda *a: ops.batch_norm_eval(*a)}


@pytest.mark.parametrize("form", sorted(_BN_FORMS))
@pytest.mark.parametrize("shape", [(2, 5, 6, 3), (3, 7, 4), (2, 3, 4, 5, 2)])
def test_inference_batch_norm_gradients_equal_the_closed_form(shape, form):
    """Inference BatchNorm y = (x - m) s / sqrt(v + eps) + b, both formulations: `_bn_apply` (XLA's
    autodiff of two-stage broadcasts, `ops.channel_broadcast`) and `batch_norm_eval` (its gradient one
    oneDNN batch normalization backward, `_onednn.affine`). Value and every gradient equal numpy's float64
    closed forms: dy/dx = g s r, ds = sum g (x - m) r, db = sum g, dm = -sum g s r,
    dv = -sum g (x - m) s r^3 / 2 (r = 1 / sqrt(v + eps)). Measured worst relative error 1e-7 (float32)."""
    rng = np.random.default_rng(3)
    c = shape[-1]
    x, g = rng.normal(size=shape), rng.normal(size=shape)
    m, b = rng.normal(size=c), rng.normal(size=c)
    s, v = rng.uniform(0.5, 1.5, c), rng.uniform(0.5, 1.5, c)
    eps = 1e-5
    bn = _BN_FORMS[form]

    def f(x, m, v, s, b):
        return jnp.vdot(bn(x, m, v, s, b, eps), jnp.asarray(g, jnp.float32))

    args = [jnp.asarray(a, jnp.float32) for a in (x, m, v, s, b)]
    grad = jax.jit(jax.grad(f, argnums=(0, 1, 2, 3, 4)))
    if form == "onednn":
        from jaxcam import _native

        assert ("jaxcam_affine_bwd" in grad.lower(*args).as_text()) == _native.available()
    got = grad(*args)
    want = _bn_closed_form_grads(x, g, m, v, s, eps)
    for name, a, w in zip(("x", "mean", "var", "scale", "bias"), got, want):
        np.testing.assert_allclose(np.asarray(a), w, rtol=1e-5, atol=1e-5, err_msg=name)
    r = 1 / np.sqrt(v + eps)
    np.testing.assert_allclose(np.asarray(bn(*args, eps)), (x - m) * r * s + b, rtol=1e-5, atol=1e-5)

    # second order: the Hessian-vector product (jvp of grad, as ShapleyCAM) and a gradient of a gradient,
    # against central differences of the float64 closed form
    t = [rng.normal(size=a.shape) for a in (x, m, v, s, b)]
    hvp = jax.jit(lambda a, t: jax.jvp(jax.grad(f, argnums=(0, 1, 2, 3, 4)), a, t)[1])(
        args, [jnp.asarray(u, jnp.float32) for u in t])
    h = 1e-5
    plus = _bn_closed_form_grads(*((x + h * t[0], g) + tuple(p + h * u for p, u in zip((m, v, s), t[1:4]))), eps)
    minus = _bn_closed_form_grads(*((x - h * t[0], g) + tuple(p - h * u for p, u in zip((m, v, s), t[1:4]))), eps)
    for name, a, hi, lo in zip(("x", "mean", "var", "scale", "bias"), hvp, plus, minus):
        np.testing.assert_allclose(np.asarray(a), (hi - lo) / (2 * h), rtol=1e-4, atol=1e-4, err_msg=f"hvp {name}")

    def gg(x, m, v, s, b):  # d/d(params) of |dL/dx|^2
        return jnp.sum(jnp.square(jax.grad(f)(x, m, v, s, b)))

    got = jax.jit(jax.grad(gg, argnums=(0, 2, 3)))(*args)
    # |g s r|^2 summed: d/dx = 0, d/ds = 2 s r^2 sum g^2, d/dv = -s^2 r^4 sum g^2
    g2 = (g ** 2).sum(tuple(range(len(shape) - 1)))
    for name, a, w in zip(("x", "var", "scale"), got, (np.zeros(shape), -s ** 2 * r ** 4 * g2, 2 * s * r ** 2 * g2)):
        np.testing.assert_allclose(np.asarray(a), w, rtol=1e-4, atol=1e-4, err_msg=f"grad of grad {name}")


def test_inference_batch_norm_higher_order_on_a_nonlinear_loss():
    """On L = sum(sin(BN(x))) (the cotangent now depends on x), `batch_norm_eval`'s second-order derivatives
    (a gradient of a gradient, which transposes the gradient primitive; a jvp of a jvp; a Hessian-vector
    product) equal the textbook formula (x - m) / sqrt(v + eps) * s + b differentiated by JAX in float64."""
    rng = np.random.default_rng(7)
    shape, c = (2, 3, 4, 5), 5
    args64 = [rng.normal(size=shape), rng.normal(size=c), rng.uniform(0.5, 1.5, c), rng.normal(size=c),
              rng.normal(size=c)]
    t1 = [rng.normal(size=np.shape(a)) for a in args64]
    t2 = [rng.normal(size=np.shape(a)) for a in args64]

    def derivatives(bn, dtype):
        args, u, w = ([jnp.asarray(a, dtype) for a in group] for group in (args64, t1, t2))

        def loss(*p):
            return jnp.sum(jnp.sin(bn(*p, 1e-3)))

        def grad_sq(*p):
            return jnp.sum(jnp.square(jax.grad(loss)(*p)))

        return (jax.grad(grad_sq, argnums=(0, 1, 2, 3, 4))(*args),
                (jax.jvp(lambda *p: jax.jvp(loss, p, tuple(u))[1], tuple(args), tuple(w))[1],),
                jax.jvp(jax.grad(loss, argnums=(0, 1, 2, 3, 4)), tuple(args), tuple(u))[1])

    got = jax.jit(lambda: derivatives(ops.batch_norm_eval, jnp.float32))()
    with jax.enable_x64(True):
        want = derivatives(lambda x, m, v, s, b, eps: (x - m) / jnp.sqrt(v + eps) * s + b, jnp.float64)
        want = jax.tree_util.tree_map(np.asarray, want)
    for what, g_, w_ in zip(("grad of grad", "jvp of jvp", "hvp"), got, want):
        for i, (a, b) in enumerate(zip(g_, w_)):
            np.testing.assert_allclose(np.asarray(a), b, rtol=2e-4, atol=2e-4 * max(1.0, np.abs(b).max()),
                                       err_msg=f"{what} {i}")


def test_inference_batch_norm_under_vmap_and_bfloat16():
    """`batch_norm_eval` under vmap (each instance's sums its own) equals the per-instance loop, and on
    bfloat16 activations its gradients equal the XLA formulation's (float32 scale and statistics)."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(3, 2, 4, 5, 6)), jnp.float32)
    m, v, s, b = (jnp.asarray(a, jnp.float32) for a in (rng.normal(size=6), rng.uniform(0.5, 1.5, 6),
                                                        rng.normal(size=6), rng.normal(size=6)))
    g = jnp.asarray(rng.normal(size=(2, 4, 5, 6)), jnp.float32)

    def grads(x, s):
        return jax.grad(lambda x, s: jnp.vdot(ops.batch_norm_eval(x, m, v, s, b, 1e-3).astype(jnp.float32), g),
                        (0, 1))(x, s)

    batched = jax.jit(jax.vmap(grads, (0, None)))(x, s)
    for i in range(3):
        one = grads(x[i], s)
        for a, w in zip(batched, one):
            _close(a[i], w)
    xb = x[0].astype(jnp.bfloat16)
    from jaxcam import _native

    if _native.bf16_available():  # else batch_norm_eval is the XLA formulation on bfloat16
        assert "jaxcam_affine_bwd" in jax.jit(grads).lower(xb, s).as_text()
    ref = jax.grad(lambda x, s: jnp.vdot(ops._bn_apply(x, m, v, s, b, 1e-3).astype(jnp.float32), g), (0, 1))(xb, s)
    for a, w in zip(jax.jit(grads)(xb, s), ref):
        assert a.dtype == w.dtype
        _close(a.astype(jnp.float32), w.astype(jnp.float32), 2e-2)
