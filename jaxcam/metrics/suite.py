"""Every metric of one batch in one compiled call: what `scripts/evaluate.py` runs per batch."""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from jaxcam.metrics import _common, curves, road_impute as road_lib
from jaxcam._src.scores import check_score


def all_metrics(
    model, x, maps, targets=None, *, score: str = "softmax", steps: int = 20, baseline: str = "blur",
    percentiles: Sequence[float] = (20, 50, 80), noise: float = 0.01, key=None, tol: float = 1e-5,
    maxiter: int = 1000,
) -> dict:
    """All metrics per image for one batch, jitted as one function.

    Args: as the single metrics (`jaxcam.metrics.deletion_curve`, `jaxcam.metrics.road`);
    ``steps=0`` skips the deletion/insertion curves, an empty `percentiles` skips ROAD (the costly
    part: one linear solve per image, channel and percentile).

    Returns:
      dict of arrays: "target" (N,) the explained classes (absent for callable targets), "score" and
      "explained_score" (N,) (Y and O), "average_drop",
      "increase_in_confidence", "confidence_change" (N,), "deletion" and "insertion" curves
      (N, steps + 1) and "deletion_auc", "insertion_auc" (N,) when steps > 0, and with percentiles "road_morf",
      "road_lerf" (N, P) score changes and "road_combined" (N,).
    """
    model, x, maps, classes, target_fn = _common.check_call(model, x, maps, targets)
    curves.check_baseline(baseline)
    if not isinstance(baseline, str):
        raise ValueError("all_metrics takes a named baseline: one of " + ", ".join(curves.BASELINES))
    steps = 0 if steps == 0 else curves.check_steps(steps)
    ps = road_lib.check_percentiles(percentiles) if len(percentiles) else None
    key = jax.random.key(0) if key is None else key
    return _all_jit(
        model, x, maps, classes, ps, key, target_fn, check_score(score), steps,
        baseline, float(noise), float(tol), int(maxiter),
    )


@functools.partial(jax.jit, static_argnums=(6, 7, 8, 9, 10, 11, 12))
def _all_jit(model, x, maps, classes, percentiles, key, target_fn, score, steps, baseline, noise, tol, maxiter):
    full, classes = _common.target_scores(model, x, classes, target_fn, score)
    explained, _ = _common.target_scores(model, x * maps[..., None], classes, target_fn, score)
    denom = jnp.where(full == 0, 1.0, full)
    out = {
        "target": classes,
        "score": full,
        "explained_score": explained,
        "average_drop": 100.0 * jnp.where(full == 0, 0.0, jnp.maximum(full - explained, 0.0) / denom),
        "increase_in_confidence": 100.0 * (explained > full).astype(jnp.float32),
        "confidence_change": explained - full,
    }
    base = curves.make_baseline(x, baseline) if steps else None
    for name, insert in (("deletion", False), ("insertion", True)) if steps else ():
        out[name] = curves.curve_core(model, x, maps, classes, base, target_fn, steps, score, insert)
        out[name + "_auc"] = curves.auc(out[name])
    if percentiles is not None:
        morf_key, lerf_key = jax.random.split(key)
        for order, k in (("morf", morf_key), ("lerf", lerf_key)):
            out["road_" + order] = road_lib.road_core(
                model, x, maps, classes, target_fn, percentiles, order, score, noise, k, tol, maxiter
            )
        out["road_combined"] = (out["road_lerf"].mean(axis=1) - out["road_morf"].mean(axis=1)) / 2
    return {k: v for k, v in out.items() if v is not None}
