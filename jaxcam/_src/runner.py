"""Run a method core under jit: validate once in Python, then one compiled call per configuration.

A method core is a pure function ``core(split, x, targets, **options)`` that reads like its paper's
formula and returns either raw maps (N, h, w) or channel-weighted activations (N, h, w, C); `run`
does the rest: validation, jit (with jaxcam's per-jit CPU compiler options, `jaxcam._src.compile`,
plus a core's own ``cpu_compiler_options``), channel reduction (sum, or first principal component with
``eigen_smooth``), final activation, min-max, resize to the input size, and the options every
method shares:

  reshape_transform  token models: a linear (N, tokens, C) -> (N, h, w, C) view of the layer
  aug_smooth         test-time augmentation, maps averaged back in input coordinates
  eigen_smooth       first principal component of the weighted activations instead of their sum
  layer=[...]        several layers: one map per layer, fused by the mean of the per-layer maps
  targets (N, T)     T classes per image: maps (N, T, H, W). The core runs vmapped over the T
                     columns; what does not depend on the class (the features, every ablated or
                     masked head pass) is not batched by vmap, so it is computed once for all T.
  normalize=False    the raw map, resized to the input size (linear, so magnitudes are kept),
                     before the final activation and min-max
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from jaxcam._src import compile as compile_lib
from jaxcam._src import blank, maps
from jaxcam._src.projection import first_component
from jaxcam._src.request import make_request, spatial_activation_shape
from jaxcam._src.dtypes import as_map_float, for_method
from jaxcam._src.split import Split
from jaxcam._src.tokens import ReshapedSplit

AUG_FACTORS = (0.9, 1.0, 1.1)
AUG_MODES = ("multiply", "scale")
_LAYER_MAPS = contextvars.ContextVar("jaxcam_layer_maps", default=None)


class Shared(NamedTuple):
    """Options every method shares (static under jit)."""

    reshape_transform: Optional[object] = None
    aug_smooth: Optional[str] = None  # None | "multiply" | "scale"
    eigen_smooth: bool = False
    fusing: bool = False  # a per-layer map of a multi-layer call (fused afterwards)
    normalize: bool = True  # False: raw maps (no final activation, no min-max)


def check_aug_smooth(aug_smooth) -> Optional[str]:
    """False/None -> None; True -> "multiply" (pytorch-grad-cam's); or "multiply" | "scale"."""
    if aug_smooth is None or aug_smooth is False:
        return None
    if aug_smooth is True:
        return "multiply"
    if aug_smooth not in AUG_MODES:
        raise ValueError(f"aug_smooth must be True/False or one of {AUG_MODES}, got {aug_smooth!r}")
    return aug_smooth


def run(
    core, model, x, layer, targets, final_activation: str = "relu", *,
    reshape_transform=None, aug_smooth=False, eigen_smooth: bool = False, normalize: bool = True, **options,
):
    """Validate the call and run `core` jitted; returns (N, H, W) maps in [0, 1].

    float32 (also for a model computing in bfloat16: `Model.with_compute_dtype`), or float64 when x and the
    parameters are float64 (under ``jax_enable_x64``).

    With targets of shape (N, T): (N, T, H, W). With ``normalize=False``: raw maps (any range).

    `layer` may be a list of layers: the result is their fused map (see `fuse`); inside
    `collect_layer_maps()` the per-layer maps are recorded too.
    """
    maps.check_final_activation(final_activation)
    shared = Shared(reshape_transform, check_aug_smooth(aug_smooth), bool(eigen_smooth), normalize=bool(normalize))
    options = tuple(sorted(options.items()))
    if not isinstance(layer, (list, tuple)):
        out, req = _run_one(core, model, x, layer, targets, final_activation, shared, options)
        blank.check(out, method=_name(core), layer=_label(core, req), grid=_grid(core, req), options=dict(options))
        return out
    if not layer:
        raise ValueError("layer is an empty list: pass a layer path or a non-empty list of them")
    shared = shared._replace(fusing=True)
    runs = [_run_one(core, model, x, one, targets, final_activation, shared, options) for one in layer]
    layer_maps = jnp.stack([out for out, _ in runs])
    spatial = jnp.ndim(x) - 2  # maps have the input's spatial axes
    sink = _LAYER_MAPS.get()
    if sink is not None:
        per_map = layer_maps.reshape(-1, *layer_maps.shape[-spatial:])
        sink.append((maps.minmax(per_map) if normalize else per_map).reshape(layer_maps.shape))
    out = fuse(layer_maps, spatial) if normalize else layer_maps.mean(axis=0)
    largest = max((req for _, req in runs), key=lambda req: math.prod(req.activation_shape[1:-1]))
    blank.check(out, method=_name(core), layer=_label(core, largest), grid=_grid(core, largest), options=dict(options))
    return out


def _grid(core, req) -> tuple:
    """The grid a core's map is made on: the layer's, or the input's for cores that map pixels and only
    need some layer to run (``core.maps_pixels``: FullGrad)."""
    return tuple(req.x.shape[1:-1]) if getattr(core, "maps_pixels", False) else tuple(req.activation_shape[1:-1])


def _label(core, req) -> str:
    return "the input" if getattr(core, "maps_pixels", False) else "/".join(req.layer)


def _name(core) -> str:
    name = getattr(core, "__name__", "this method")
    return name[: -len("_map")] if name.endswith("_map") else name


def _run_one(core, model, x, layer, targets, final_activation, shared: Shared, options):
    """Maps of one layer and the validated request (its layer path and activation shape)."""
    req = make_request(model, x, layer, targets, shared.reshape_transform)
    spatial_activation_shape(req)
    if shared.aug_smooth is not None and req.x.ndim != 4:
        raise ValueError(f"aug_smooth flips and rescales images (N, H, W, C); x has shape {tuple(req.x.shape)}")
    target_fn = req.targets if callable(req.targets) else None
    classes = None if target_fn is not None else req.targets
    out = _run_jit(core, req.model, req.x, classes, req.layer, target_fn, final_activation, shared, options,
                   _extra_options=getattr(core, "cpu_compiler_options", None))
    return out, req


def fuse(layer_maps: jnp.ndarray, spatial: int = 2) -> jnp.ndarray:
    """(L, N, [T,] H, W) per-layer maps -> (N, [T,] H, W): their mean, min-max normalized per map.

    `spatial`: the maps' spatial axes (1 for signals (L, N, l), 3 for volumes)."""
    mean = layer_maps.mean(axis=0)
    return maps.minmax(mean.reshape(-1, *mean.shape[-spatial:])).reshape(mean.shape)


@contextlib.contextmanager
def collect_layer_maps():
    """Within the block, each multi-layer call appends its per-layer maps (L, N, H, W) to the yielded list."""
    token = _LAYER_MAPS.set([])
    try:
        yield _LAYER_MAPS.get()
    finally:
        _LAYER_MAPS.reset(token)


def reduce_channels(cam: jnp.ndarray, eigen_smooth: bool, input_ndim: int = 4) -> jnp.ndarray:
    """Weighted activations (N, h, w, C) -> (N, h, w) by sum or first principal component.

    Any spatial rank: activations have the input's rank `input_ndim`, maps one axis fewer.
    """
    if cam.ndim == input_ndim:
        return first_component(cam) if eigen_smooth else cam.sum(axis=-1)
    if eigen_smooth:
        raise ValueError("eigen_smooth applies to methods that weigh channels; this method returns maps directly")
    return cam


@functools.partial(compile_lib.jit, static_argnums=(0, 4, 5, 6, 7, 8))
def _run_jit(core, model, x, classes, layer, target_fn, final_activation, shared: Shared, options):
    model, x = for_method(model, x)
    split = Split(model, layer)
    if shared.reshape_transform is not None:
        split = ReshapedSplit(split, shared.reshape_transform)
    if classes is not None and classes.ndim == 2:  # (N, T): one map per column, shared passes
        per_target = jax.vmap(lambda c: _maps(core, split, x, c, final_activation, shared, options), in_axes=1, out_axes=1)
        return per_target(classes)
    targets = target_fn if target_fn is not None else classes
    if shared.aug_smooth is not None and targets is None:
        targets = jnp.argmax(model(x), axis=-1).astype(jnp.int32)  # the same class for every view
    return _maps(core, split, x, targets, final_activation, shared, options)


def _maps(core, split, x, targets, final_activation, shared: Shared, options):
    """(N, H, W) maps of one target per image, after aug_smooth if asked."""

    def one(view):
        cam = reduce_channels(core(split, view, targets, **dict(options)), shared.eigen_smooth, view.ndim)
        if not shared.normalize:
            return maps.resize(as_map_float(cam), view.shape[1:-1])
        if shared.fusing:  # as pytorch-grad-cam: layers are averaged before the post-resize min-max
            return maps.resize(maps.minmax(maps.activate(cam, final_activation)), view.shape[1:-1])
        return maps.finish(cam, view.shape[1:-1], final_activation)

    if shared.aug_smooth is None:
        return one(x)
    mean = jnp.mean(jnp.stack(augmented_maps(one, x, shared.aug_smooth)), axis=0)
    return mean if shared.fusing or not shared.normalize else maps.minmax(mean)


def augmented_maps(one, x, mode: str) -> list:
    """Maps of the 6 views {identity, horizontal flip} x AUG_FACTORS, each mapped back onto x's pixels.

    mode "multiply" (pytorch-grad-cam's ttach Multiply): pixel values times the factor.
    mode "scale": the image resized by the factor (bilinear); its map resized back to (H, W).
    """
    size = x.shape[1:3]
    out = []
    for flip in (False, True):
        base = x[:, :, ::-1] if flip else x
        for factor in AUG_FACTORS:
            if mode == "multiply":
                cam = one(base * factor)
            else:
                scaled = tuple(max(1, round(s * factor)) for s in size)
                cam = maps.resize(one(resize_images(base, scaled)), size)
            out.append(cam[:, :, ::-1] if flip else cam)
    return out


def resize_images(x: jnp.ndarray, size) -> jnp.ndarray:
    """Bilinear (half-pixel) resize of images (N, H, W, C) to (N, *size, C)."""
    if x.shape[1:3] == tuple(size):
        return x
    return jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), method="bilinear", antialias=False)
