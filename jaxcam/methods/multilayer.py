"""Several layers at once: one map per layer and a fused map (mean of the normalized maps).

Every method also accepts ``layer=[...]`` directly and then returns the fused map only.
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxcam._src.runner import fuse


def multi_layer(method, model, x, layers, **kwargs):
    """Maps of `method` at each of `layers` and their fusion.

    Args:
      method: a jaxcam method, e.g. `jaxcam.grad_cam`.
      model, x: as the method.
      layers: a non-empty list of layer paths, e.g. ``["layer3", "layer4"]``.
      **kwargs: the method's other arguments (targets, score, ...).

    Returns:
      (fused (N, H, W), per_layer (L, N, H, W)), float32 in [0, 1]; fused = minmax(mean over layers).

    Example:
      >>> import jax, jaxcam
      >>> model = jaxcam.models.resnet18(num_classes=10)
      >>> x = jax.numpy.ones((1, 64, 64, 3))
      >>> fused, each = jaxcam.multi_layer(jaxcam.grad_cam, model, x, ["layer3", "layer4"])
      >>> fused.shape, each.shape
      ((1, 64, 64), (2, 1, 64, 64))
    """
    if isinstance(layers, str) or not layers:
        raise ValueError(f"layers must be a non-empty list of layer paths, got {layers!r}")
    per_layer = jnp.stack([method(model, x, layer=layer, **kwargs) for layer in layers])
    return fuse(per_layer), per_layer
