"""Gradient methods: one forward and one backward through the head (``jax.vjp``).

Notation: A = layer activations (N, h, w, C), y = target score per image, G = dy/dA (N, h, w, C).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcam._src import targets as targets_lib
from jaxcam._src.runner import run
from jaxcam._src.split import Split


def activations_and_grads(split: Split, x, targets, score: str = "logit"):
    """A (N, h, w, C) and G = dy/dA (N, h, w, C), with one forward and one backward of the head.

    Each image's score depends only on its own activations (eval-mode BatchNorm), so the gradient of
    the summed score gives every image its own dy/dA.
    """
    activations = split.features(x)
    logits, pullback = jax.vjp(lambda a: split.head(x, a), activations)
    classes = targets_lib.resolve_classes(targets, logits)
    d_logits = jax.grad(lambda z: targets_lib.target_score(z, targets, classes, score).sum())(logits)
    (grads,) = pullback(d_logits)
    return activations, grads


def grad_cam_map(split: Split, x, targets, score: str = "logit"):
    """Grad-CAM: w_k = mean_ij G_k,ij ; map = sum_k w_k A_k (ReLU applied by the runner)."""
    a, g = activations_and_grads(split, x, targets, score)
    weights = g.mean(axis=(1, 2))  # (N, C)
    return jnp.einsum("nc,nhwc->nhw", weights, a)


def grad_cam(model, x, layer=None, targets=None, *, score="logit", final_activation="relu"):
    """Grad-CAM (Selvaraju et al. 2017).

    Args:
      model: a `jaxcam.Model` (or a ``(flax_module, variables)`` pair).
      x: float input batch (N, H, W, C), normalized as the model expects.
      layer: module path, e.g. ``"layer4"``; default: the model's usual CAM layer.
      targets: None (argmax) | int | ints (N,) | callable on the scores (N, K) -> (N,).
      score: "logit" (default) | "softmax" | "sigmoid": the space y is taken in.
      final_activation: "relu" (default) | "softmax" (over locations) | "none".

    Returns:
      (N, H, W) float32 maps in [0, 1] at input resolution.

    Example:
      >>> import jax, jaxcam
      >>> model = jaxcam.models.resnet18(num_classes=10)
      >>> x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
      >>> jaxcam.grad_cam(model, x, layer="layer4").shape
      (2, 64, 64)
    """
    return run(grad_cam_map, model, x, layer, targets, final_activation, score=targets_lib.check_score(score))
