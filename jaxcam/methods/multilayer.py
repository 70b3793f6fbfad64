"""Several layers at once: one map per layer and a fused map.

Every method accepts ``layer=[...]`` and then returns the fused map; `multi_layer` also returns the
per-layer maps. Fusion as pytorch-grad-cam: each layer's map is activated, min-maxed and resized to
the input size, the layers are averaged, and the mean is min-maxed.
"""
from __future__ import annotations

__all__ = ['multi_layer']  # public helpers beyond the registered methods

from jaxcam._src.runner import collect_layer_maps


def multi_layer(method, model, x, layers, **kwargs):
    """Maps of `method` at each of `layers` and their fusion, from one call of `method`.

    Args:
      method: a jaxcam method, e.g. `jaxcam.grad_cam`.
      model, x: as the method.
      layers: a non-empty list of layer paths, e.g. ``["layer3", "layer4"]``.
      **kwargs: the method's other arguments (targets, score, ...).

    Returns:
      (fused (N, H, W), per_layer (L, N, H, W)), float32 in [0, 1]; per_layer[l] equals
      ``method(model, x, layer=layers[l], **kwargs)``.

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
    with collect_layer_maps() as collected:
        fused = method(model, x, layer=list(layers), **kwargs)
    if len(collected) != 1:
        raise ValueError(f"{getattr(method, '__name__', method)} is not a jaxcam method taking layer=[...]")
    return fused, collected[0]
