"""The kernel boundary: every convolution, BatchNorm and max pooling of jaxcam's models comes here, and
here alone it is decided whether oneDNN (`jaxcam._native`, through `jaxcam.nn._onednn`) or the plain
lax formulation computes it -- for explaining and training alike, under jit, vmap, grad and jvp.

- `conv_general_dilated` (what `jaxcam.nn.Conv` and NNX convolutions call), `conv`, `conv2d`,
  `depthwise_conv`: float32 NHWC/HWIO convolutions on oneDNN whenever its library loads, bfloat16 ones
  too where oneDNN has native bfloat16 kernels (`jaxcam._native.bf16_available`: AVX512-BF16 or AMX;
  bfloat16 in, bfloat16 out, float32 accumulation, as lax's bfloat16 convolution) (forward,
  input gradient, kernel gradient, and forward-mode derivatives: they are JAX primitives with
  bilinear rules); otherwise lax's. XLA:CPU's own convolution collapses where the window is larger
  than the feature map (a 3x3 window on ResNet's 2x2 layer4 at 64 px: 1.2 GFLOP/s instead of ~70),
  and its kernel gradient recomputes the input's producers in a cache-hostile order.
- `batch_norm_train`: training-mode BatchNorm (flax's statistics) -- oneDNN's primitive in training
  steps (the layer's batch statistics mutable; float32 activations, or bfloat16 ones with float32
  scale, shift and statistics: `BF16_BATCH_NORM_ON_ONEDNN`), else a custom VJP whose reductions are
  `channel_sums`.
- `batch_norm_eval`: inference BatchNorm, an affine map XLA fuses into its neighbours; its gradient is
  oneDNN's (one pass) where the library loads.
- `max_pool`: XLA's reduce_window for the value, oneDNN's pooling backward for the gradient (XLA:CPU
  runs its own as a scatter over index planes, ~20x slower).
- `isolated` / `jaxcam.nn.materialize`: an XLA:CPU fusion boundary.

Every function takes the plain lax path inside `jaxcam.nn.plain()` and keeps XLA's convolutions
inside `jaxcam.nn.native(False)` (or with ``JAXCAM_NATIVE=0``). Each is tested against the plain form
(tests/test_ops.py).
"""
from __future__ import annotations

import functools
from typing import Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcam import _native
from jaxcam.nn import _onednn

from jaxcam.nn._switch import is_plain, native_enabled, native_for_layers


# ------------------------------------------------------------------ fusion boundary


def isolated(fn, *args):
    """fn(*args), compiled as its own computation on materialized arguments.

    XLA:CPU duplicates elementwise producers into every consumer fusion: a backward pass that reads
    a cotangent k*k times (depthwise kernel gradient) or transposes an activation (convolution
    kernel gradient) recomputes their whole producer chain (BatchNorm, ReLU, residual adds) per
    read, in a cache-hostile order. `lax.optimization_barrier` is removed before fusion on CPU; a
    conditional is not: both branches are `fn`, so the (runtime) predicate cannot change the value.
    """
    if is_plain():
        return fn(*args)
    leaf = jax.tree_util.tree_leaves(args)[0]
    pred = leaf.reshape(-1)[0] == 0
    return lax.cond(pred, fn, fn, *args)


# ------------------------------------------------------------------ convolution


_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None, **lax_kwargs):
    """`lax.conv_general_dilated`; float32 (and, where `jaxcam._native.bf16_available()`, bfloat16)
    NHWC/HWIO convolutions without dilation run oneDNN's kernels when `jaxcam._native` loads;
    everything else (and `plain()` / `native(False)`) lax's."""
    # flax passes ConvDimensionNumbers (axis indices), others pass strings: compare the normalized form.
    nhwc = (lhs.ndim == 4 and dimension_numbers is not None
            and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
            == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC))
    simple = (nhwc and batch_group_count == 1 and lax_kwargs.get("out_sharding") is None
              and all(d == 1 for d in (lhs_dilation or (1, 1))) and all(d == 1 for d in (rhs_dilation or (1, 1)))
              and preferred_element_type is None)
    if simple and not is_plain():
        if isinstance(padding, str):
            padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
        pads = tuple((int(a), int(b)) for a, b in padding)
        if native_usable(lhs, rhs, pads):
            return _onednn.conv(lhs, rhs, tuple(int(s) for s in window_strides), pads, feature_group_count)
    # XLA's own convolution (and its autodiff) is the fast XLA path
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                    dimension_numbers, feature_group_count, batch_group_count,
                                    precision, preferred_element_type, **lax_kwargs)


def _conv(x, w, strides, pads, precision=None, groups=1):
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC, precision=precision,
                                    feature_group_count=groups)


def conv2d(x, w, strides, pads, precision=None):
    """NHWC x HWIO convolution with explicit pads; same values and gradients as lax's.

    float32 (or bfloat16 where oneDNN has native bfloat16 kernels) with non-negative pads: oneDNN's convolutions through `jax.ffi` (`jaxcam._native`) when
    the native library loads; otherwise lax's.
    """
    if native_usable(x, w, pads):
        return _onednn.conv(x, w, tuple(int(s) for s in strides), pads)
    return _conv(x, w, strides, pads, precision)


def conv(x, w, strides, pads, groups: int = 1):
    """NHWC x HWIO convolution with explicit pads and feature groups: oneDNN's when `native_usable`,
    else lax's. Differentiable in both modes, to any order, and batchable (`jaxcam.nn._onednn`)."""
    strides, pads = tuple(int(s) for s in strides), tuple((int(a), int(b)) for a, b in pads)
    if native_usable(x, w, pads):
        return _onednn.conv(x, w, strides, pads, groups)
    return _onednn.lax_conv(x, w, strides, pads, groups)


def native_usable(x, w, pads) -> bool:
    """Whether `conv2d` runs oneDNN's kernels for these operands (NHWC float32, or bfloat16 where
    `jaxcam._native.bf16_available()`, both operands the same dtype, pads >= 0, library loaded, on the
    CPU, not switched off by `jaxcam.nn.native(False)` / `plain()`)."""
    return (x.ndim == 4 and x.size > 0 and all(p >= 0 for pair in pads for p in pair)
            and _native_ready(x, w, bf16=True))


def _native_ready(*arrays, bf16: bool = False) -> bool:
    """float32 operands (or, with `bf16`, all bfloat16 where oneDNN has native bfloat16 kernels), the
    library loaded, not switched off (`native(False)` / `plain()`)."""
    dtypes = {jnp.dtype(a.dtype) for a in arrays}
    if dtypes == {jnp.dtype(jnp.float32)}:
        extra = True
    elif bf16 and dtypes == {jnp.dtype(jnp.bfloat16)}:
        extra = None  # asked last: needs the library
    else:
        return False
    ok = not is_plain() and native_enabled() and jax.default_backend() == "cpu" and _native.available()
    return ok and (extra or _native.bf16_available())


def _native_layer(x, *others, bf16: bool = False) -> bool:
    """`_native_ready` for a layer's NHWC input inside a training step (`native_for_layers`)."""
    return x.ndim == 4 and x.size > 0 and native_for_layers() and _native_ready(x, *others, bf16=bf16)


# ------------------------------------------------------------------ reductions


def channel_sums(x):
    """Sum of x (..., C) over every axis but the last, as float32 (C,).

    Two stages for XLA:CPU: (N*H, W*C) summed over rows, then (W, C) over rows.
    """
    x = x.astype(jnp.float32)
    if is_plain() or x.ndim < 3:
        return jnp.sum(x, axis=tuple(range(x.ndim - 1)))
    rows = x.reshape(-1, x.shape[-2] * x.shape[-1]).sum(axis=0)
    return rows.reshape(x.shape[-2], x.shape[-1]).sum(axis=0)


# ------------------------------------------------------------------ batch norm


def _stats(x):
    n = x.size // x.shape[-1]
    mean = channel_sums(x) / n
    mean2 = channel_sums(jnp.square(x.astype(jnp.float32))) / n
    return mean, jnp.maximum(0.0, mean2 - jnp.square(mean))


def channel_broadcast(v, like):
    """Per-channel v (C,) broadcast to `like`'s shape (..., W, C), in two stages: (W, C), then (rows, W*C).

    The same values as plain broadcasting; what differs is the transpose autodiff makes of it (a
    parameter's gradient): two-stage sums, as `channel_sums`, instead of one sum over N, H and W, which
    XLA:CPU tiles into a slow reduce-window (eval-mode BatchNorm's scale and shift gradients: 1.8x faster,
    16x112x112x32 in float32 on AMD Zen 4)."""
    if is_plain() or like.ndim < 3:
        return v
    w, c = like.shape[-2], like.shape[-1]
    rows = like.size // (w * c)
    return jnp.broadcast_to(jnp.broadcast_to(v, (w, c)).reshape(w * c), (rows, w * c)).reshape(like.shape)


def _bn_apply(x, mean, var, scale, bias, epsilon):
    mul = lax.rsqrt(var + epsilon) * scale.astype(jnp.float32)
    x32 = x.astype(jnp.float32)
    return ((x32 - channel_broadcast(mean, x)) * channel_broadcast(mul, x)
            + channel_broadcast(bias.astype(jnp.float32), x)).astype(x.dtype)


def batch_norm_eval(x, mean, var, scale, bias, epsilon: float):
    """Inference BatchNorm over x's last axis with given statistics: (x - mean) * rsqrt(var + eps) * scale
    + bias, in float32, returned in x's dtype.

    The value is XLA's (fused with its neighbours). With oneDNN (float32 x, or bfloat16 where
    `jaxcam._native.bf16_available()`), the gradient is one pass of oneDNN's batch normalization backward
    (`_onednn.affine`): x's, scale's and bias's gradients (and the statistics') from one read of the
    cotangent and x, where XLA:CPU recomputed the map's producers in three passes (BENCHMARKS.md: the
    shape sweep's forward+backward rows).
    """
    if x.size > 0 and _native_ready(x, bf16=True):  # _native_ready is False inside plain()
        f32 = jnp.float32
        mul = lax.rsqrt(var.astype(f32) + epsilon) * scale.astype(f32)
        return _onednn.affine(x, mean.astype(f32), mul, bias.astype(f32))
    return _bn_apply(x, mean, var, scale, bias, epsilon)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _bn_train(x, scale, bias, epsilon):
    mean, var = _stats(x)
    return _bn_apply(x, mean, var, scale, bias, epsilon), mean, var


def _bn_train_fwd(x, scale, bias, epsilon):
    mean, var = _stats(x)
    return (_bn_apply(x, mean, var, scale, bias, epsilon), mean, var), (x, mean, var, scale, bias)


def _bn_train_bwd(epsilon, res, cts):
    return isolated(functools.partial(_bn_train_bwd_body, epsilon), res, cts[0])


def _bn_train_bwd_body(epsilon, res, g):
    x, mean, var, scale, bias = res
    g = g.astype(jnp.float32)  # the statistics' cotangents are ignored: see batch_norm_train
    n = x.size // x.shape[-1]
    rstd = lax.rsqrt(var + epsilon)
    xhat = (x.astype(jnp.float32) - mean) * rstd
    sum_g = channel_sums(g)
    sum_gx = channel_sums(g * xhat)
    dx = (scale.astype(jnp.float32) * rstd) * (g - sum_g / n - xhat * (sum_gx / n))
    return dx.astype(x.dtype), sum_gx.astype(scale.dtype), sum_g.astype(bias.dtype)


_bn_train.defvjp(_bn_train_fwd, _bn_train_bwd)


# ---- native (oneDNN through jax.ffi): forward with the batch statistics, backward


def _bn_ffi_fwd(x, scale, bias, epsilon):
    @jax.custom_batching.custom_vmap
    def f(x, scale, bias):
        c = jax.ShapeDtypeStruct((x.shape[-1],), jnp.float32)
        return tuple(jax.ffi.ffi_call("jaxcam_bn_fwd", (jax.ShapeDtypeStruct(x.shape, x.dtype), c, c))(
            x, scale, bias, eps=np.float32(epsilon)))

    @f.def_vmap
    def _(axis_size, in_batched, x, scale, bias):  # statistics per vmapped instance: the XLA formulation
        def one(x, scale, bias):
            mean, var = _stats(x)
            return _bn_apply(x, mean, var, scale, bias, epsilon), mean, var
        out = jax.vmap(one, in_axes=tuple(0 if b else None for b in in_batched))(x, scale, bias)
        return out, (True, True, True)

    return f(x, scale, bias)


def _bn_ffi_bwd(x, g, mean, var, scale, epsilon):
    @jax.custom_batching.custom_vmap
    def f(x, g, mean, var, scale):
        c = jax.ShapeDtypeStruct((x.shape[-1],), jnp.float32)
        return tuple(jax.ffi.ffi_call("jaxcam_bn_bwd", (jax.ShapeDtypeStruct(x.shape, x.dtype), c, c))(
            x, g, mean, var, scale, eps=np.float32(epsilon)))

    @f.def_vmap
    def _(axis_size, in_batched, x, g, mean, var, scale):
        def one(x, g, mean, var, scale):
            return _bn_train_bwd_body(epsilon, (x, mean, var, scale, scale), g)  # bias: only its dtype is read
        out = jax.vmap(one, in_axes=tuple(0 if b else None for b in in_batched))(x, g, mean, var, scale)
        return out, (True, True, True)

    return f(x, g, mean, var, scale)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _bn_native(x, scale, bias, epsilon):
    return _bn_ffi_fwd(x, scale, bias, epsilon)


def _bn_native_fwd(x, scale, bias, epsilon):
    y, mean, var = _bn_ffi_fwd(x, scale, bias, epsilon)
    return (y, mean, var), (x, mean, var, scale)


def _bn_native_bwd(epsilon, res, cts):
    x, mean, var, scale = res
    return _bn_ffi_bwd(x, cts[0], mean, var, scale, epsilon)  # statistics' cotangents ignored (stop_gradient)


_bn_native.defvjp(_bn_native_fwd, _bn_native_bwd)


# Whether training-mode BatchNorm on bfloat16 activations runs oneDNN's bfloat16 primitive (float32
# scale, shift and statistics) instead of the XLA formulation. On the quiet Zen 4 machine of issue 25's
# session 8 oneDNN's made the bfloat16 train step faster (ResNet-18 128 px b32: 370 ms against 396;
# EfficientNet-Lite0: 308 against 336); on the loaded machine (load ~5) it was much slower (1209 against
# 834, 2060 against 1128: its OpenMP barriers wait for descheduled threads). notes/s8-issue-25.md.
# Read at trace time; benchmarks/bf16.py --xla-bn flips it for one side.
BF16_BATCH_NORM_ON_ONEDNN = True


def batch_norm_train(x, scale, bias, epsilon: float) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """Training-mode BatchNorm over all axes but the last: (y, batch mean, batch variance).

    Statistics as flax's BatchNorm (mean and the biased variance, float32; the XLA formulation as
    max(0, E[x^2] - mean^2) like flax, oneDNN's in training steps as E[(x - mean)^2], which loses
    less to cancellation); y = (x - mean) * rsqrt(var + eps) * scale + bias. The returned statistics
    are for the running averages and carry no gradient (stop_gradient); y's gradient is exact.
    """
    if is_plain():
        x32 = x.astype(jnp.float32)
        axes = tuple(range(x.ndim - 1))
        mean = x32.mean(axes)
        var = jnp.maximum(0.0, jnp.square(x32).mean(axes) - jnp.square(mean))
        y = _bn_apply(x, mean, var, scale, bias, epsilon)
        return y, lax.stop_gradient(mean), lax.stop_gradient(var)
    if _native_layer(x, scale, bias):
        y, mean, var = _bn_native(x, scale, bias, float(epsilon))
    elif BF16_BATCH_NORM_ON_ONEDNN and x.dtype == jnp.bfloat16 and _native_layer(x, bf16=True):
        # bfloat16 activations (a compute_dtype=bfloat16 train step): oneDNN's bfloat16 primitive, whose
        # scale, shift, statistics and their gradients are float32 (the casts carry the gradients back)
        y, mean, var = _bn_native(x, scale.astype(jnp.float32), bias.astype(jnp.float32), float(epsilon))
    else:
        y, mean, var = _bn_train(x, scale, bias, float(epsilon))
    return y, lax.stop_gradient(mean), lax.stop_gradient(var)


# ------------------------------------------------------------------ depthwise convolution


def _shift_sum(x, kernel, k: int, stride: int, out_hw):
    """sum_ij x[:, i::s, j::s, :] * kernel[i, j] over the k x k taps; x already padded."""
    oh, ow = out_hw
    out = None
    for i in range(k):
        for j in range(k):
            tap = x[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride, :] * kernel[i, j]
            out = tap if out is None else out + tap
    return out


def _dw_plain(x, kernel, stride, pads):
    return lax.conv_general_dilated(x, kernel[:, :, None, :], (stride, stride), pads,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _dw(x, kernel, stride, pads):
    k = kernel.shape[0]
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    return _shift_sum(xp, kernel, k, stride, _onednn.out_hw(x.shape, (k, k), (stride, stride), pads))


def _dw_fwd(x, kernel, stride, pads):
    return _dw(x, kernel, stride, pads), (x, kernel)


def _dw_bwd(stride, pads, res, g):
    return isolated(functools.partial(_dw_bwd_body, stride, pads), res, g)


def _dw_bwd_body(stride, pads, res, g):
    x, kernel = res
    k = kernel.shape[0]
    oh, ow = g.shape[1:3]
    n, h, w, c = x.shape
    hp, wp = h + pads[0][0] + pads[0][1], w + pads[1][0] + pads[1][1]
    # Cotangent on the stride-1 grid of the padded input: g dilated by the stride.
    if stride > 1:
        gd = jnp.zeros((n, stride * (oh - 1) + 1, stride * (ow - 1) + 1, c), g.dtype).at[:, ::stride, ::stride].set(g)
    else:
        gd = g
    dh, dw_ = gd.shape[1:3]
    # Input gradient: correlate the dilated cotangent (padded by k-1) with the flipped kernel.
    gp = jnp.pad(gd, ((0, 0), (k - 1, hp - dh), (k - 1, wp - dw_), (0, 0)))
    dxp = _shift_sum(gp, kernel[::-1, ::-1], k, 1, (hp, wp))
    dx = dxp[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + w]
    # Kernel gradient: per tap, a channel sum of input window * cotangent.
    xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    g32 = g.astype(jnp.float32)
    taps = [[channel_sums(xp[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride].astype(jnp.float32) * g32)
             for j in range(k)] for i in range(k)]
    dk = jnp.stack([jnp.stack(row) for row in taps])
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


_dw.defvjp(_dw_fwd, _dw_bwd)


def depthwise_conv(x, kernel, stride: int, pads: Sequence[Tuple[int, int]]):
    """Depthwise conv of x (N, H, W, C) with kernel (k, k, C), explicit pads ((top, bottom), (left, right)).

    Equals `lax.conv_general_dilated(x, kernel[:, :, None], (s, s), pads, feature_group_count=C)`.
    """
    pads = tuple((int(a), int(b)) for a, b in pads)
    if is_plain():
        return _dw_plain(x, kernel, stride, pads)
    if native_usable(x, kernel, pads):
        return _onednn.conv(x, kernel[:, :, None, :], (int(stride), int(stride)), pads, x.shape[-1])
    return _dw(x, kernel, int(stride), pads)


# ------------------------------------------------------------------ max pooling


def max_pool(x, window: Sequence[int], strides: Sequence[int], padding: Sequence[Tuple[int, int]] = ((0, 0), (0, 0))):
    """Max pooling of x (N, H, W, C) over `window` with `strides` and explicit (-inf) `padding`, as
    `flax.linen.max_pool(x, window, strides, padding)`; the gradient goes to the first maximum of each
    window (row-major), as XLA's. The value is XLA's reduce_window; for float32 NHWC (bfloat16 where
    `jaxcam._native.bf16_available()`) the gradient is oneDNN's pooling backward (`jaxcam._native`;
    XLA:CPU runs its own as a scatter, ~20x slower)."""
    window, strides = tuple(int(v) for v in window), tuple(int(v) for v in strides)
    pads = tuple((int(a), int(b)) for a, b in padding)
    if (len(window) == 2 and x.ndim == 4 and x.size > 0 and all(p < k for p, k in zip((pads[0][0], pads[1][0]), window))
            and _native_ready(x, bf16=True)):
        return _onednn.max_pool(x, window, strides, pads)
    return _onednn.lax_max_pool(x, window, strides, pads)
