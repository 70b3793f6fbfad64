"""Explain any number of images: fixed-size batches, one compilation, sharded over local devices.

    result = jaxcam.explain(jaxcam.grad_cam, model, images, batch_size=16)
    result.maps        # (N, H, W) float32 jax.Array, still on device
    np.asarray(result) # fetched to the host only when asked

Each batch has exactly `batch_size` images (the last one is padded with copies of its last image,
and the padding dropped from the results), so the method compiles once for the whole stream. With
several local devices each batch is split over them along a 1-D ``'batch'`` mesh
(``NamedSharding(mesh, P('batch'))``); the model is replicated. `explain_batches` yields batch by
batch, for jobs that write results as they go.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
from typing import Callable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcam._src.dtypes import HALF, upcast_half
from jaxcam.model import Model, as_model

_METHOD_PARAMS = ["model", "x", "layer", "targets"]


@dataclasses.dataclass
class Batch:
    """One explained batch: images ``start .. start + count - 1`` of the stream.

    `maps` (count, H, W) float32 and `logits` (count, K) are device arrays (sharded over devices).
    """

    start: int
    count: int
    maps: jax.Array
    logits: jax.Array


@dataclasses.dataclass
class Explanation:
    """All batches of one `explain` call; arrays stay on device until `numpy()` / ``np.asarray``."""

    batches: list

    @property
    def maps(self) -> jax.Array:
        """(N, H, W) float32 maps in [0, 1], on device."""
        return jnp.concatenate([b.maps for b in self.batches]) if self.batches else jnp.zeros((0, 0, 0))

    @property
    def logits(self) -> jax.Array:
        """(N, K) model outputs for the same images, on device."""
        return jnp.concatenate([b.logits for b in self.batches]) if self.batches else jnp.zeros((0, 0))

    @property
    def predictions(self) -> np.ndarray:
        """Argmax class per image, (N,) int."""
        return np.asarray(jnp.argmax(self.logits, axis=-1))

    def numpy(self) -> np.ndarray:
        return np.asarray(self.maps)

    def __array__(self, dtype=None, copy=None):
        maps = self.numpy()
        return maps if dtype is None else maps.astype(dtype)

    def __len__(self) -> int:
        return sum(b.count for b in self.batches)


def methods() -> dict:
    """Every CAM method jaxcam exports: name -> function ``method(model, x, layer, targets, **options)``."""
    import jaxcam

    found = {}
    for name in jaxcam.__all__:
        fn = getattr(jaxcam, name, None)
        if inspect.isfunction(fn) and list(inspect.signature(fn).parameters)[:4] == _METHOD_PARAMS:
            found[name] = fn
    return found


def batch_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A 1-D mesh named ``'batch'`` over `devices` (default: all local devices)."""
    devices = list(devices) if devices is not None else jax.local_devices()
    return Mesh(np.asarray(devices), ("batch",))


def process_share(num_items: int) -> slice:
    """This process's contiguous share of `num_items` items in a multi-host run (all of them on one host).

    With ``jax.distributed.initialize()`` each host explains its own share on its local devices; CAMs
    are per image, so no cross-host communication is needed. Example:
    ``jaxcam.explain(method, model, images[process_share(len(images))])`` with
    ``from jaxcam.explain import process_share``.
    """
    index, count = jax.process_index(), jax.process_count()
    return slice(num_items * index // count, num_items * (index + 1) // count)


def round_batch_size(batch_size: int, num_devices: int) -> int:
    """The batch size used: `batch_size` rounded up to a multiple of the number of devices."""
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return -(-int(batch_size) // num_devices) * num_devices


def explain(method: Callable, model, images, *, batch_size: int = 8, layer: Optional[str] = None,
            targets=None, devices=None, progress: bool = False, **options) -> Explanation:
    """Run a CAM `method` over `images` in fixed-size, device-sharded batches.

    Args:
      method: any jaxcam method, e.g. ``jaxcam.grad_cam`` (signature ``method(model, x, layer,
        targets, **options)``).
      model: a `jaxcam.Model`.
      images: an array (N, H, W, C) or an iterable of images (H, W, C), all the same size. uint8
        images go through ``model.preprocess``; float images are used as given (already normalized).
        float16/bfloat16 images and model variables are accepted and computed in float32 (see
        `jaxcam._src.dtypes.upcast_half`); other dtypes are refused with a TypeError.
      batch_size: images per compiled call; rounded up to a multiple of the number of devices.
      layer: the layer to explain (default: the model's).
      targets: None (argmax) | int | one int per image (a sequence of length N) | callable.
      devices: devices to shard over (default: ``jax.local_devices()``).
      progress: show a tqdm progress bar.
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
                              devices=devices, progress=progress, **options)
    return Explanation(list(batches))


def explain_batches(method: Callable, model, images, *, batch_size: int = 8, layer: Optional[str] = None,
                    targets=None, devices=None, progress: bool = False, **options) -> Iterator[Batch]:
    """As `explain`, but yields each `Batch` as soon as it is computed (arrays on device)."""
    model = as_model(model)
    mesh = batch_mesh(devices)
    size = round_batch_size(batch_size, mesh.size)
    per_image = targets is not None and not callable(targets) and np.ndim(targets) == 1
    static_targets = None if per_image else _static_targets(targets)
    step = _compiled_step(method, mesh, layer, static_targets, per_image, tuple(sorted(options.items())))
    model = jax.device_put(model, NamedSharding(mesh, P()))
    sharded = NamedSharding(mesh, P("batch"))
    total = len(images) if hasattr(images, "__len__") else None
    if per_image and total is not None and len(targets) != total:
        raise ValueError(f"targets has {len(targets)} entries for {total} images: pass one class per image")
    bar = _progress(progress, total)
    start = 0
    for chunk in _chunks(images, size):
        count = len(chunk)
        x = _prepare(model, np.stack([np.asarray(im) for im in chunk]), size)
        t = None
        if per_image:
            t = np.asarray(targets[start : start + count], np.int32)
            if len(t) != count:
                raise ValueError(f"targets has fewer entries than images ({len(targets)}): pass one per image")
            t = jax.device_put(np.concatenate([t, np.repeat(t[-1:], size - count)]), sharded)
        maps, logits = step(model, jax.device_put(x, sharded), t)
        yield Batch(start, count, maps[:count] if count < size else maps, logits[:count] if count < size else logits)
        start += count
        if bar is not None:
            bar.update(count)
    if bar is not None:
        bar.close()


def _static_targets(targets):
    """None, an int, or a hashable callable: part of the compiled step's identity."""
    if targets is None or callable(targets):
        return targets
    if np.ndim(targets) == 0 and np.asarray(targets).dtype.kind in "iu":
        return int(targets)
    raise TypeError(f"targets must be None, an int, one int per image, or a callable; got {targets!r}")


@functools.lru_cache(maxsize=32)
def _compiled_step(method, mesh, layer, static_targets, per_image, options):
    """One jitted (model, x, targets) -> (maps, logits) per configuration, batch-sharded in and out."""
    sharded, replicated = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())

    def step(model: Model, x, t):
        model, x = upcast_half(model), upcast_half(x)
        maps = method(model, x, layer=layer, targets=t if per_image else static_targets, **dict(options))
        return maps, model(x).astype(jnp.float32)

    return jax.jit(step, in_shardings=(replicated, sharded, sharded if per_image else None),
                   out_shardings=(sharded, sharded))



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
