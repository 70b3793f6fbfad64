"""KPCA-CAM (Karmani et al., 2024, arXiv:2410.00267): Eigen-CAM with kernel PCA.

Per image, X = the layer's (h*w, C) location vectors with their channel means removed:

    K    = k(X, X)                         kernel matrix (h*w, h*w), e.g. tanh(gamma X X^T + 1)
    K~   = (I - 1/n) K (I - 1/n)           centered in feature space
    K~ u = lambda u,  lambda the largest   (u's largest-magnitude entry made positive, as scikit-learn)
    map  = ReLU(sqrt(lambda) u)            reshaped to (h, w)

Kernels (scikit-learn's definitions; gamma None = 1 / C):
    linear  X X^T            poly     (gamma X X^T + coef0)^degree
    rbf     exp(-gamma |xi - xj|^2)      sigmoid  tanh(gamma X X^T + coef0)      cosine  normalized X X^T
"""
from __future__ import annotations

from typing import Optional

import jax.numpy as jnp

from jaxcam._src.dtypes import as_map_float
from jaxcam._src.runner import run
from jaxcam.methods.registry import AUG_SMOOTH, FINAL_ACTIVATION, NORMALIZE, RESHAPE_TRANSFORM, method, Option


KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")


def kernel_matrix(x, kernel: str, gamma: float, degree: int = 3, coef0: float = 1.0):
    """(N, n, C) -> (N, n, n) kernel matrices."""
    dot = jnp.einsum("nic,njc->nij", x, x)
    if kernel == "linear":
        return dot
    if kernel == "poly":
        return (gamma * dot + coef0) ** degree
    if kernel == "sigmoid":
        return jnp.tanh(gamma * dot + coef0)
    sq = jnp.einsum("nic,nic->ni", x, x)
    if kernel == "rbf":
        return jnp.exp(-gamma * jnp.maximum(sq[:, :, None] + sq[:, None, :] - 2 * dot, 0.0))
    norm = jnp.sqrt(sq)
    return dot / jnp.maximum(norm[:, :, None] * norm[:, None, :], 1e-30)  # cosine


def kpca_first_component(a, kernel: str = "sigmoid", gamma: Optional[float] = None):
    """(N, h, w, C) -> (N, h, w): each location's score on the first kernel principal component (any spatial rank)."""
    n, *spatial, c = a.shape
    x = jnp.nan_to_num(as_map_float(a)).reshape(n, -1, c)  # float64 stays float64
    x = x - x.mean(axis=1, keepdims=True)
    k = kernel_matrix(x, kernel, 1.0 / c if gamma is None else gamma)
    k = k - k.mean(axis=1, keepdims=True) - k.mean(axis=2, keepdims=True) + k.mean(axis=(1, 2), keepdims=True)
    values, vectors = jnp.linalg.eigh(k)  # ascending
    u, lam = vectors[..., -1], jnp.maximum(values[..., -1], 0.0)
    peak = jnp.take_along_axis(u, jnp.argmax(jnp.abs(u), axis=-1)[:, None], axis=-1)
    u = jnp.where(peak < 0, -u, u)
    return (u * jnp.sqrt(lam)[:, None]).reshape(n, *spatial)


def kpca_cam_map(split, x, targets, kernel: str = "sigmoid", gamma: Optional[float] = None):
    return kpca_first_component(split.features(x), kernel, gamma)


KPCA_OPTIONS = (Option("kernel", "sigmoid", "kernel of the kernel PCA", choices=KERNELS),
                Option("gamma", None, "kernel coefficient (None: 1 / channels)"),
                FINAL_ACTIVATION, AUG_SMOOTH, RESHAPE_TRANSFORM, NORMALIZE)


@method(formula="KPCA-CAM: the layer's first kernel principal component (class-agnostic, no gradients). (Karmani et al., 2024 (arXiv:2410.00267))",
        family="eigen", options=KPCA_OPTIONS, aliases=("kpca",), paper="Karmani et al., 2024 (arXiv:2410.00267)",
        pgc="KPCA_CAM")
def kpca_cam(model, x, layer=None, targets=None, *, kernel: str = "sigmoid", gamma: Optional[float] = None,
             final_activation="relu", aug_smooth=False, reshape_transform=None, normalize=True):
    """KPCA-CAM: the layer's first kernel principal component (class-agnostic, no gradients).

    Args:
      kernel: "sigmoid" (default, as pytorch-grad-cam) | "rbf" | "poly" | "linear" | "cosine".
      gamma: kernel coefficient; None = 1 / channels (scikit-learn's default).
      Others: as `jaxcam.hires_cam` (targets accepted, unused). Costs an (h*w)^2 eigenproblem per image.

    Returns:
      (N, H, W) float32 maps in [0, 1].
    """
    return run(kpca_cam_map, model, x, layer, targets, final_activation, kernel=kernel,
               gamma=None if gamma is None else float(gamma), aug_smooth=aug_smooth,
               reshape_transform=reshape_transform, normalize=normalize)
