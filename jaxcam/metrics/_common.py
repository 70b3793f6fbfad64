"""What every metric shares: input checks, the explained class, and the score of perturbed inputs.

A metric explains one class per image. With ``targets=None`` it is the class the model predicts on
the *unperturbed* image, fixed before any pixel is removed (as pytorch-grad-cam and the papers do).
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from jaxcam._src import scores as targets_lib
from jaxcam._src.request import check_input
from jaxcam._src.kinds import as_model
from jaxcam._src.model import Model


def check_call(model, x, maps, targets):
    """Validate (outside jit); returns the model, x, maps (N, H, W) float32, and targets split into
    (classes (N,) int32 or None, target_fn or None)."""
    model = as_model(model)
    x = check_input(x)
    if not hasattr(maps, "shape"):
        maps = jnp.asarray(maps)
    if maps.ndim == 4 and maps.shape[-1] == 1:
        maps = maps[..., 0]
    if tuple(maps.shape) != tuple(x.shape[:3]):
        raise ValueError(
            f"maps have shape {tuple(maps.shape)} but x has shape {tuple(x.shape)}: pass one map per image "
            f"at input resolution, shape {tuple(x.shape[:3])} (what jaxcam's methods return)"
        )
    num_classes = jax.eval_shape(model, jax.ShapeDtypeStruct(x.shape, x.dtype)).shape[-1]
    targets = targets_lib.normalize_targets(targets, x.shape[0], num_classes)
    if targets is not None and not callable(targets) and targets.ndim == 2:
        raise ValueError(f"a metric scores one map per image against one class per image; got targets of shape "
                         f"{tuple(targets.shape)}: pass ({x.shape[0]},) classes, or score each of the T maps with "
                         "its column targets[:, t]")
    if callable(targets):
        return model, x, jnp.asarray(maps, jnp.float32), None, targets
    return model, x, jnp.asarray(maps, jnp.float32), targets, None


def target_scores(model: Model, x, classes: Optional[jnp.ndarray], target_fn: Optional[Callable], score: str):
    """Score of the explained class on x: (N,). `classes` None and no `target_fn` -> argmax of x."""
    logits = model(x)
    if target_fn is None:
        classes = targets_lib.resolve_classes(classes, logits)
    return targets_lib.target_score(logits, target_fn, classes, score), classes


def scores_along(model: Model, perturb: Callable, num: int, classes, target_fn, score: str):
    """Scores (num, N) of the batches ``perturb(k)`` (N, H, W, C) for k = 0..num-1, one batch at a time
    (``jax.lax.map``), so only one perturbed batch is alive at once."""
    def one(k):
        return targets_lib.target_score(model(perturb(k)), target_fn, classes, score)

    return jax.lax.map(one, jnp.arange(num))
