"""Batches of a `Dataset`: seeded shuffling, numpy augmentation (random crop with padding, flip) and a
background-thread prefetch so the next batch is ready while the device runs the current step.

Augmentation runs on uint8 images at their stored size (32 px for CIFAR, cheap); resizing and
normalization happen on the device inside the jitted step.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterator, Tuple

import numpy as np

from jaxcam.data.sources import Dataset

Batch = Tuple[np.ndarray, np.ndarray]


def augment(images: np.ndarray, rng: np.random.Generator, pad: int = 4, flip: bool = True) -> np.ndarray:
    """Random crop of the zero-padded image back to its size, then random horizontal flip.

    Args:
      images: uint8 (N, H, W, C).
      rng: numpy generator (the only source of randomness).
      pad: pixels of zero padding on each side before cropping (0 = no crop).
      flip: flip each image left-right with probability 1/2.

    Returns:
      uint8 (N, H, W, C).
    """
    n, h, w, _ = images.shape
    out = images
    if pad > 0:
        padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        dy = rng.integers(0, 2 * pad + 1, n)
        dx = rng.integers(0, 2 * pad + 1, n)
        rows = dy[:, None] + np.arange(h)[None, :]  # (N, H)
        cols = dx[:, None] + np.arange(w)[None, :]  # (N, W)
        out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if flip:
        mask = rng.random(n) < 0.5
        out = np.where(mask[:, None, None, None], out[:, :, ::-1], out)
    return np.ascontiguousarray(out)


def batches(data: Dataset, batch_size: int, *, shuffle: bool = False, augment_images: bool = False,
            seed: int = 0, drop_last: bool = False, pad: int = 4, flip: bool = True) -> Iterator[Batch]:
    """Yield ``(images uint8 (B, H, W, 3), labels int32 (B,))`` over one pass of `data`.

    The order and the augmentation depend only on `seed` (use e.g. ``seed + epoch`` per epoch), so a
    resumed run sees the same batches. The last batch is smaller unless `drop_last`.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data)) if shuffle else np.arange(len(data))
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        images = data.images[idx]
        if augment_images:
            images = augment(images, rng, pad=pad, flip=flip)
        yield images, data.labels[idx]


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
    """Run `iterator` in a daemon thread, keeping up to `size` items ready; re-raises its errors.

    Closing the returned generator (or dropping it) stops the thread at its next item.
    """
    items: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in iterator:
                if not put(item):
                    return
        except BaseException as e:  # handed to the consumer
            put(e)
        put(done)

    threading.Thread(target=work, daemon=True).start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
