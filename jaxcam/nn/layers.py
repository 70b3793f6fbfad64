"""Flax modules over `jaxcam.nn.ops`, variable names and shapes as flax's own (checkpoints and
torch conversions are unchanged): `Conv`, `BatchNorm`, `DepthwiseConv`; and `max_pool`."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcam.nn import ops
from jaxcam.nn import _switch


class Conv(nn.Conv):
    """flax's Conv (same fields, variables and values) over `ops.conv_general_dilated`: float32
    convolutions (bfloat16 ones too on CPUs with native bfloat16 kernels) run oneDNN's kernels
    (`jaxcam._native`), others lax's (see `jaxcam.nn.native`)."""

    conv_general_dilated: Any = ops.conv_general_dilated


class BatchNorm(nn.Module):
    """flax.linen.BatchNorm over the last axis (same variables: params scale/bias, batch_stats
    mean/var; same statistics and running-average update), trained through `ops.batch_norm_train`,
    evaluated through `ops.batch_norm_eval`."""

    use_running_average: bool = False
    momentum: float = 0.99
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        if self.use_running_average:
            return ops.batch_norm_eval(x, ra_mean.value, ra_var.value, scale, bias, self.epsilon)
        with _switch.training(self.is_mutable_collection("batch_stats")):
            y, mean, var = ops.batch_norm_train(x, scale, bias, self.epsilon)
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y


class DepthwiseConv(nn.Module):
    """Bias-free depthwise conv, explicit `pads` or TensorFlow SAME padding (pads=None).

    Kernel (k, k, 1, C) as `nn.Conv(feature_group_count=C)`; computed by `ops.depthwise_conv`
    (oneDNN's grouped convolution; without it shifted multiply-adds with a custom VJP; the grouped
    lax convolution under `jaxcam.nn.plain()`).
    """

    kernel_size: int
    stride: int = 1
    pads: tuple = None

    @nn.compact
    def __call__(self, x):
        k, s = self.kernel_size, self.stride
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, x.shape[-1]), jnp.float32)
        pads = self.pads or tuple(same_pads(n, k, s) for n in x.shape[1:3])
        return ops.depthwise_conv(x, kernel[:, :, 0].astype(x.dtype), s, pads)


def max_pool(x, window, strides, padding=((0, 0), (0, 0)), *, training: bool = None):
    """`flax.linen.max_pool(x, window, strides, padding)` (explicit padding pairs) over `ops.max_pool`.
    The kernel (oneDNN or XLA's reduce_window) is chosen by `jaxcam.nn`, not by the caller; `training`
    is accepted for old callers and ignored when None."""
    if training is None:
        return ops.max_pool(x, window, strides, padding)
    with _switch.training(training):
        return ops.max_pool(x, window, strides, padding)


def materialize(x):
    """`x`, computed once into its own buffer (an XLA:CPU fusion boundary): consumers read the buffer
    instead of recomputing x's producers inside each of their fusions. Same value, same gradient."""
    return ops.isolated(lambda t: t + 0.0, x)


def same_pads(size: int, kernel: int, stride: int):
    """TensorFlow SAME padding (before, after) of one spatial dimension."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2
