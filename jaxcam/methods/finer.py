"""Finer-CAM (Zhang et al., CVPR 2025, arXiv:2501.11309): explain a class against its look-alikes.

    c        the explained class (argmax or the target)
    S        the classes ranked `comparisons` (default 1, 2, 3) by |z_j - z_c|: the most similar ones
    y        = sum_{j in S} p_j (z_c - alpha z_j) / (sum_{j in S} p_j + 1e-9),   p = softmax(z)
    map      = the base gradient rule (Grad-CAM by default) applied to dy/dA

alpha = 0 gives the base method on z_c; alpha = 1 keeps only what separates c from its neighbours.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcam._src.runner import run
from jaxcam.methods.gradient import RULES
from jaxcam.methods.registry import (
    AUG_SMOOTH, EIGEN_SMOOTH, FINAL_ACTIVATION, NORMALIZE, RESHAPE_TRANSFORM, method, Option,
)


def finer_score(logits, classes, comparisons: tuple, alpha: float):
    """The comparison-weighted score (N,) of `classes` against their most similar classes."""
    main = jnp.take_along_axis(logits, classes[:, None], axis=-1)
    distance = jnp.abs(logits - jax.lax.stop_gradient(main))
    distance = jnp.where(jnp.arange(logits.shape[-1]) == classes[:, None], -1.0, distance)  # c ranks first
    order = jnp.argsort(jax.lax.stop_gradient(distance), axis=-1, stable=True)
    others = order[:, jnp.asarray([j for j in comparisons if j < logits.shape[-1]])]
    p = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), others, axis=-1)
    z = jnp.take_along_axis(logits, others, axis=-1)
    return (p * (main - alpha * z)).sum(-1) / (p.sum(-1) + 1e-9)


def finer_cam_map(split, x, targets, alpha: float = 1.0, comparisons: tuple = (1, 2, 3), base: str = "grad_cam"):
    a = split.features(x)
    logits, pullback = jax.vjp(lambda b: split.head(x, b), a)
    classes = jnp.argmax(logits, axis=-1) if targets is None else targets
    d_logits = jax.grad(lambda z: finer_score(z, classes, comparisons, alpha).sum())(logits)
    (g,) = pullback(d_logits)
    return RULES[base](a, g)


FINER_OPTIONS = (Option("alpha", 1.0, "comparison strength"),
                 Option("comparisons", (1, 2, 3), "similarity ranks of the compared classes", cli=False),
                 Option("base", "grad_cam", "gradient rule of the base method", choices=tuple(RULES)),
                 FINAL_ACTIVATION, EIGEN_SMOOTH, AUG_SMOOTH, RESHAPE_TRANSFORM, NORMALIZE)


@method(formula='Finer-CAM: a gradient map of the class minus its most similar classes (weighted by their probability). (Zhang et al., CVPR 2025 (arXiv:2501.11309))',
        family="gradient", options=FINER_OPTIONS, aliases=("finer",),
        paper="Zhang et al., CVPR 2025 (arXiv:2501.11309)", pgc="FinerCAM")
def finer_cam(model, x, layer=None, targets=None, *, alpha: float = 1.0, comparisons=(1, 2, 3), base="grad_cam",
              final_activation="relu", eigen_smooth=False, aug_smooth=False, reshape_transform=None, normalize=True):
    """Finer-CAM: a gradient map of the class minus its most similar classes (weighted by their probability).

    Args:
      targets: None (argmax) | int | ints (N,) | ints (N, T): the explained class(es) c.
      alpha: comparison strength (0: the base method on z_c; 1: default).
      comparisons: ranks (1 = most similar class) of the compared classes; (1, 2, 3) by default.
      base: the gradient rule: "grad_cam" (default) | "hires_cam" | "grad_cam_pp" | "xgrad_cam" | "layer_cam" | ...
      Others: as `jaxcam.hires_cam`.

    Returns:
      (N, H, W) float32 maps in [0, 1].
    """
    if callable(targets):
        raise TypeError("finer_cam builds its own target: pass targets=None, an int, or one int per image")
    comparisons = tuple(int(j) for j in comparisons)
    if not comparisons or min(comparisons) < 1:
        raise ValueError(f"comparisons must be ranks >= 1 (1 = most similar class), got {comparisons!r}")
    return run(finer_cam_map, model, x, layer, targets, final_activation, alpha=float(alpha), comparisons=comparisons,
               base=base, eigen_smooth=eigen_smooth, aug_smooth=aug_smooth, reshape_transform=reshape_transform,
               normalize=normalize)
