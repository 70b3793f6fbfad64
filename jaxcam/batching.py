"""Explain any number of images: fixed-size batches, one compilation, sharded over local devices.

    result = jaxcam.explain(jaxcam.grad_cam, model, images, batch_size=16)   # or explain("grad_cam", ...)
    result.maps        # (N, H, W) float32 jax.Array, still on device
    np.asarray(result) # fetched to the host only when asked

Each batch has exactly `batch_size` images (the last one is padded with copies of its last image,
and the padding dropped from the results), so the method compiles once for the whole stream. With
several local devices each batch is split over them along the ``'batch'`` axis of
`jaxcam.sharding.batch_mesh` (the model is replicated). The method is called exactly as a user
calls it (no extra jit around it), so it compiles with the same compiler options and runs as fast as
a direct call. `explain_batches` yields batch by batch, for jobs that write results as they go.

This module is `jaxcam.batching`; `jaxcam.explain` is the function.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Callable, Iterator, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._src import compile as compile_lib
from jaxcam._src.dtypes import HALF, for_method
from jaxcam.methods import registry
from jaxcam._src.kinds import as_model
from jaxcam._src.model import Model
from jaxcam.sharding import batch_mesh, batch_sharding, process_share, replicated, round_to_devices

__all__ = ["Batch", "Explanation", "explain", "explain_batches", "batch_mesh", "process_share"]


@dataclasses.dataclass
class Batch:
    """One explained batch: images ``start .. start + count - 1`` of the stream.

    `maps` (count, H, W) float32 (an attribution method: (count, H, W, C); a several-maps method: a
    dict of those) and `logits` (count, K) are device arrays (sharded over devices); `logits` is None
    when `explain_batches` was called with ``logits=False``.
    """

    start: int
    count: int
    maps: Union[jax.Array, dict]
    logits: Optional[jax.Array]


@dataclasses.dataclass
class Explanation:
    """All batches of one `explain` call; arrays stay on device until `numpy()` / ``np.asarray``."""

    batches: list

    @property
    def maps(self):
        """(N, H, W) float32 maps in [0, 1], on device (a dict of them for several-maps methods)."""
        if not self.batches:
            return jnp.zeros((0, 0, 0))
        if isinstance(self.batches[0].maps, dict):
            return {k: jnp.concatenate([b.maps[k] for b in self.batches]) for k in self.batches[0].maps}
        return jnp.concatenate([b.maps for b in self.batches])

    @property
    def logits(self) -> jax.Array:
        """(N, K) model outputs for the same images, on device."""
        if self.batches and self.batches[0].logits is None:
            raise ValueError("these batches were explained with logits=False")
        return jnp.concatenate([b.logits for b in self.batches]) if self.batches else jnp.zeros((0, 0))

    @property
    def predictions(self) -> np.ndarray:
        """Argmax class per image, (N,) int."""
        return np.asarray(jnp.argmax(self.logits, axis=-1))

    def numpy(self):
        maps = self.maps
        return {k: np.asarray(v) for k, v in maps.items()} if isinstance(maps, dict) else np.asarray(maps)

    def __array__(self, dtype=None, copy=None):
        maps = self.numpy()
        return maps if dtype is None else maps.astype(dtype)

    def __len__(self) -> int:
        return sum(b.count for b in self.batches)


def explain(method: Union[str, Callable], model, images, *, batch_size: int = 8, layer: Optional[str] = None,
            targets=None, devices=None, progress: bool = False, logits: bool = True, **options) -> Explanation:
    """Run a CAM `method` over `images` in fixed-size, device-sharded batches.

    Args:
      method: a jaxcam method (``jaxcam.grad_cam``), a registry name or alias (``"ablation"``,
        ``"GradCAMPlusPlus"``), a `jaxcam.methods.registry.Method`, or any function
        ``method(model, x, layer=..., targets=..., **options)``.
      model: a `jaxcam.Model`.
      images: an array (N, H, W, C) or an iterable of images (H, W, C), all the same size. uint8
        images go through ``model.preprocess``; float images are used as given (already normalized).
        float16/bfloat16 images and model variables are accepted and computed in float32 (see
        `jaxcam._src.dtypes.upcast_half`), unless the model computes in bfloat16
        (`Model.with_compute_dtype`); other dtypes are refused with a TypeError.
      batch_size: images per compiled call; rounded up to a multiple of the number of devices.
      layer: the layer to explain (default: the model's).
      targets: None (argmax) | int | one int per image (a sequence of length N) | callable.
      devices: devices to shard over (default: ``jax.local_devices()``).
      progress: show a tqdm progress bar.
      logits: also compute the model's outputs (one extra forward per batch); False skips it.
      **options: passed to `method` (e.g. ``score="softmax"``, ``window=2``).

    Returns:
      An `Explanation`: ``.maps`` (N, H, W) and ``.logits`` (N, K), on device.

    Example:
      >>> import numpy as np, jaxcam
      >>> model = jaxcam.models.resnet18(num_classes=10)
      >>> imgs = np.zeros((5, 64, 64, 3), np.uint8)
      >>> jaxcam.explain(jaxcam.grad_cam, model, imgs, batch_size=2).maps.shape
      (5, 64, 64)
    """
    batches = explain_batches(method, model, images, batch_size=batch_size, layer=layer, targets=targets,
                              devices=devices, progress=progress, logits=logits, **options)
    return Explanation(list(batches))


def explain_batches(method: Union[str, Callable], model, images, *, batch_size: int = 8,
                    layer: Optional[str] = None, targets=None, devices=None, progress: bool = False,
                    logits: bool = True, **options) -> Iterator[Batch]:
    """As `explain`, but yields each `Batch` as soon as it is computed (arrays on device)."""
    call = resolve_method(method)
    if isinstance(call, registry.Method):
        call, options = call.bind(**options), {}  # options checked once here, not per batch
    model = as_model(model)
    mesh = batch_mesh(devices)
    size = round_to_devices(batch_size, mesh.size)
    per_image = targets is not None and not callable(targets) and np.ndim(targets) == 1
    if not per_image:
        targets = _static_targets(targets)
    total = len(images) if hasattr(images, "__len__") else None
    if per_image and total is not None and len(targets) != total:
        raise ValueError(f"targets has {len(targets)} entries for {total} images: pass one class per image")
    if mesh.size > 1:  # one device: leave placement alone, so the method sees what a direct call sees
        model = jax.device_put(model, replicated(mesh))
        sharded = batch_sharding(mesh)
    else:
        sharded = mesh.devices.flat[0]
    bar = _progress(progress, total)
    start = 0
    for chunk in _chunks(images, size):
        count = len(chunk)
        x = jax.device_put(_prepare(model, np.stack([np.asarray(im) for im in chunk]), size), sharded)
        t = targets
        if per_image:
            t = np.asarray(targets[start : start + count], np.int32)
            if len(t) != count:
                raise ValueError(f"targets has fewer entries than images ({len(targets)}): pass one per image")
            t = jax.device_put(np.concatenate([t, np.repeat(t[-1:], size - count)]), sharded)
        maps = call(model, x, layer=layer, targets=t, **options)
        scores = _forward(model, x) if logits else None
        yield Batch(start, count, _head(maps, count, size), None if scores is None else _head(scores, count, size))
        start += count
        if bar is not None:
            bar.update(count)
    if bar is not None:
        bar.close()


def resolve_method(method):
    """A registry `Method` for a name, alias, Method or registered function; other callables as given."""
    if isinstance(method, (str, registry.Method)):
        return registry.get(method)
    for m in registry.REGISTRY.values():
        if m.fn is method or m.rule is method:
            return m
    if not callable(method):
        raise TypeError(f"method must be a jaxcam method, its name, or a function; got {method!r}")
    return method


def _head(value, count: int, size: int):
    """Drop the padding rows of an array (or of every array of a dict)."""
    if count == size:
        return value
    if isinstance(value, dict):
        return {k: v[:count] for k, v in value.items()}
    return value[:count]


@compile_lib.jit
def _forward(model: Model, x):
    model, x = for_method(model, x)
    return model(x).astype(jnp.float32)


def _static_targets(targets):
    """None, an int, or a callable."""
    if targets is None or callable(targets):
        return targets
    if np.ndim(targets) == 0 and np.asarray(targets).dtype.kind in "iu":
        return int(targets)
    raise TypeError(f"targets must be None, an int, one int per image, or a callable; got {targets!r}")


def _chunks(images, size: int) -> Iterator[list]:
    if hasattr(images, "shape") and getattr(images, "ndim", 0) != 4:
        raise ValueError(f"images has shape {tuple(images.shape)}: expected a batch (N, H, W, C)")
    it = iter(images)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


def _prepare(model: Model, x: np.ndarray, size: int) -> np.ndarray:
    """Stack -> model input (size, H, W, C), padded with copies of the last image."""
    if x.ndim != 4:
        raise ValueError(f"each image must be (H, W, C); got a batch of shape {x.shape}")
    if x.dtype == np.uint8:
        x = np.asarray(model.preprocess(x))
    elif not np.issubdtype(x.dtype, np.floating) and x.dtype not in HALF:
        raise TypeError(f"images have dtype {x.dtype}: pass uint8 images or normalized floats")
    if len(x) < size:
        x = np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])
    return x


def _progress(enabled: bool, total: Optional[int]):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc="explain")
