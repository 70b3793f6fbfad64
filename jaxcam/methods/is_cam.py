"""IS-CAM (Naidu et al., 2020, arXiv:2010.03023), as torchcam 0.5 defines it: Score-CAM integrated along
a path of mask scales.

    M_k    = U((A_k - min A_k) / (max A_k + 1e-8))      (as SS-CAM)
    c_i    = sum_{j=1..i} j / S                          i = 1..S
    s_k    = 1/S sum_i [ y(c_i * (x * M_k)) - y(x) ]
    w      = softmax_k(s);   map = ReLU(sum_k w_k A_k)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcam._src import scores as targets_lib
from jaxcam._src.runner import run
from jaxcam.methods.registry import AUG_SMOOTH, EIGEN_SMOOTH, FINAL_ACTIVATION, NORMALIZE, SCORE, method, Option
from jaxcam.methods.ss_cam import channel_masks, channel_weighted


def path_coefficients(num_samples: int) -> jnp.ndarray:
    """c_i = sum_{j<=i} j / S for i = 1..S."""
    return jnp.cumsum(jnp.arange(1, num_samples + 1, dtype=jnp.float32) / num_samples)


def is_cam_map(split, x, targets, score="logit", num_samples=10, chunk_size=16):
    a = split.features(x)
    logits = split.model(x)
    classes = targets_lib.resolve_classes(targets, logits)
    base = targets_lib.target_score(logits, targets, classes, score)
    masks = channel_masks(a, x.shape[1:-1])
    coefficients = path_coefficients(num_samples)

    def channel_score(k):
        masked = x * jnp.take(masks, k, axis=-1)[..., None]

        def step(c):
            return targets_lib.target_score(split.model(c * masked), targets, classes, score) - base

        return jax.lax.map(step, coefficients).mean(axis=0)

    channels = a.shape[-1]
    scores = jax.lax.map(channel_score, jnp.arange(channels), batch_size=min(chunk_size, channels))  # (C, N)
    return channel_weighted(jax.nn.softmax(scores.T, axis=-1), a)


IS_OPTIONS = (SCORE, FINAL_ACTIVATION,
              Option("num_samples", 10, "points on the integration path", positive=True),
              Option("chunk_size", 16, "channels per vmapped chunk of forwards", positive=True),
              EIGEN_SMOOTH, AUG_SMOOTH, NORMALIZE)


@method(formula="IS-CAM: Score-CAM weights averaged over `num_samples` scales of each masked input (torchcam 0.5's form). (Naidu et al., 2020 (arXiv:2010.03023); torchcam 0.5's ISCAM)",
        family="score", options=IS_OPTIONS, aliases=("iscam", "integrated_score_cam"),
        paper="Naidu et al., 2020 (arXiv:2010.03023); torchcam 0.5's ISCAM")
def is_cam(model, x, layer=None, targets=None, *, num_samples: int = 10, score="logit", final_activation="relu",
           chunk_size: int = 16, eigen_smooth=False, aug_smooth=False, normalize=True):
    """IS-CAM: Score-CAM weights averaged over `num_samples` scales of each masked input (torchcam 0.5's form).

    Args:
      num_samples: points on the integration path (10, torchcam's default).
      chunk_size: channels per vmapped chunk. Others as `jaxcam.hires_cam`.

    Returns:
      (N, H, W) float32 maps in [0, 1].
    """
    return run(is_cam_map, model, x, layer, targets, final_activation, score=score, num_samples=int(num_samples),
               chunk_size=int(chunk_size), eigen_smooth=eigen_smooth, aug_smooth=aug_smooth, normalize=normalize)
