"""Eigen-CAM (Muhammad & Yeasin 2020) and Eigen-Grad-CAM: first principal component of the layer.

    eigen_cam       map = projection of A's per-location channel vectors on their first principal axis
    eigen_grad_cam  the same for dy/dA * A (class-specific)

The sign of a principal axis is arbitrary; jaxcam fixes it (see `jaxcam._src.projection`), where
pytorch-grad-cam keeps whatever LAPACK returns.
"""
from __future__ import annotations

from jaxcam._src.projection import first_component
from jaxcam._src.runner import run
from jaxcam.methods.gradient import activations_and_grads
from jaxcam.methods.registry import AUG_SMOOTH, FINAL_ACTIVATION, NORMALIZE, RESHAPE_TRANSFORM, SCORE, method


def eigen_cam_map(split, x, targets):
    """(N, h, w): first principal component of A (class-agnostic: `targets` is not used)."""
    return first_component(split.features(x))


def eigen_grad_cam_map(split, x, targets, score="logit"):
    """(N, h, w): first principal component of dy/dA * A."""
    a, g = activations_and_grads(split, x, targets, score)
    return first_component(g * a)


EIGEN_OPTIONS = (FINAL_ACTIVATION, AUG_SMOOTH, RESHAPE_TRANSFORM, NORMALIZE)
EIGEN_GRAD_OPTIONS = (SCORE,) + EIGEN_OPTIONS


@method(formula='first principal component of A, deterministic sign', family="eigen", options=EIGEN_OPTIONS,
        aliases=("eigen",), paper="Muhammad & Yeasin, IJCNN 2020", pgc="EigenCAM")
def eigen_cam(model, x, layer=None, targets=None, *, final_activation="relu", aug_smooth=False,
              reshape_transform=None, normalize=True):
    """Eigen-CAM: the layer's first principal component, ReLU, min-max (no gradients, no class).

    Args:
      model, x, layer, final_activation, aug_smooth, reshape_transform: as `jaxcam.hires_cam`.
      targets: accepted for a uniform signature and validated; Eigen-CAM does not depend on it.

    Returns:
      (N, H, W) float32 maps in [0, 1].

    Example:
      >>> import jax, jaxcam
      >>> model = jaxcam.models.resnet18(num_classes=10)
      >>> jaxcam.eigen_cam(model, jax.numpy.ones((1, 64, 64, 3))).shape
      (1, 64, 64)
    """
    return run(eigen_cam_map, model, x, layer, targets, final_activation, aug_smooth=aug_smooth,
               reshape_transform=reshape_transform, normalize=normalize)


@method(formula='first principal component of G ⊙ A', family="eigen", options=EIGEN_GRAD_OPTIONS,
        aliases=("eigen_grad",), paper="pytorch-grad-cam's Eigen-Grad-CAM", pgc="EigenGradCAM")
def eigen_grad_cam(model, x, layer=None, targets=None, *, score="logit", final_activation="relu",
                   aug_smooth=False, reshape_transform=None, normalize=True):
    """Eigen-Grad-CAM: first principal component of dy/dA * A. Arguments as `jaxcam.hires_cam`.

    Returns:
      (N, H, W) float32 maps in [0, 1].
    """
    return run(eigen_grad_cam_map, model, x, layer, targets, final_activation, score=score,
               aug_smooth=aug_smooth, reshape_transform=reshape_transform, normalize=normalize)
