"""Which score a map explains: score space (logit | softmax | sigmoid) and targets.

`targets` (user facing):
  None          -> the argmax class of each image
  int           -> that class for every image
  ints (N,)     -> one class per image
  ints (N, T)   -> T classes per image: maps (N, T, H, W)
  callable      -> ``f(output) -> (N,)``: any differentiable function of the model's whole output
                   (scores (N, K), a segmentation (N, H, W, K), any pytree), taken in the chosen
                   score space; must be hashable (a plain function or a `jaxcam.targets` object is).
  [callables]   -> one per image (pytorch-grad-cam's ``targets=[ClassifierOutputTarget(3), ...]``):
                   image i explains ``f_i(output)[i]``; a list of `jaxcam.targets.ClassLogit` is
                   the same as its ints.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam.targets import ClassLogit, PerImage

SCORE_SPACES = ("logit", "softmax", "sigmoid")

Targets = Union[None, int, np.ndarray, jnp.ndarray, Callable]


def to_score_space(logits: jnp.ndarray, score: str) -> jnp.ndarray:
    """Class scores (N, K) (or any output pytree, over its last axis) in the requested space."""
    if score == "logit":
        return logits
    if score == "softmax":
        return jax.tree_util.tree_map(lambda z: jax.nn.softmax(z, axis=-1), logits)
    if score == "sigmoid":
        return jax.tree_util.tree_map(jax.nn.sigmoid, logits)
    raise ValueError(f"score must be one of {SCORE_SPACES}, got {score!r}")


def check_score(score: str) -> str:
    if score not in SCORE_SPACES:
        raise ValueError(f"score must be one of {SCORE_SPACES}, got {score!r}")
    return score


def per_image_callables(targets: Targets, batch: Optional[int] = None):
    """A list/tuple of callables, one per image -> one callable (`jaxcam.targets.PerImage`) or, for
    `ClassLogit` targets only, their ints (N,); anything else is returned unchanged."""
    if not isinstance(targets, (list, tuple)) or not targets or not all(callable(t) for t in targets):
        return targets
    if batch is not None and len(targets) != batch:
        raise ValueError(f"targets is a list of {len(targets)} callables; pass one per image ({batch})")
    if all(type(t) is ClassLogit for t in targets):
        return np.asarray([t.category for t in targets], np.int32)
    return PerImage(targets)


def normalize_targets(targets: Targets, batch: int, num_classes: int):
    """Validate `targets` (outside jit); returns None, a callable, or an int32 array (N,) or (N, T)."""
    targets = per_image_callables(targets, batch)
    if targets is None or callable(targets):
        return targets
    if isinstance(targets, jax.core.Tracer):  # under jit: (N, T) kept, a scalar or (N,) broadcast to (N,)
        traced = jnp.asarray(targets, jnp.int32)
        return traced if traced.ndim == 2 and traced.shape[0] == batch else jnp.broadcast_to(traced, (batch,))
    arr = np.asarray(targets)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"targets must be None, an int, one int per image, a callable or one callable per image; "
                        f"got dtype {arr.dtype}")
    if arr.ndim == 0:
        arr = np.full((batch,), int(arr))
    if arr.shape[:1] != (batch,) or arr.ndim > 2 or 0 in arr.shape:
        raise ValueError(
            f"targets has shape {arr.shape}; expected one class per image ({batch},) or T classes per image ({batch}, T)"
        )
    if num_classes is None:
        raise ValueError("the model's output is not class scores (N, K): pass a callable target, e.g. from jaxcam.targets")
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
        raise ValueError(
            f"target class {int(arr[bad][0])} is out of range: the model has {num_classes} classes (0..{num_classes - 1})"
        )
    return jnp.asarray(arr, jnp.int32)


def resolve_classes(targets, logits: jnp.ndarray) -> Optional[jnp.ndarray]:
    """Class index per image (N,) or None for callable targets."""
    if callable(targets):
        return None
    if targets is None:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return targets


def target_score(logits: jnp.ndarray, targets, classes: Optional[jnp.ndarray], score: str) -> jnp.ndarray:
    """The explained score per image (N,) from logits (N, K)."""
    scores = to_score_space(logits, score)
    if classes is None:
        return targets(scores)
    return jnp.take_along_axis(scores, classes[:, None], axis=-1)[:, 0]
