"""ShapleyCAM (Cai et al., ICLR 2025, arXiv:2501.06261): Grad-CAM's weights with a second-order term.

    G   = dy/dA,   H A = (d^2 y / dA^2) A       (a Hessian-vector product: jax.jvp over jax.grad)
    w_k = mean_ij (G - 1/2 H A)_k
    map = ReLU(sum_k w_k A_k)

For a network that is piecewise linear after the layer and a logit target, H A = 0 and ShapleyCAM is
Grad-CAM; the paper pairs it with the ReST target (`jaxcam.targets.ReST`), whose softmax term is not.
"""
from __future__ import annotations

import jax

from jaxcam._src import scores as targets_lib
from jaxcam._src.request import spatial_axes
from jaxcam._src.runner import run
from jaxcam.methods.registry import (
    AUG_SMOOTH, EIGEN_SMOOTH, FINAL_ACTIVATION, NORMALIZE, RESHAPE_TRANSFORM, SCORE, method,
)


def shapley_cam_map(split, x, targets, score: str = "logit"):
    """Weighted activations (N, h, w, C): mean_ij(G - H A / 2) * A."""
    a = split.features(x)
    classes = targets_lib.resolve_classes(targets, split.head(x, a))

    def gradient(act):
        return jax.grad(lambda b: targets_lib.target_score(split.head(x, b), targets, classes, score).sum())(act)

    g, hessian_a = jax.jvp(gradient, (a,), (a,))
    return (g - 0.5 * hessian_a).mean(axis=spatial_axes(a), keepdims=True) * a


SHAPLEY_OPTIONS = (SCORE, FINAL_ACTIVATION, EIGEN_SMOOTH, AUG_SMOOTH, RESHAPE_TRANSFORM, NORMALIZE)


@method(formula='ShapleyCAM: w_k = mean_ij(dy/dA - 1/2 Hessian(y) A)_k; map = ReLU(sum_k w_k A_k). (Cai et al., ICLR 2025 (arXiv:2501.06261))',
        family="gradient", options=SHAPLEY_OPTIONS, aliases=("shapley",),
        paper="Cai et al., ICLR 2025 (arXiv:2501.06261)", pgc="ShapleyCAM")
def shapley_cam(model, x, layer=None, targets=None, *, score="logit", final_activation="relu", eigen_smooth=False,
                aug_smooth=False, reshape_transform=None, normalize=True):
    """ShapleyCAM: w_k = mean_ij(dy/dA - 1/2 Hessian(y) A)_k; map = ReLU(sum_k w_k A_k).

    Args: as `jaxcam.hires_cam`; use ``targets=jaxcam.targets.ReST(c)`` for the paper's target.

    Returns:
      (N, H, W) float32 maps in [0, 1].
    """
    return run(shapley_cam_map, model, x, layer, targets, final_activation, score=score, eigen_smooth=eigen_smooth,
               aug_smooth=aug_smooth, reshape_transform=reshape_transform, normalize=normalize)
