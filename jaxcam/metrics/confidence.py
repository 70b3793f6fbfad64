"""Confidence change on the explanation map E = x * map (Chattopadhyay et al., Grad-CAM++, WACV 2018).

    Y = score of the explained class on x,   O = score on x * map (map in [0, 1], broadcast over channels)
    confidence_change       O - Y                          (pytorch-grad-cam's CamMultImageConfidenceChange)
    average_drop            100 * max(0, Y - O) / Y        per image; its mean over a data set is "Average Drop %"
    increase_in_confidence  100 * [O > Y]                  per image; its mean is "% Increase in Confidence"

x is the model input (normalized), as pytorch-grad-cam multiplies its input tensor: where the map is 0
the input becomes 0, i.e. the normalization mean (a grey-ish pixel), not black.
Scores default to softmax probabilities ("softmax"), the confidence the papers use.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxcam.metrics import _common
from jaxcam._src.scores import check_score


def explanation_scores(model, x, maps, targets=None, score: str = "softmax"):
    """(Y, O): the explained class's score on x and on x * maps, each (N,).

    Args:
      model: a `jaxcam.Model` (or a ``(flax_module, variables)`` pair).
      x: model input (N, H, W, C), normalized as the model expects.
      maps: saliency maps (N, H, W) in [0, 1] (what jaxcam's methods return).
      targets: None (the class predicted on x) | int | ints (N,) | callable on the scores (N, K) -> (N,).
      score: "softmax" (default) | "logit" | "sigmoid".
    """
    model, x, maps, classes, target_fn = _common.check_call(model, x, maps, targets)
    return _explanation_scores(model, x, maps, classes, target_fn, check_score(score))


@functools.partial(jax.jit, static_argnums=(4, 5))
def _explanation_scores(model, x, maps, classes, target_fn, score):
    full, classes = _common.target_scores(model, x, classes, target_fn, score)
    explained, _ = _common.target_scores(model, x * maps[..., None], classes, target_fn, score)
    return full, explained


def confidence_change(model, x, maps, targets=None, score: str = "softmax"):
    """O - Y per image (N,): the score on x * maps minus the score on x. Arguments as `explanation_scores`.

    Equals pytorch-grad-cam's ``CamMultImageConfidenceChange()(x, maps, targets, model)`` with its
    ``ClassifierOutputSoftmaxTarget`` (score="softmax") or ``ClassifierOutputTarget`` (score="logit").

    Example:
      >>> import jax, jax.numpy as jnp, jaxcam
      >>> model = jaxcam.models.resnet18(num_classes=10)
      >>> x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
      >>> jaxcam.metrics.confidence_change(model, x, jnp.ones((2, 64, 64))).tolist()
      [0.0, 0.0]
    """
    full, explained = explanation_scores(model, x, maps, targets, score)
    return explained - full


def average_drop(model, x, maps, targets=None, score: str = "softmax"):
    """Drop in confidence, in %, per image (N,): 100 * max(0, Y - O) / Y. Lower is better.

    The paper's "Average Drop %" of a data set is the mean of these values over its images.
    Arguments as `explanation_scores`; Y == 0 gives 0.
    """
    full, explained = explanation_scores(model, x, maps, targets, score)
    drop = jnp.maximum(full - explained, 0.0) / jnp.where(full == 0, 1.0, full)
    return 100.0 * jnp.where(full == 0, 0.0, drop)


def increase_in_confidence(model, x, maps, targets=None, score: str = "softmax"):
    """100 where the score rose on x * maps (O > Y), else 0, per image (N,). Higher is better.

    The paper's "% Increase in Confidence" of a data set is the mean over its images.
    Arguments as `explanation_scores`.
    """
    full, explained = explanation_scores(model, x, maps, targets, score)
    return 100.0 * (explained > full).astype(jnp.float32)
