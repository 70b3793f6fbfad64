"""ARCC (pytorch-grad-cam 1.5.7, arXiv:2605.14641): the harmonic mean of three map qualities.

    complexity(M) = mean_ij |M_ij|                                   (lower: a sparser map)
    coherency(M)  = (pearson(method(x * M), M) + 1) / 2              (the map survives masking by itself)
    road'(M)      = clip(2 * road_combined(M), 0, 1)                 (ROAD, MoRF and LeRF, Rong et al. 2022)
    ARCC          = 3 / (1 / coherency + 1 / (1 - complexity) + 1 / road')     (each + 1e-8)

The remove-most / least-relevant-first perturbation curves themselves are `jaxcam.metrics.road`
(order="morf" | "lerf": one score change per percentile). All per image (N,); every model call is
jitted and batched.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from jaxcam.metrics import _common
from jaxcam.metrics.road_impute import road_combined

EPS = 1e-8  # pytorch-grad-cam's
ARCC_PERCENTILES = (20, 40, 60, 80)  # pytorch-grad-cam's ARCC default


@jax.jit
def complexity(maps) -> jnp.ndarray:
    """Mean absolute value of each map (N, H, W) -> (N,): 0 for an all-zero map, 1 for all ones."""
    return jnp.abs(maps).reshape(maps.shape[0], -1).mean(axis=1)


@jax.jit
def pearson(a, b) -> jnp.ndarray:
    """Per-image Pearson correlation of two map batches (N, H, W) -> (N,), as pytorch-grad-cam (+1e-8)."""
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    n = a.shape[1] - 1
    cov = (a * b).sum(axis=1) / n
    return cov / (jnp.sqrt((a * a).sum(axis=1) / n) * jnp.sqrt((b * b).sum(axis=1) / n) + EPS)


def coherency(method, model, x, maps, targets=None, **method_options) -> jnp.ndarray:
    """(pearson(method(model, x * maps), maps) + 1) / 2 per image (N,); `method` a jaxcam method or registry name.

    `targets`: as the method's (None: its argmax on the masked input, as pytorch-grad-cam).
    """
    from jaxcam.methods.registry import get  # late: jaxcam.methods imports jaxcam.metrics' users

    method = get(method) if isinstance(method, str) else method
    model, x, maps, _, _ = _common.check_call(model, x, maps, None if targets is None else targets)
    remapped = method(model, x * maps[..., None], targets=targets, **method_options)
    return (pearson(remapped, maps) + 1.0) / 2.0


def arcc(method, model, x, maps, targets=None, *, percentiles: Sequence[float] = ARCC_PERCENTILES,
         score: str = "softmax", method_options=None, **road_options) -> jnp.ndarray:
    """ARCC per image (N,): harmonic mean of coherency, 1 - complexity and clipped ROAD. Higher is better.

    Args:
      method: the method that made `maps` (a jaxcam method or registry name): coherency re-runs it.
      model, x, maps, targets: as `jaxcam.metrics.road`; maps (N, H, W) in [0, 1].
      percentiles, score, **road_options: passed to `jaxcam.metrics.road_combined` (noise, key, tol, ...).
      method_options: dict of the method's options (layer, ...).
    """
    method_options = dict(method_options or {})
    comp = complexity(jnp.asarray(maps, jnp.float32))
    coh = coherency(method, model, x, maps, targets, **method_options)
    road = jnp.clip(2.0 * road_combined(model, x, maps, targets, percentiles=percentiles, score=score,
                                        **road_options), 0.0, 1.0)
    return 3.0 / (1.0 / (coh + EPS) + 1.0 / ((1.0 - comp) + EPS) + 1.0 / (road + EPS))
