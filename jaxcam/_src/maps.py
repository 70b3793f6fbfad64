"""From a raw layer-resolution map to the output: final activation, min-max, resize.

Order (as pytorch-grad-cam): activation -> per-image min-max at layer resolution -> bilinear resize
(half-pixel centers) to the input size -> min-max again (upsampled pixels fall between the layer's
cells, so the resized map's extremes are slightly inside [0, 1]; the second min-max makes every map
span exactly [0, 1]). A constant map becomes zeros, never NaN.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcam._src.dtypes import as_map_float

FINAL_ACTIVATIONS = ("relu", "softmax", "none")


def check_final_activation(final_activation: str) -> str:
    if final_activation not in FINAL_ACTIVATIONS:
        raise ValueError(f"final_activation must be one of {FINAL_ACTIVATIONS}, got {final_activation!r}")
    return final_activation


def activate(cam: jnp.ndarray, final_activation: str) -> jnp.ndarray:
    """relu, or softmax over all locations of each map (N, h, w)."""
    if final_activation == "relu":
        return jax.nn.relu(cam)
    if final_activation == "softmax":
        n = cam.shape[0]
        return jax.nn.softmax(cam.reshape(n, -1), axis=-1).reshape(cam.shape)
    return cam


def minmax(cam: jnp.ndarray) -> jnp.ndarray:
    """Per-image (x - min) / (max - min) over all but the first axis; constant maps -> 0."""
    cam = jnp.nan_to_num(as_map_float(cam), nan=0.0, posinf=0.0, neginf=0.0)
    axes = tuple(range(1, cam.ndim))
    lo = cam.min(axis=axes, keepdims=True)
    span = cam.max(axis=axes, keepdims=True) - lo
    return jnp.where(span > 0, (cam - lo) / jnp.where(span > 0, span, 1.0), 0.0)


def resize(cam: jnp.ndarray, size) -> jnp.ndarray:
    """Bilinear (half-pixel) resize of (N, h, w) maps to (N, *size)."""
    if cam.shape[1:] == tuple(size):
        return cam
    return jax.image.resize(cam, (cam.shape[0], *size), method="bilinear", antialias=False)


def finish(cam: jnp.ndarray, size, final_activation: str = "relu") -> jnp.ndarray:
    """Raw maps (N, h, w) -> (N, H, W) in [0, 1]: float32, or float64 from float64 maps."""
    return minmax(resize(minmax(activate(cam, final_activation)), size))
