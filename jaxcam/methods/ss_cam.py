"""SS-CAM (Wang et al., 2020, arXiv:2006.14255), as torchcam 0.5 defines it: Score-CAM with noisy masks.

    M_k    = U((A_k - min A_k) / (max A_k + 1e-8))       per channel, bilinear (half-pixel) to input size
    s_k    = 1/S sum_s [ y(x * (M_k + d_s,k)) - y(x) ],   d_s,k ~ N(0, std^2) per pixel
    w      = softmax_k(s)
    map    = ReLU(sum_k w_k A_k)

The noise is seeded: d_s,k = std * normal(fold_in(fold_in(key(seed), s), k)), see `mask_noise`.
Costs S full forwards per channel (C * S in total), `chunk_size` channels at a time.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcam._src import scores as targets_lib
from jaxcam._src.runner import run
from jaxcam.methods.registry import AUG_SMOOTH, EIGEN_SMOOTH, FINAL_ACTIVATION, NORMALIZE, SCORE, method, Option


NORM_EPS = 1e-8  # torchcam's


def channel_masks(a, size):
    """(N, h, w, C) -> (N, H, W, C): each channel min-maxed (max + 1e-8) then upsampled (half-pixel).

    Any spatial rank: (N, l, C) -> (N, L, C) linear, (N, d, h, w, C) -> (N, D, H, W, C) trilinear."""
    space = tuple(range(1, a.ndim - 1))
    a = a - a.min(axis=space, keepdims=True)
    a = a / (a.max(axis=space, keepdims=True) + NORM_EPS)
    return jax.image.resize(a, (a.shape[0], *size, a.shape[-1]), method="bilinear", antialias=False)


def channel_weighted(weights, a):
    """Weights (N, C) times activations (N, ..., C) of any spatial rank."""
    return weights.reshape(weights.shape[0], *(1,) * (a.ndim - 2), -1) * a


def mask_noise(seed: int, sample, channel, shape, std: float):
    """The noise d_s,k (shape (N, H, W)) added to mask k in sample s."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), sample), channel)
    return std * jax.random.normal(key, shape)


def ss_cam_map(split, x, targets, score="logit", num_samples=35, std=2.0, seed=0, chunk_size=16):
    a = split.features(x)
    logits = split.model(x)
    classes = targets_lib.resolve_classes(targets, logits)
    base = targets_lib.target_score(logits, targets, classes, score)
    masks = channel_masks(a, x.shape[1:-1])

    def channel_score(k):
        m = jnp.take(masks, k, axis=-1)

        def sample_score(s):
            noisy = m + mask_noise(seed, s, k, m.shape, std)
            return targets_lib.target_score(split.model(x * noisy[..., None]), targets, classes, score) - base

        return jax.lax.map(sample_score, jnp.arange(num_samples)).mean(axis=0)

    channels = a.shape[-1]
    scores = jax.lax.map(channel_score, jnp.arange(channels), batch_size=min(chunk_size, channels))  # (C, N)
    return channel_weighted(jax.nn.softmax(scores.T, axis=-1), a)


SS_OPTIONS = (SCORE, FINAL_ACTIVATION,
              Option("num_samples", 35, "noisy samples per channel", positive=True),
              Option("std", 2.0, "standard deviation of the mask noise"),
              Option("seed", 0, "seed of the noise"),
              Option("chunk_size", 16, "channels per vmapped chunk of forwards", positive=True),
              EIGEN_SMOOTH, AUG_SMOOTH, NORMALIZE)


@method(formula="SS-CAM: Score-CAM weights averaged over `num_samples` noisy copies of each mask (torchcam 0.5's form). (Wang et al., 2020 (arXiv:2006.14255); torchcam 0.5's SSCAM)",
        family="score", options=SS_OPTIONS, aliases=("sscam", "smoothed_score_cam"),
        paper="Wang et al., 2020 (arXiv:2006.14255); torchcam 0.5's SSCAM")
def ss_cam(model, x, layer=None, targets=None, *, num_samples: int = 35, std: float = 2.0, seed: int = 0,
           score="logit", final_activation="relu", chunk_size: int = 16, eigen_smooth=False, aug_smooth=False,
           normalize=True):
    """SS-CAM: Score-CAM weights averaged over `num_samples` noisy copies of each mask (torchcam 0.5's form).

    Args:
      num_samples: noisy samples per channel (35, torchcam's default); std: the noise's standard deviation (2.0);
      seed: seed of the noise. chunk_size: channels per vmapped chunk. Others as `jaxcam.hires_cam`.

    Returns:
      (N, H, W) float32 maps in [0, 1].
    """
    return run(ss_cam_map, model, x, layer, targets, final_activation, score=score, num_samples=int(num_samples),
               std=float(std), seed=int(seed), chunk_size=int(chunk_size), eigen_smooth=eigen_smooth,
               aug_smooth=aug_smooth, normalize=normalize)
