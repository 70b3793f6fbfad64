"""Deletion and insertion curves (Petsiuk et al., RISE, BMVC 2018) and their area under the curve.

Pixels are ranked by the map, most salient first (ties: lower row-major index first). At step
k = 0..steps, the first round(k * H * W / steps) pixels in that order are
  deletion:   replaced by the baseline in x          (score should fall fast: lower AUC is better)
  insertion:  copied from x into the baseline image  (score should rise fast: higher AUC is better)
and the explained class's score (softmax probability by default) is recorded. The curve is
(N, steps + 1) over the removed/inserted fraction k / steps; `auc` is its trapezoidal area on [0, 1].

Baselines (in model-input space): "blur" (Gaussian blur of x, RISE's insertion start), "zeros"
(0 = the normalization mean), "mean" (each image's per-channel mean), or an array broadcastable to x.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam.metrics import _common
from jaxcam._src.scores import check_score

BASELINES = ("blur", "zeros", "mean")


def gaussian_blur(x, sigma: float = 5.0, radius: int = 11):
    """Separable Gaussian blur of x (N, H, W, C), renormalized at the borders (no dark frame)."""
    taps = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel = jnp.asarray(kernel / kernel.sum())

    def along(z, axis):
        z = jnp.moveaxis(z, axis, -1)
        n = z.shape[-1]
        padded = jnp.pad(z, [(0, 0)] * (z.ndim - 1) + [(radius, radius)])
        out = sum(kernel[i] * padded[..., i : i + n] for i in range(2 * radius + 1))
        return jnp.moveaxis(out, -1, axis)

    def blur(z):
        return along(along(z, 1), 2)

    ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
    return blur(x) / blur(ones)


def check_baseline(baseline):
    if isinstance(baseline, str) and baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES} or an array, got {baseline!r}")
    return baseline


def make_baseline(x, baseline):
    """The baseline image for x (N, H, W, C): a name in `BASELINES` or an array broadcastable to x."""
    if isinstance(baseline, str):
        if baseline == "blur":
            return gaussian_blur(x)
        if baseline == "zeros":
            return jnp.zeros_like(x)
        if baseline == "mean":
            return jnp.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)
        raise ValueError(f"baseline must be one of {BASELINES} or an array, got {baseline!r}")
    return jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)


def saliency_rank(maps):
    """Rank of each pixel (N, H, W), 0 = most salient; ties broken by row-major index."""
    n = maps.shape[0]
    order = jnp.argsort(-maps.reshape(n, -1), axis=1, stable=True)
    rank = jnp.argsort(order, axis=1, stable=True)
    return rank.reshape(maps.shape)


def step_counts(num_pixels: int, steps: int):
    """Pixels removed/inserted at each step k = 0..steps: round(k * num_pixels / steps)."""
    return jnp.asarray(np.round(np.arange(steps + 1) * num_pixels / steps).astype(np.int32))


def check_steps(steps):
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    return int(steps)


def _curve(model, x, maps, targets, steps, baseline, score, insert):
    model, x, maps, classes, target_fn = _common.check_call(model, x, maps, targets)
    steps, score = check_steps(steps), check_score(score)
    if isinstance(baseline, str):
        check_baseline(baseline)
        return _curve_jit(model, x, maps, classes, None, target_fn, steps, baseline, score, insert)
    return _curve_jit(model, x, maps, classes, make_baseline(x, baseline), target_fn, steps, "array", score, insert)


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8, 9))
def _curve_jit(model, x, maps, classes, base, target_fn, steps, baseline, score, insert):
    base = make_baseline(x, baseline) if base is None else base
    return curve_core(model, x, maps, classes, base, target_fn, steps, score, insert)


def curve_core(model, x, maps, classes, base, target_fn, steps: int, score: str, insert: bool):
    """Deletion (insert=False) or insertion curve (N, steps + 1); traced inside jit."""
    if classes is None and target_fn is None:
        classes = jnp.argmax(model(x), axis=-1).astype(jnp.int32)
    rank = saliency_rank(maps)
    counts = step_counts(maps.shape[1] * maps.shape[2], steps)

    def perturbed(k):
        changed = (rank < counts[k])[..., None]
        return jnp.where(changed, x, base) if insert else jnp.where(changed, base, x)

    return _common.scores_along(model, perturbed, steps + 1, classes, target_fn, score).T


def deletion_curve(model, x, maps, targets=None, *, steps: int = 20, baseline="blur", score: str = "softmax"):
    """Score as the most salient pixels are replaced by `baseline`: (N, steps + 1). Lower AUC is better.

    Args:
      model: a `jaxcam.Model` (or a ``(flax_module, variables)`` pair).
      x: model input (N, H, W, C), normalized as the model expects.
      maps: saliency maps (N, H, W) (any real values; only their order matters).
      targets: None (the class predicted on x) | int | ints (N,) | callable on the scores.
      steps: the curve has steps + 1 points at removed fractions 0, 1/steps, ..., 1.
      baseline: "blur" (default) | "zeros" | "mean" | an array broadcastable to x.
      score: "softmax" (default) | "logit" | "sigmoid".

    Example:
      >>> import jax, jaxcam
      >>> model = jaxcam.models.resnet18(num_classes=10)
      >>> x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
      >>> maps = jax.random.uniform(jax.random.key(1), (2, 32, 32))
      >>> curve = jaxcam.metrics.deletion_curve(model, x, maps, steps=8)
      >>> curve.shape, jaxcam.metrics.auc(curve).shape
      ((2, 9), (2,))
    """
    return _curve(model, x, maps, targets, steps, baseline, score, insert=False)


def insertion_curve(model, x, maps, targets=None, *, steps: int = 20, baseline="blur", score: str = "softmax"):
    """Score as the most salient pixels of x are pasted into `baseline`: (N, steps + 1). Higher AUC is
    better. Arguments as `deletion_curve`."""
    return _curve(model, x, maps, targets, steps, baseline, score, insert=True)


def auc(curve):
    """Trapezoidal area under curves (..., steps + 1) sampled evenly on [0, 1]: (...)."""
    curve = jnp.asarray(curve)
    steps = curve.shape[-1] - 1
    if steps < 1:
        raise ValueError(f"a curve needs at least 2 points, got shape {curve.shape}")
    return (curve.sum(axis=-1) - 0.5 * (curve[..., 0] + curve[..., -1])) / steps
