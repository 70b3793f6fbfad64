"""RefineCAM (pytorch-grad-cam 1.5.7's meta-method, arXiv:2605.14641): several layers' maps multiplied.

    M_l  = base(x, layer=l)          each in [0, 1] at input size (any registered method, Grad-CAM++ by default)
    map  = minmax(prod_l M_l)

A location stays bright only if every layer agrees: deep layers' coarse localization denoises the fine
but noisy maps of early layers.
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxcam._src import maps
from jaxcam.methods.registry import get, method, Option


@method(formula="RefineCAM: the product of the base method's maps at each layer of `layer`, min-maxed. (pytorch-grad-cam 1.5.7 RefineCAM (arXiv:2605.14641))",
        family="composite",
        options=(Option("base", "grad_cam_pp", "the method whose per-layer maps are multiplied"),),
        aliases=("refine",), paper="pytorch-grad-cam 1.5.7 RefineCAM (arXiv:2605.14641)", pgc="RefineCAM")
def refine_cam(model, x, layer=None, targets=None, *, base="grad_cam_pp", **options):
    """RefineCAM: the product of the base method's maps at each layer of `layer`, min-maxed.

    Args:
      layer: a list of layer paths, e.g. ``["layer2", "layer3", "layer4"]`` (one path: the base map itself).
      base: a registered method name (default "grad_cam_pp", as pytorch-grad-cam) or a method function.
      **options: passed to the base method (score, eigen_smooth, ...).

    Returns:
      (N, H, W) (or (N, T, H, W) for targets (N, T)) float32 maps in [0, 1].
    """
    method = base if callable(base) and not isinstance(base, str) else get(base)
    layers = [layer] if layer is None or isinstance(layer, str) else list(layer)
    if not layers:
        raise ValueError("refine_cam needs at least one layer: pass layer=[...]")
    product = jnp.prod(jnp.stack([method(model, x, one, targets, **options) for one in layers]), axis=0)
    spatial = jnp.ndim(x) - 2  # the maps' spatial axes: 1-D signals, 2-D images, 3-D volumes
    return maps.minmax(product.reshape(-1, *product.shape[-spatial:])).reshape(product.shape)
