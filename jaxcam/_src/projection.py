"""Projection of per-location channel vectors on their first principal component (Eigen-CAM).

Used by `eigen_cam`, `eigen_grad_cam` and the ``eigen_smooth`` option of channel-weighting methods.
"""
from __future__ import annotations

import math

import jax.numpy as jnp

from jaxcam._src.dtypes import as_map_float


def first_component(activations: jnp.ndarray) -> jnp.ndarray:
    """(N, h, w, C) -> (N, h, w): each location's centered C-vector projected on the first principal axis.

    Per image: X = the (h*w, C) matrix with its column means removed, X = U S V^T, map = X v_1 (= s_1 u_1).
    v_1 is found by a symmetric eigensolver on the smaller of X X^T (h*w square) and X^T X (C square):
    for ResNet-50's layer4 at 224 px that is a 49 x 49 problem instead of an SVD of 49 x 2048, which
    XLA:CPU's LAPACK SVD ran 25-150x slower.
    The sign of an SVD is arbitrary; here it is fixed so that sum(v_1) >= 0, i.e. the map correlates
    positively with the centered channel sum (for Eigen-Grad-CAM: with the HiResCAM map). NaNs are
    treated as 0; an all-constant input gives an all-zero map.
    """
    n, *spatial, c = activations.shape  # any number of spatial axes
    locations = math.prod(spatial)
    x = jnp.nan_to_num(as_map_float(activations), nan=0.0, posinf=0.0, neginf=0.0).reshape(n, locations, c)
    x = x - x.mean(axis=1, keepdims=True)
    if locations < c:
        _, u = jnp.linalg.eigh(jnp.einsum("nlc,nmc->nlm", x, x))  # ascending eigenvalues
        v = jnp.einsum("nlc,nl->nc", x, u[..., -1])  # X^T u_1 = s_1 v_1
        v = v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-30)
    else:
        v = jnp.linalg.eigh(jnp.einsum("nlc,nld->ncd", x, x))[1][..., -1]  # (N, C)
    v = jnp.where(v.sum(axis=-1, keepdims=True) < 0, -v, v)
    return jnp.einsum("nlc,nc->nl", x, v).reshape(n, *spatial)
