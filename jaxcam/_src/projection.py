"""Projection of per-location channel vectors on their first principal component (Eigen-CAM).

Used by `eigen_cam`, `eigen_grad_cam` and the ``eigen_smooth`` option of channel-weighting methods.
"""
from __future__ import annotations

import jax.numpy as jnp


def first_component(activations: jnp.ndarray) -> jnp.ndarray:
    """(N, h, w, C) -> (N, h, w): each location's centered C-vector projected on the first principal axis.

    Per image: X = the (h*w, C) matrix with its column means removed, X = U S V^T, map = X v_1 (= s_1 u_1).
    The sign of an SVD is arbitrary; here it is fixed so that sum(v_1) >= 0, i.e. the map correlates
    positively with the centered channel sum (for Eigen-Grad-CAM: with the HiResCAM map). NaNs are
    treated as 0; an all-constant input gives an all-zero map.
    """
    n, h, w, c = activations.shape
    x = jnp.nan_to_num(activations.astype(jnp.float32), nan=0.0, posinf=0.0, neginf=0.0).reshape(n, h * w, c)
    x = x - x.mean(axis=1, keepdims=True)
    _, _, vt = jnp.linalg.svd(x, full_matrices=False)
    v = vt[:, 0, :]  # (N, C)
    v = jnp.where(v.sum(axis=-1, keepdims=True) < 0, -v, v)
    return jnp.einsum("nlc,nc->nl", x, v).reshape(n, h, w)
