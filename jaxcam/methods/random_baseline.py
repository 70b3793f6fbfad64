"""Random-CAM: random channel weights, a sanity baseline (pytorch-grad-cam's RandomCAM).

    w_k ~ Uniform(-1, 1)   (per image and channel, from jax.random.key(seed))
    map = ReLU(sum_k w_k A_k)

A map that looks no better than this one explains nothing (Adebayo et al., NeurIPS 2018).
"""
from __future__ import annotations

import jax

from jaxcam._src.runner import run
from jaxcam.methods.registry import (
    AUG_SMOOTH, EIGEN_SMOOTH, FINAL_ACTIVATION, NORMALIZE, RESHAPE_TRANSFORM, method, Option,
)


def random_weights(seed: int, batch: int, channels: int, spatial_axes: int = 2):
    """The weights w (N, 1, 1, C) ~ Uniform(-1, 1) that `random_cam` uses for `seed` (one 1 per spatial axis)."""
    return jax.random.uniform(jax.random.key(seed), (batch, *(1,) * spatial_axes, channels), minval=-1.0, maxval=1.0)


def random_cam_map(split, x, targets, seed: int = 0):
    a = split.features(x)
    return random_weights(seed, a.shape[0], a.shape[-1], a.ndim - 2) * a


RANDOM_OPTIONS = (Option("seed", 0, "seed of the random channel weights"), FINAL_ACTIVATION, EIGEN_SMOOTH,
                  AUG_SMOOTH, RESHAPE_TRANSFORM, NORMALIZE)


@method(formula='Random-CAM: map = ReLU(sum_k w_k A_k), w ~ Uniform(-1, 1) seeded by `seed` (same seed, same map). (sanity baseline (Adebayo et al., NeurIPS 2018))',
        family="random", options=RANDOM_OPTIONS, aliases=("random",),
        paper="sanity baseline (Adebayo et al., NeurIPS 2018)", pgc="RandomCAM")
def random_cam(model, x, layer=None, targets=None, *, seed: int = 0, final_activation="relu", eigen_smooth=False,
               aug_smooth=False, reshape_transform=None, normalize=True):
    """Random-CAM: map = ReLU(sum_k w_k A_k), w ~ Uniform(-1, 1) seeded by `seed` (same seed, same map).

    Args: as `jaxcam.hires_cam` (targets accepted, unused), plus `seed` (an int).

    Returns:
      (N, H, W) float32 maps in [0, 1].
    """
    return run(random_cam_map, model, x, layer, targets, final_activation, seed=int(seed), eigen_smooth=eigen_smooth,
               aug_smooth=aug_smooth, reshape_transform=reshape_transform, normalize=normalize)
