"""ROAD: RemOve And Debias (Rong et al., ICML 2022) with the noisy linear imputer.

Removed pixels are not set to a constant (which leaks the mask's shape to the model) but replaced by
the solution of a linear system: each removed pixel equals the weighted mean of its 8 neighbours
(weight 1/6 edge-adjacent, 1/12 diagonal; neighbours outside the image are dropped and the weights
renormalized), known pixels fixed, then Gaussian noise of std `noise` is added to the removed pixels.
The system is a masked graph Laplacian (symmetric positive definite when every removed region touches
a kept pixel); it is solved per image and channel with Jacobi-preconditioned conjugate gradients on
the 3x3 stencil, all on device. With no kept pixel at all the imputed values are 0 (+ noise).

Percentiles follow pytorch-grad-cam (`ROADMostRelevantFirst(percentile)`):
  "morf" at p: remove the pixels where map >= the p-th percentile of the map (the top ~(100 - p)%).
  "lerf" at p: remove the pixels where 1 - map >= the p-th percentile of 1 - map (the bottom ~(100 - p)%).
The returned value is the score after imputation minus the score on x (pytorch-grad-cam's numbers).
A faithful map makes the MoRF change very negative and the LeRF change near 0.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._src import scores as targets_lib
from jaxcam.metrics import _common

ORDERS = ("morf", "lerf")
_NEIGHBOURS = np.array([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]], np.float32)


def _neighbour_sum(z):
    """sum_j w_j z[i + offset_j] over the 8 neighbours, for one map z (H, W), zero outside."""
    h, w = z.shape
    padded = jnp.pad(z, 1)
    return sum(
        float(_NEIGHBOURS[a, b]) * padded[a : a + h, b : b + w]
        for a in range(3) for b in range(3) if _NEIGHBOURS[a, b]
    )


def _harmonic_fill(values, keep, tol: float, maxiter: int):
    """values (H, W) with the pixels where keep == 0 replaced by the weighted mean of their neighbours."""
    unknown = 1.0 - keep
    weight_sum = _neighbour_sum(jnp.ones_like(keep))  # the in-image neighbours' weights, 1 inside

    def operator(y):  # masked Laplacian on the unknowns; identity on kept pixels (where y stays 0)
        return unknown * (weight_sum * y - _neighbour_sum(unknown * y)) + keep * y

    diag = jnp.where(unknown > 0, weight_sum, 1.0)
    rhs = unknown * _neighbour_sum(keep * values)
    fill, _ = jax.scipy.sparse.linalg.cg(operator, rhs, M=lambda r: r / diag, tol=tol, maxiter=maxiter)
    return keep * values + unknown * fill


def noisy_linear_impute(x, keep, *, noise: float = 0.01, key=None, tol: float = 1e-5, maxiter: int = 1000):
    """Fill the pixels of x where `keep` is False with the noisy linear imputation.

    Args:
      x: images (N, H, W, C) (model input space).
      keep: (N, H, W) bool or {0, 1}: True/1 = keep the pixel, False/0 = impute it.
      noise: std of the Gaussian noise added to imputed pixels (0 for none).
      key: a `jax.random` key for the noise (default: key 0).
      tol, maxiter: conjugate-gradient relative tolerance and iteration cap. The default 1e-5 leaves
        imputation errors far below `noise`; 1e-7 matches a direct sparse solve to ~1e-5.

    Returns:
      (N, H, W, C) images, equal to x where keep.
    """
    keep = jnp.asarray(keep, jnp.float32)
    n, h, w, c = x.shape
    planes = jnp.moveaxis(x, -1, 1).reshape(n * c, h, w)
    keeps = jnp.repeat(keep, c, axis=0)
    filled = jax.vmap(lambda v, k: _harmonic_fill(v, k, tol, maxiter))(planes, keeps)
    filled = jnp.moveaxis(filled.reshape(n, c, h, w), 1, -1)
    if noise:
        key = jax.random.key(0) if key is None else key
        filled = filled + noise * (1.0 - keep)[..., None] * jax.random.normal(key, x.shape, x.dtype)
    return filled


def road_keep_mask(maps, percentile, order: str):
    """Pixels kept (N, H, W) bool at one percentile: see the module docstring."""
    ranked = maps if order == "morf" else 1.0 - maps
    n = maps.shape[0]
    threshold = jnp.percentile(ranked.reshape(n, -1), percentile, axis=1)
    return ranked < threshold[:, None, None]


def road_core(model, x, maps, classes, target_fn, percentiles, order, score, noise, key, tol, maxiter):
    """Score change (N, P) after ROAD imputation at each percentile; traced inside jit."""
    full, classes = _common.target_scores(model, x, classes, target_fn, score)
    keys = jax.random.split(key, percentiles.shape[0])

    def one(args):
        p, k = args
        imputed = noisy_linear_impute(
            x, road_keep_mask(maps, p, order), noise=noise, key=k, tol=tol, maxiter=maxiter
        )
        return targets_lib.target_score(model(imputed), target_fn, classes, score)

    return (jax.lax.map(one, (percentiles, keys)) - full[None]).T


@functools.partial(jax.jit, static_argnums=(5, 6, 7, 8, 10, 11))
def _road_jit(model, x, maps, classes, percentiles, target_fn, order, score, noise, key, tol, maxiter):
    return road_core(model, x, maps, classes, target_fn, percentiles, order, score, noise, key, tol, maxiter)


def check_percentiles(percentiles) -> jnp.ndarray:
    p = np.atleast_1d(np.asarray(percentiles, np.float32))
    if p.ndim != 1 or p.size == 0 or (p < 0).any() or (p > 100).any():
        raise ValueError(f"percentiles must be numbers in [0, 100], got {percentiles!r}")
    return jnp.asarray(p)


def check_order(order: str) -> str:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS} (most / least relevant first), got {order!r}")
    return order


def road(
    model, x, maps, targets=None, *, percentiles: Sequence[float] = (10, 20, 30, 40, 50, 60, 70, 80, 90),
    order: str = "morf", score: str = "softmax", noise: float = 0.01, key=None, tol: float = 1e-5,
    maxiter: int = 1000,
):
    """ROAD score change per image and percentile: (N, P) = score(imputed) - score(x).

    Args:
      model, x, maps, targets, score: as `jaxcam.metrics.deletion_curve`.
      percentiles: thresholds in [0, 100] (pytorch-grad-cam's meaning, see the module docstring).
      order: "morf" (remove most relevant first) | "lerf" (least relevant first).
      noise, key, tol, maxiter: as `noisy_linear_impute`.

    Example:
      >>> import jax, jaxcam
      >>> model = jaxcam.models.resnet18(num_classes=10)
      >>> x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
      >>> maps = jax.random.uniform(jax.random.key(1), (2, 32, 32))
      >>> jaxcam.metrics.road(model, x, maps, percentiles=(20, 80)).shape
      (2, 2)
    """
    model, x, maps, classes, target_fn = _common.check_call(model, x, maps, targets)
    key = jax.random.key(0) if key is None else key
    return _road_jit(
        model, x, maps, classes, check_percentiles(percentiles), target_fn, check_order(order),
        targets_lib.check_score(score), float(noise), key, float(tol), int(maxiter),
    )


def road_combined(model, x, maps, targets=None, *, percentiles=(10, 20, 30, 40, 50, 60, 70, 80, 90), **options):
    """(mean LeRF change - mean MoRF change) / 2 over the percentiles, per image (N,). Higher is better.

    pytorch-grad-cam's ``ROADCombined``. Options as `road`.
    """
    lerf = road(model, x, maps, targets, percentiles=percentiles, order="lerf", **options).mean(axis=1)
    morf = road(model, x, maps, targets, percentiles=percentiles, order="morf", **options).mean(axis=1)
    return (lerf - morf) / 2
