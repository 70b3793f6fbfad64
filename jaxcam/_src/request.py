"""Validation shared by every method: input, layer, targets, options -> a checked `Request`.

Runs in Python before anything is traced, so each mistake gets a message that says what to do.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._src.kinds import as_model
from jaxcam._src.model import Model
from jaxcam._src import split as split_lib
from jaxcam._src import scores as targets_lib
from jaxcam._src.arrays import on_device

_CHANNEL_COUNTS = (1, 3, 4)


@dataclasses.dataclass(frozen=True)
class Request:
    model: Model
    x: jnp.ndarray
    layer: split_lib.LayerPath
    targets: Any  # None | callable | int32 (N,)
    num_classes: int
    activation_shape: tuple


def check_input(x) -> jnp.ndarray:
    """x must be a float channels-last batch with 1-3 spatial axes: (N, L, C), (N, H, W, C) or
    (N, D, H, W, C), N >= 1. A 3-D x is a batch of 1-D signals (checked against the model later)."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    if x.ndim not in (3, 4, 5):
        raise ValueError(
            f"x has {x.ndim} dims (shape {tuple(x.shape)}): expected a channels-last batch (N, H, W, C) "
            "(or (N, L, C) for signals, (N, D, H, W, C) for volumes)"
        )
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch (N = 0): pass at least one image")
    if x.ndim == 4 and x.shape[-1] not in _CHANNEL_COUNTS and x.shape[1] in _CHANNEL_COUNTS:
        raise ValueError(
            f"x has shape {tuple(x.shape)}, which looks like NCHW (channels first). jaxcam expects NHWC: "
            "use x.transpose(0, 2, 3, 1)"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"x has dtype {x.dtype}: expected floats. Convert and normalize first, e.g. model.preprocess(images)"
        )
    return x if isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer) else on_device(np.asarray(x))


def make_request(model, x, layer: Optional[str], targets, reshape_transform=None) -> Request:
    """Check everything a method needs; raise clear errors for bad input.

    With `reshape_transform` (token models), `activation_shape` is the shape after the transform.
    """
    model = as_model(model)
    x = check_input(x)
    try:
        shapes = split_lib.layer_shapes(model, x.shape, x.dtype)
    except Exception as err:  # shape errors from the module itself
        if x.ndim == 3:
            raise ValueError(
                f"x has shape {tuple(x.shape)}: expected a batch (N, H, W, C). For one image use x[None] "
                f"(a 3-D x is read as 1-D signals (N, L, C), which this model rejects: {err})"
            ) from err
        raise ValueError(
            f"the model cannot be applied to x of shape {tuple(x.shape)} (expected NHWC input): {err}"
        ) from err
    if layer is None:
        layer = model.info.default_layer or automatic_layer(model, shapes, x.ndim)
    path = split_lib.check_layer(model, layer, x.shape)
    out_shape = shapes.get("")  # None when the model returns a pytree
    targets = targets_lib.per_image_callables(targets, x.shape[0])
    if (out_shape is None or len(out_shape) != 2) and not callable(targets):
        raise ValueError(
            f"the model returns {'shape ' + str(out_shape) if out_shape else 'a pytree'}; class targets need scores "
            "(N, num_classes): pass a callable target, e.g. jaxcam.targets.SemanticSegmentation(category, mask)"
        )
    num_classes = out_shape[-1] if out_shape else None
    targets = targets_lib.normalize_targets(targets, x.shape[0], num_classes)
    activation_shape = shapes["/".join(path)]
    if reshape_transform is not None:
        activation_shape = transformed_shape(reshape_transform, activation_shape, layer)
    return Request(model, x, path, targets, num_classes, activation_shape)


def automatic_layer(model: Model, shapes: dict, input_ndim: int = 4) -> str:
    """The last layer whose output has the input's spatial rank ((N, l, C), (N, h, w, C) or (N, d, h, w, C))
    and more than one location; the choice is announced once."""
    spatial = [p for p, s in shapes.items() if p and len(s) == input_ndim and math.prod(s[1:-1]) > 1]
    if not spatial:
        want = {3: "(N, l, C) with l > 1", 4: "(N, h, w, C) with h * w > 1", 5: "(N, d, h, w, C) with d * h * w > 1"}
        raise ValueError(
            f"no layer given, the model has no default layer and no layer outputs {want[input_ndim]}: "
            "pass layer=..., one of " + ", ".join(p for p in shapes if p)
        )
    warnings.warn(f"jaxcam: {model.info.name} has no default layer; using layer={spatial[-1]!r} "
                  "(the last layer with a spatial output). Pass layer=... to choose.", stacklevel=4)
    return spatial[-1]


def transformed_shape(reshape_transform, shape, layer) -> tuple:
    """Shape of ``reshape_transform(activations)`` for activations of `shape` (abstract run)."""
    if not callable(reshape_transform):
        raise TypeError(f"reshape_transform must be a function (N, tokens, C) -> (N, h, w, C), got {reshape_transform!r}")
    try:
        out = jax.eval_shape(reshape_transform, jax.ShapeDtypeStruct(shape, jnp.float32))
    except Exception as err:
        raise ValueError(
            f"reshape_transform failed on the output of layer {layer!r} (shape {shape}): {err}"
        ) from err
    if not hasattr(out, "shape"):
        raise ValueError("reshape_transform must return one array (N, h, w, C)")
    return tuple(out.shape)


def spatial_activation_shape(req: Request) -> tuple:
    """Methods that need a (N, h, w, C) layer output (or (N, l, C) / (N, d, h, w, C) for 1-D / 3-D
    inputs: the layer has as many spatial axes as x) check it here."""
    if len(req.activation_shape) != req.x.ndim:
        want = {3: "(N, l, C)", 4: "(N, h, w, C)", 5: "(N, d, h, w, C)"}[req.x.ndim]
        raise ValueError(
            f"layer {'/'.join(req.layer)} outputs shape {req.activation_shape}, not {want} as the input "
            f"{tuple(req.x.shape)} needs; for token models pass reshape_transform=..."
        )
    return req.activation_shape


def spatial_axes(a) -> tuple:
    """The spatial axes of channels-last activations (N, ..., C): (1,) (1, 2) or (1, 2, 3)."""
    return tuple(range(1, a.ndim - 1))
