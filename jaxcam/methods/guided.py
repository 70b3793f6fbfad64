"""Guided backpropagation (Springenberg et al. 2015) and guided Grad-CAM, batched.

Guided backprop is the input gradient of the target score with every ReLU's backward pass replaced
by ``g * (x > 0) * (g > 0)`` (gradient flows only where the input and the incoming gradient are
positive), as pytorch-grad-cam's GuidedBackpropReLU.

How the ReLUs are swapped: Flax models call ReLU as a FUNCTION (``nn.relu(x)``, ``jax.nn.relu(x)``),
not as a module, so ``nn.intercept_methods`` cannot see them. While the guided computation is
traced, `guided_relus` rebinds every module-level name ``relu`` that refers to ``jax.nn.relu``
(``jax.nn.relu``, ``flax.linen.relu``, and a user module's ``from jax.nn import relu``) to a
``jax.custom_vjp`` ReLU with the guided backward rule, and restores them afterwards. The forward
is unchanged. Tracing happens once per input shape (``jax.jit``); the compiled function keeps the
guided rule. Limits: ReLUs written as ``jnp.maximum(x, 0)`` are not swapped (an error says so
when none was found), and other threads tracing ReLU code at the same moment would see the swap.
"""
from __future__ import annotations

import contextlib
import functools
import sys

import jax
import jax.numpy as jnp

from jaxcam._src import targets as targets_lib
from jaxcam._src.request import check_input
from jaxcam.methods.gradient import grad_cam
from jaxcam.methods.registry import SCORE, Method, register
from jaxcam.model import as_model

_RELU = jax.nn.relu


@jax.custom_vjp
def guided_relu(x):
    """ReLU forward; guided backward: g * (x > 0) * (g > 0)."""
    return jnp.maximum(x, 0)


def _guided_relu_fwd(x):
    return jnp.maximum(x, 0), x


def _guided_relu_bwd(x, g):
    return (jnp.where((x > 0) & (g > 0), g, 0.0),)


guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)


@contextlib.contextmanager
def guided_relus():
    """Within the block, every module-level ``relu`` bound to jax.nn.relu is a counting guided ReLU.

    Yields a dict whose "calls" entry counts the ReLU calls traced in the block.
    """
    count = {"calls": 0}

    def relu(x):
        count["calls"] += 1
        return guided_relu(x)

    patched = [m for name, m in list(sys.modules.items())
               if not name.startswith("jax._src") and getattr(m, "relu", None) is _RELU]
    for module in patched:
        module.relu = relu
    try:
        yield count
    finally:
        for module in patched:
            module.relu = _RELU


@functools.partial(jax.jit, static_argnums=(3, 4))
def _guided_jit(model, x, classes, target_fn, score):
    targets = target_fn if target_fn is not None else classes

    def total(inputs):
        logits = model(inputs)
        chosen = targets_lib.resolve_classes(targets, jax.lax.stop_gradient(logits))
        return targets_lib.target_score(logits, targets, chosen, score).sum()

    with guided_relus() as count:
        grads = jax.grad(total)(x)
    if count["calls"] == 0:
        raise ValueError(
            "guided backprop found no ReLU to guide: the model must call nn.relu / jax.nn.relu "
            "(a ReLU written as jnp.maximum(x, 0) cannot be swapped)"
        )
    return grads


def guided_backprop(model, x, targets=None, *, score="logit"):
    """Guided backpropagation: d y / d x with guided ReLUs, for a whole batch at once.

    Args:
      model: a `jaxcam.Model`; its ReLUs must be calls of nn.relu / jax.nn.relu.
      x: float input batch (N, H, W, C).
      targets: None (argmax) | int | ints (N,) | callable on the scores (N, K) -> (N,).
      score: "logit" (default) | "softmax" | "sigmoid".

    Returns:
      (N, H, W, C) float32 raw input gradients (not normalized; see `jaxcam.deprocess_gradients`).

    Example:
      >>> import jax, jaxcam
      >>> model = jaxcam.models.resnet18(num_classes=10)
      >>> jaxcam.guided_backprop(model, jax.numpy.ones((2, 64, 64, 3))).shape
      (2, 64, 64, 3)
    """
    model = as_model(model)
    x = check_input(x)
    out = jax.eval_shape(model, x)
    if len(out.shape) != 2:
        raise ValueError(f"the model returns shape {out.shape}; guided backprop needs class scores (N, num_classes)")
    targets = targets_lib.normalize_targets(targets, x.shape[0], out.shape[-1])
    target_fn = targets if callable(targets) else None
    return _guided_jit(model, x, None if target_fn else targets, target_fn, targets_lib.check_score(score))


def guided_grad_cam(model, x, layer=None, targets=None, *, score="logit"):
    """Guided Grad-CAM: guided backprop times the Grad-CAM map (N, H, W, C), batched.

    Arguments as `jaxcam.grad_cam`. Returns raw (N, H, W, C) float32 (see `jaxcam.deprocess_gradients`).
    """
    cam = grad_cam(model, x, layer, targets, score=score)
    return guided_backprop(model, x, targets, score=score) * cam[..., None]


def deprocess_gradients(g) -> jnp.ndarray:
    """Input gradients (N, H, W, C) -> displayable [0, 1] images: per image, mean 0.5, std 0.1, clipped.

    The usual visualization of guided backprop (pytorch-grad-cam's deprocess_image, as floats).
    """
    g = jnp.asarray(g, jnp.float32)
    axes = tuple(range(1, g.ndim))
    g = g - g.mean(axis=axes, keepdims=True)
    g = g / (g.std(axis=axes, keepdims=True) + 1e-5)
    return jnp.clip(g * 0.1 + 0.5, 0.0, 1.0)


register(Method("guided_backprop", guided_backprop, family="guided", output="attribution", options=(SCORE,),
                aliases=("guided", "guided_backpropagation"), paper="Springenberg et al., ICLR-W 2015",
                pgc="GuidedBackpropReLUModel", takes_layer=False))
register(Method("guided_grad_cam", guided_grad_cam, family="composite", output="attribution", options=(SCORE,),
                aliases=("guided_gradcam",), paper="Selvaraju et al., ICCV 2017 (Guided Grad-CAM)", pgc=None))
