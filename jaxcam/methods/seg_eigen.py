"""Seg-Eigen-CAM (Chung & Ying, Applied Sciences 2025): Eigen-CAM of |dy/dA| * A with a sign rule.

    P   = first principal component of |G| * A       (per location, as Eigen-CAM)
    map = ReLU(P) if |min P| <= |max P| else ReLU(-P)  (the salient side positive)

Made for segmentation outputs (pass e.g. ``targets=jaxcam.targets.SemanticSegmentation(c, mask)``);
works with any target.
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxcam._src.projection import first_component
from jaxcam._src.runner import run
from jaxcam.methods.gradient import activations_and_grads
from jaxcam.methods.registry import AUG_SMOOTH, FINAL_ACTIVATION, NORMALIZE, RESHAPE_TRANSFORM, SCORE, method


def seg_eigen_cam_map(split, x, targets, score: str = "logit"):
    """(N, h, w): first principal component of |G| * A, signed so its largest magnitude is positive."""
    a, g = activations_and_grads(split, x, targets, score)
    p = first_component(jnp.abs(g) * a)  # (N, *spatial), any spatial rank
    space = tuple(range(1, p.ndim))
    flip = jnp.abs(p.min(axis=space, keepdims=True)) > jnp.abs(p.max(axis=space, keepdims=True))
    return jnp.where(flip, -p, p)


SEG_EIGEN_OPTIONS = (SCORE, FINAL_ACTIVATION, AUG_SMOOTH, RESHAPE_TRANSFORM, NORMALIZE)


@method(formula='Seg-Eigen-CAM: first principal component of /dy/dA/ * A, sign-corrected. Args as `jaxcam.hires_cam`. (Chung & Ying, Applied Sciences 2025)',
        family="eigen", options=SEG_EIGEN_OPTIONS, aliases=("seg_eigen",),
        paper="Chung & Ying, Applied Sciences 2025", pgc="SegEigenCAM")
def seg_eigen_cam(model, x, layer=None, targets=None, *, score="logit", final_activation="relu", aug_smooth=False,
                  reshape_transform=None, normalize=True):
    """Seg-Eigen-CAM: first principal component of |dy/dA| * A, sign-corrected. Args as `jaxcam.hires_cam`.

    Returns:
      (N, H, W) float32 maps in [0, 1].
    """
    return run(seg_eigen_cam_map, model, x, layer, targets, final_activation, score=score, aug_smooth=aug_smooth,
               reshape_transform=reshape_transform, normalize=normalize)
