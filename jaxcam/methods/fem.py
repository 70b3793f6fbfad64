"""FEM, the Feature Explanation Method (Fuad et al., IPTA 2020): channels weighted by how often they fire
far above their own mean.

    t_k   = mean_ij A_k + k * std_ij A_k          (the k-sigma threshold of channel k, per image)
    w_k   = mean_ij [A_k,ij > t_k]                (fraction of locations above it)
    map   = ReLU(sum_k w_k A_k)

Class-agnostic, no gradients (`targets` is validated and unused).
"""
from __future__ import annotations

from jaxcam._src.request import spatial_axes
from jaxcam._src.runner import run
from jaxcam.methods.registry import (
    AUG_SMOOTH, EIGEN_SMOOTH, FINAL_ACTIVATION, NORMALIZE, RESHAPE_TRANSFORM, Method, method, Option,
)


def fem_map(split, x, targets, k: float = 2.0):
    """Weighted activations (N, h, w, C): w_k A_k with w_k the fraction of A_k above its k-sigma threshold."""
    a = split.features(x)
    threshold = a.mean(axis=spatial_axes(a), keepdims=True) + k * a.std(axis=spatial_axes(a), keepdims=True)
    weights = (a > threshold).mean(axis=spatial_axes(a), keepdims=True)
    return weights * a


FEM_OPTIONS = (Option("k", 2.0, "threshold in standard deviations above each channel's mean"),
               FINAL_ACTIVATION, EIGEN_SMOOTH, AUG_SMOOTH, RESHAPE_TRANSFORM, NORMALIZE)


@method(formula="FEM: w_k = fraction of channel k's locations above mean + k std; map = ReLU(sum_k w_k A_k). (Fuad et al., IPTA 2020)",
        family="eigen", options=FEM_OPTIONS, aliases=("feature_explanation_method",), paper="Fuad et al., IPTA 2020",
        pgc="FEM")
def fem(model, x, layer=None, targets=None, *, k: float = 2.0, final_activation="relu", eigen_smooth=False,
        aug_smooth=False, reshape_transform=None, normalize=True):
    """FEM: w_k = fraction of channel k's locations above mean + k std; map = ReLU(sum_k w_k A_k).

    Args:
      k: the threshold in standard deviations above each channel's mean (2, as pytorch-grad-cam).
      Others: as `jaxcam.hires_cam` (targets is accepted and unused: FEM is class-agnostic).

    Returns:
      (N, H, W) float32 maps in [0, 1].
    """
    return run(fem_map, model, x, layer, targets, final_activation, k=float(k), eigen_smooth=eigen_smooth,
               aug_smooth=aug_smooth, reshape_transform=reshape_transform, normalize=normalize)
