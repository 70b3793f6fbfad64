"""oneDNN's convolutions and max-pooling backward as JAX primitives (the handlers in `jaxcam._native`).

Each convolution primitive is bilinear in its two operands, so its forward-mode derivative is a sum of
two calls of the same family and its transpose is another member:

    y  = conv(x, w)                 x^T: conv_input_grad(ct, w)      w^T: conv_kernel_grad(x, ct)
    dx = conv_input_grad(g, w)      g^T: conv(ct, w)                 w^T: conv_kernel_grad(ct, g)
    dw = conv_kernel_grad(x, g)     x^T: conv_input_grad(g, ct)      g^T: conv(x, ct)

so `jit`, `grad`, `jvp` (ShapleyCAM's Hessian-vector products), their compositions and `vmap` all stay
on oneDNN. Under `vmap` a batched image operand is folded into N (one call); a batched kernel (an
ensemble of parameter sets) or per-example kernel gradients take lax's batched convolution.

Max pooling: the value is XLA's reduce_window (fast); its tangent is XLA's (forward mode), and the
tangent's transpose -- the gradient, which XLA:CPU runs as a slow scatter -- is oneDNN's pooling
backward, which re-runs the pooling forward for its workspace.
"""
from __future__ import annotations

import functools

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax
from jax.core import ShapedArray
from jax.extend import core
from jax.interpreters import ad, batching, mlir

_NHWC = ("NHWC", "HWIO", "NHWC")


# ------------------------------------------------------------------ lax references (fallbacks)


def lax_conv(x, w, strides, pads, groups=1):
    """The same convolution as lax computes it (NHWC x HWIO, explicit pads, feature groups)."""
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC, feature_group_count=groups)


def _lax_input_grad(g, w, x_shape, strides, pads, groups):
    x = jnp.zeros(x_shape, g.dtype)
    return jax.vjp(lambda x: lax_conv(x, w, strides, pads, groups), x)[1](g)[0]


def _lax_kernel_grad(x, g, w_shape, strides, pads, groups):
    w = jnp.zeros(w_shape, x.dtype)
    return jax.vjp(lambda w: lax_conv(x, w, strides, pads, groups), w)[1](g)[0]


def out_hw(x_shape, window, strides, pads):
    """Output (height, width) of a `window` moved by `strides` over padded NHWC x."""
    return tuple((x_shape[1 + a] + pads[a][0] + pads[a][1] - window[a]) // strides[a] + 1 for a in range(2))


# ------------------------------------------------------------------ convolution primitives


conv_p = core.Primitive("jaxcam_conv")
input_grad_p = core.Primitive("jaxcam_conv_input_grad")
kernel_grad_p = core.Primitive("jaxcam_conv_kernel_grad")


def conv(x, w, strides, pads, groups=1):
    """NHWC x HWIO convolution on oneDNN (the caller checked `jaxcam.nn.ops.native_usable`)."""
    return conv_p.bind(x, w, strides=tuple(strides), pads=tuple(map(tuple, pads)), groups=int(groups))


def input_grad(g, w, x_shape, strides, pads, groups=1):
    return input_grad_p.bind(g, w, x_shape=tuple(x_shape), strides=strides, pads=pads, groups=groups)


def kernel_grad(x, g, w_shape, strides, pads, groups=1):
    return kernel_grad_p.bind(x, g, w_shape=tuple(w_shape), strides=strides, pads=pads, groups=groups)


def _conv_shape(x, w, *, strides, pads, groups):
    return ShapedArray((x.shape[0],) + out_hw(x.shape, w.shape[:2], strides, pads) + (w.shape[3],), x.dtype)


conv_p.def_abstract_eval(_conv_shape)
input_grad_p.def_abstract_eval(
    lambda g, w, *, x_shape, strides, pads, groups: ShapedArray((g.shape[0],) + tuple(x_shape[1:]), g.dtype))
kernel_grad_p.def_abstract_eval(lambda x, g, *, w_shape, strides, pads, groups: ShapedArray(tuple(w_shape), x.dtype))

@functools.lru_cache(maxsize=None)
def _compiled(fn, params: tuple):
    """One jitted program per primitive (or lax formulation) and parameters, reused by every eager call."""
    kwargs = dict(params)
    return jax.jit(lambda *a: fn(*a, **kwargs))


def _eager(fn):
    """An impl rule: outside jit, run `fn` as its own compiled program (compiled once per parameters)."""
    return lambda *args, **params: _compiled(fn, tuple(sorted(params.items())))(*args)


for _p in (conv_p, input_grad_p, kernel_grad_p):
    _p.def_impl(_eager(_p.bind))


def _attrs(strides, pads, groups):
    (pt, pb), (pl, pr) = pads
    return {k: np.int64(v) for k, v in zip(("sh", "sw", "pt", "pb", "pl", "pr", "groups"),
                                           (*strides, pt, pb, pl, pr, groups))}


def _lowering(target):
    rule = jax.ffi.ffi_lowering(target)

    def lower(ctx, *args, strides, pads, groups, **_shape):
        return rule(ctx, *args, **_attrs(strides, pads, groups))

    return lower


mlir.register_lowering(conv_p, _lowering("jaxcam_conv_fwd"), platform="cpu")
mlir.register_lowering(input_grad_p, _lowering("jaxcam_conv_bwd_data"), platform="cpu")
mlir.register_lowering(kernel_grad_p, _lowering("jaxcam_conv_bwd_weights"), platform="cpu")


def _shape_of(v):
    return v.aval.shape  # undefined primals (the transposed operand) and arrays both carry an aval


# Transposes (see the module docstring); `ct` may be a symbolic zero.
def _conv_t_x(ct, x, w, *, strides, pads, groups):
    return input_grad(ct, w, _shape_of(x), strides, pads, groups)


def _conv_t_w(ct, x, w, *, strides, pads, groups):
    return kernel_grad(x, ct, _shape_of(w), strides, pads, groups)


def _input_grad_t_g(ct, g, w, *, x_shape, strides, pads, groups):
    return conv(ct, w, strides, pads, groups)


def _input_grad_t_w(ct, g, w, *, x_shape, strides, pads, groups):
    return kernel_grad(ct, g, _shape_of(w), strides, pads, groups)


def _kernel_grad_t_x(ct, x, g, *, w_shape, strides, pads, groups):
    return input_grad(g, ct, _shape_of(x), strides, pads, groups)


def _kernel_grad_t_g(ct, x, g, *, w_shape, strides, pads, groups):
    return conv(x, ct, strides, pads, groups)


ad.defbilinear(conv_p, _conv_t_x, _conv_t_w)
ad.defbilinear(input_grad_p, _input_grad_t_g, _input_grad_t_w)
ad.defbilinear(kernel_grad_p, _kernel_grad_t_x, _kernel_grad_t_g)


def _fold(bind, fallback, args, dims, image_arg):
    """vmap rule: only the image operand (`image_arg`) batched -> fold the vmapped axis into N and make
    one call; anything else (batched kernels, per-example kernel gradients) -> `fallback` under vmap."""
    others_batched = any(d is not None for i, d in enumerate(dims) if i != image_arg)
    if not others_batched:
        a = jnp.moveaxis(args[image_arg], dims[image_arg], 0)
        lead = a.shape[:2]
        folded = list(args)
        folded[image_arg] = a.reshape((-1,) + a.shape[2:])
        out = bind(*folded)
        return out.reshape(lead + out.shape[1:]), 0
    args = [a if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims)]
    axes = tuple(None if d is None else 0 for d in dims)
    return jax.vmap(fallback, in_axes=axes)(*args), 0


def _conv_batch(args, dims, *, strides, pads, groups):
    return _fold(lambda x, w: conv(x, w, strides, pads, groups),
                 lambda x, w: lax_conv(x, w, strides, pads, groups), args, dims, 0)


def _input_grad_batch(args, dims, *, x_shape, strides, pads, groups):
    return _fold(lambda g, w: input_grad(g, w, (g.shape[0],) + tuple(x_shape[1:]), strides, pads, groups),
                 lambda g, w: _lax_input_grad(g, w, x_shape, strides, pads, groups), args, dims, 0)


def _kernel_grad_batch(args, dims, *, w_shape, strides, pads, groups):
    # the kernel gradient sums over N: a batched operand always means one kernel gradient per instance
    args = [a if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims)]
    axes = tuple(None if d is None else 0 for d in dims)
    return jax.vmap(lambda x, g: _lax_kernel_grad(x, g, w_shape, strides, pads, groups), in_axes=axes)(*args), 0


batching.primitive_batchers[conv_p] = _conv_batch
batching.primitive_batchers[input_grad_p] = _input_grad_batch
batching.primitive_batchers[kernel_grad_p] = _kernel_grad_batch


# ------------------------------------------------------------------ max pooling


def lax_max_pool(x, window, strides, pads):
    """XLA's reduce_window. Half precision goes through float32 and back, which is exact (every bfloat16 or
    float16 value is a float32 value, and the max picks one of them): XLA:CPU's bfloat16 reduce_window is
    ~3x slower than its float32 one (ResNet-18's stem pool, 8x112x112x64: 13.6 ms against 4.5 ms with the
    casts, AMD Zen 4, 2 cores), which was ~15% of a bfloat16 ResNet-18 forward."""
    if x.dtype in (jnp.bfloat16, jnp.float16):
        return lax_max_pool(x.astype(jnp.float32), window, strides, pads).astype(x.dtype)
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0)))


pool_p = core.Primitive("jaxcam_max_pool")
pool_tangent_p = core.Primitive("jaxcam_max_pool_tangent")  # linear in its first operand (the tangent)
pool_grad_p = core.Primitive("jaxcam_max_pool_grad")  # linear in its first operand (the cotangent)


def max_pool(x, window, strides, pads):
    """Max pooling of NHWC x (explicit -inf padding) whose gradient runs on oneDNN."""
    return pool_p.bind(x, window=tuple(window), strides=tuple(strides), pads=tuple(map(tuple, pads)))


def _pool_tangent_lax(t, x, *, window, strides, pads):
    return jax.jvp(lambda x: lax_max_pool(x, window, strides, pads), (x,), (t,))[1]


def _pool_grad_lax(g, x, *, window, strides, pads):
    return jax.vjp(lambda x: lax_max_pool(x, window, strides, pads), x)[1](g)[0]


pool_p.def_abstract_eval(lambda x, *, window, strides, pads: ShapedArray(
    (x.shape[0],) + out_hw(x.shape, window, strides, pads) + (x.shape[3],), x.dtype))
pool_tangent_p.def_abstract_eval(lambda t, x, *, window, strides, pads: ShapedArray(
    (x.shape[0],) + out_hw(x.shape, window, strides, pads) + (x.shape[3],), t.dtype))
pool_grad_p.def_abstract_eval(lambda g, x, **_: ShapedArray(x.shape, g.dtype))

pool_p.def_impl(_eager(lax_max_pool))
pool_tangent_p.def_impl(_eager(_pool_tangent_lax))
pool_grad_p.def_impl(_eager(pool_grad_p.bind))

mlir.register_lowering(pool_p, mlir.lower_fun(lambda x, **p: [lax_max_pool(x, **p)], multiple_results=True))
mlir.register_lowering(pool_tangent_p, mlir.lower_fun(lambda t, x, **p: [_pool_tangent_lax(t, x, **p)],
                                                      multiple_results=True))


def _pool_attrs(window, strides, pads):
    (pt, pb), (pl, pr) = pads
    return {k: np.int64(v) for k, v in zip(("kh", "kw", "sh", "sw", "pt", "pb", "pl", "pr"),
                                           (*window, *strides, pt, pb, pl, pr))}


def _pool_grad_lowering(ctx, g, x, *, window, strides, pads):
    return jax.ffi.ffi_lowering("jaxcam_pool_bwd_from_input")(ctx, g, x, **_pool_attrs(window, strides, pads))


mlir.register_lowering(pool_grad_p, _pool_grad_lowering, platform="cpu")


def _pool_jvp(primals, tangents, **p):
    (x,), (t,) = primals, tangents
    y = pool_p.bind(x, **p)
    if type(t) is ad.Zero:
        return y, ad.Zero.from_primal_value(y)
    return y, pool_tangent_p.bind(t, x, **p)


ad.primitive_jvps[pool_p] = _pool_jvp


def _linear_in_first(prim, transpose_prim):
    """prim(a, x) is linear in a (x: the pooled input, a constant): its JVP and its transpose."""

    def jvp(primals, tangents, **p):
        (a, x), (ta, _) = primals, tangents  # piecewise constant in x: no tangent from it
        y = prim.bind(a, x, **p)
        if type(ta) is ad.Zero:
            return y, ad.Zero.from_primal_value(y)
        return y, prim.bind(ta, x, **p)

    def transpose(ct, a, x, **p):
        if type(ct) is ad.Zero:
            return ad.Zero(a.aval), None
        return transpose_prim.bind(ct, x, **p), None

    ad.primitive_jvps[prim] = jvp
    ad.primitive_transposes[prim] = transpose


_linear_in_first(pool_tangent_p, pool_grad_p)
_linear_in_first(pool_grad_p, pool_tangent_p)


def _pool_batch(args, dims, **p):
    x = jnp.moveaxis(args[0], dims[0], 0)
    y = pool_p.bind(x.reshape((-1,) + x.shape[2:]), **p)
    return y.reshape(x.shape[:2] + y.shape[1:]), 0


def _pair_batch(prim):
    def rule(args, dims, **p):
        size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
        a, x = (jnp.broadcast_to(v, (size,) + v.shape) if d is None else jnp.moveaxis(v, d, 0)
                for v, d in zip(args, dims))
        out = prim.bind(a.reshape((-1,) + a.shape[2:]), x.reshape((-1,) + x.shape[2:]), **p)
        return out.reshape((size,) + (a.shape[1],) + out.shape[1:]), 0

    return rule


batching.primitive_batchers[pool_p] = _pool_batch
batching.primitive_batchers[pool_tangent_p] = _pair_batch(pool_tangent_p)
batching.primitive_batchers[pool_grad_p] = _pair_batch(pool_grad_p)


# ------------------------------------------------------------------ per-channel affine map (inference BatchNorm)
#
#     y = affine(x, m, a, b) = (x - m) * a + b           over x's last axis; m, a, b float32 (C,)
#
# The value and its tangent are XLA's elementwise formulas (they fuse with their neighbours). The
# tangent is linear in (tx, tm, ta, tb), and its transpose -- the gradient -- is one call of oneDNN's
# batch normalization backward (`jaxcam_affine_bwd`): dx = g * a, da = sum(g * (x - m)), db = sum(g)
# in one pass over g and x. XLA:CPU instead recomputed the map's producers in three separate passes
# (dx and the two sums) and tiled the sums into slow reduce-windows. The gradient's own tangent and
# transpose are the formulas below, so grad, jvp (Hessian-vector products) and grad-of-grad all work.


def _affine_ref(x, m, a, b):
    return ((x.astype(jnp.float32) - m) * a + b).astype(x.dtype)


def _affine_tangent_ref(tx, tm, ta, tb, x, m, a):
    return ((tx.astype(jnp.float32) - tm) * a + (x.astype(jnp.float32) - m) * ta + tb).astype(x.dtype)


def _affine_grad_ref(g, x, m, a):
    g32 = g.astype(jnp.float32)
    axes = tuple(range(g.ndim - 1))
    return (g32 * a).astype(x.dtype), jnp.sum(g32 * (x.astype(jnp.float32) - m), axes), jnp.sum(g32, axes)


affine_p = core.Primitive("jaxcam_affine")
affine_tangent_p = core.Primitive("jaxcam_affine_tangent")  # linear in its first four operands
affine_grad_p = core.Primitive("jaxcam_affine_grad")  # linear in its first operand (the cotangent)
affine_grad_p.multiple_results = True


def affine(x, m, a, b):
    """(x - m) * a + b over x's last axis (m, a, b: float32 (C,)), whose gradient runs on oneDNN (the caller
    checked `jaxcam.nn.ops` `_native_ready`)."""
    return affine_p.bind(x, m, a, b)


affine_p.def_abstract_eval(lambda x, m, a, b: ShapedArray(x.shape, x.dtype))
affine_tangent_p.def_abstract_eval(lambda tx, tm, ta, tb, x, m, a: ShapedArray(x.shape, x.dtype))
affine_grad_p.def_abstract_eval(lambda g, x, m, a: (ShapedArray(x.shape, x.dtype), ShapedArray(m.shape, jnp.float32),
                                                    ShapedArray(m.shape, jnp.float32)))
affine_p.def_impl(_eager(_affine_ref))
affine_tangent_p.def_impl(_eager(_affine_tangent_ref))
affine_grad_p.def_impl(_eager(affine_grad_p.bind))
mlir.register_lowering(affine_p, mlir.lower_fun(_affine_ref, multiple_results=False))
mlir.register_lowering(affine_tangent_p, mlir.lower_fun(_affine_tangent_ref, multiple_results=False))
mlir.register_lowering(affine_grad_p, mlir.lower_fun(_affine_grad_ref, multiple_results=True))
mlir.register_lowering(affine_grad_p, jax.ffi.ffi_lowering("jaxcam_affine_bwd"), platform="cpu")


def _affine_jvp(primals, tangents):
    y = affine_p.bind(*primals)
    if all(type(t) is ad.Zero for t in tangents):
        return y, ad.Zero.from_primal_value(y)
    x, m, a, _ = primals
    return y, affine_tangent_p.bind(*(ad.instantiate_zeros(t) for t in tangents), x, m, a)


def _affine_tangent_jvp(primals, tangents):
    tx, tm, ta, tb, x, m, a = primals
    y = affine_tangent_p.bind(*primals)
    dtx, dtm, dta, dtb, dx, dm, da = (ad.instantiate_zeros(t) for t in tangents)
    dy = affine_tangent_p.bind(dtx, dtm, dta, dtb, x, m, a)
    # the tangent's dependence on the map's own x, m, a (a second-order forward derivative)
    extra = (dx.astype(jnp.float32) - dm) * ta + (tx.astype(jnp.float32) - tm) * da
    return y, (dy.astype(jnp.float32) + extra).astype(y.dtype)


def _affine_tangent_transpose(ct, tx, tm, ta, tb, x, m, a):
    if any(ad.is_undefined_primal(v) for v in (x, m, a)):
        raise NotImplementedError("jaxcam_affine_tangent is linear only in its tangents")
    if type(ct) is ad.Zero:
        return [ad.Zero(v.aval) if ad.is_undefined_primal(v) else None for v in (tx, tm, ta, tb)] + [None] * 3
    dx, da, db = affine_grad_p.bind(ct, x, m, a)
    out = (dx, -a * db, da, db)
    return [o if ad.is_undefined_primal(v) else None for o, v in zip(out, (tx, tm, ta, tb))] + [None] * 3


def _affine_grad_jvp(primals, tangents):
    g, x, m, a = primals
    out = affine_grad_p.bind(*primals)
    dg, dx, dm, da = (ad.instantiate_zeros(t) for t in tangents)
    u, s1, s0 = affine_grad_p.bind(dg, x, m, a)
    g32 = g.astype(jnp.float32)
    axes = tuple(range(g.ndim - 1))
    u = (u.astype(jnp.float32) + g32 * da).astype(out[0].dtype)
    s1 = s1 + jnp.sum(g32 * (dx.astype(jnp.float32) - dm), axes)
    return out, [u, s1, s0]


def _affine_grad_transpose(cts, g, x, m, a):
    if any(ad.is_undefined_primal(v) for v in (x, m, a)):
        raise NotImplementedError("jaxcam_affine_grad is linear only in its cotangent")
    if all(type(c) is ad.Zero for c in cts):
        return [ad.Zero(g.aval), None, None, None]
    u, s1, s0 = (ad.instantiate_zeros(c) for c in cts)
    return [affine_tangent_p.bind(u, jnp.zeros_like(s1), s1, s0, x, m, a), None, None, None]


ad.primitive_jvps[affine_p] = _affine_jvp
ad.primitive_jvps[affine_tangent_p] = _affine_tangent_jvp
ad.primitive_transposes[affine_tangent_p] = _affine_tangent_transpose
ad.primitive_jvps[affine_grad_p] = _affine_grad_jvp
ad.primitive_transposes[affine_grad_p] = _affine_grad_transpose


def _vmapped(ref, multiple: bool):
    """A batching rule: the XLA formula under vmap (the statistics of a vmapped instance are its own)."""

    def rule(args, dims, **p):
        out = jax.vmap(functools.partial(ref, **p), in_axes=tuple(dims))(*args)
        return out, ((0,) * len(out) if multiple else 0)

    return rule


batching.primitive_batchers[affine_p] = _vmapped(_affine_ref, False)
batching.primitive_batchers[affine_tangent_p] = _vmapped(_affine_tangent_ref, False)
batching.primitive_batchers[affine_grad_p] = _vmapped(_affine_grad_ref, True)
