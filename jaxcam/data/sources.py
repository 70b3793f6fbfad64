"""Where CIFAR-10 comes from: tensorflow-datasets, an image-folder tree (directory or .tar.gz), or the
official ``cifar-10-python.tar.gz``. Every source gives the same `Dataset` of uint8 NHWC images.

Layouts accepted for a local copy (``source=`` a path):
  - a directory, or a ``.tar``/``.tar.gz``/``.tgz`` of one, holding ``train/<class>/*.{png,jpg,jpeg}``
    and ``test/<class>/*...`` (class index = sorted class-folder name, which is CIFAR-10's order);
    a single top-level folder above ``train``/``test`` is allowed;
  - the official archive with ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``.
"""
from __future__ import annotations

import dataclasses
import io
import os
import pickle
import sys
import tarfile
from typing import Dict, List, Optional, Tuple

import numpy as np

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "test")


class DataNotFoundError(FileNotFoundError):
    """No usable copy of the data set; the message says how to pass one."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """images: uint8 (N, H, W, 3); labels: int32 (N,); class_names: names in label order; masks: None or
    uint8 (N, H, W), one per image (0..255 = 0..1; `load_dataset(masks=...)`, CAM guidance in training)."""

    images: np.ndarray
    labels: np.ndarray
    class_names: Tuple[str, ...]
    masks: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.labels)

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels {self.labels.shape} do not match images {self.images.shape}")
        if self.masks is not None and (self.masks.shape != self.images.shape[:3] or self.masks.dtype != np.uint8):
            raise ValueError(f"masks must be uint8 {self.images.shape[:3]} (one per image), got "
                             f"{self.masks.dtype} {self.masks.shape}")


def load_cifar10(source: Optional[str] = None, split: str = "train", tfds_data_dir: Optional[str] = None) -> Dataset:
    """Load one split of CIFAR-10.

    Args:
      source: None -> tensorflow-datasets' prepared ``cifar10`` (never downloads); or a path to an
        image-folder tree (directory or tar archive) or to the official ``cifar-10-python.tar.gz``.
      split: "train" or "test".
      tfds_data_dir: tfds data directory (default: tfds' own, ``~/tensorflow_datasets``).

    Returns:
      `Dataset` with uint8 images (N, 32, 32, 3) for CIFAR-10.

    Raises:
      DataNotFoundError: no prepared tfds copy (source=None) or no such path; says what to pass.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if source is None:
        return _from_tfds(split, tfds_data_dir)
    if not os.path.exists(source):
        raise DataNotFoundError(f"data source {source!r} does not exist; pass an image-folder tree "
                                "(train|test/<class>/*.jpg, directory or .tar.gz) or cifar-10-python.tar.gz")
    if os.path.isdir(source):
        return _from_folder(source, split)
    if tarfile.is_tarfile(source):
        with tarfile.open(source) as tar:
            names = tar.getnames()
            if any(n.endswith("batches.meta") for n in names):
                return _from_python_archive(tar, names, split)
            return _from_tar_tree(tar, split)
    raise DataNotFoundError(f"{source!r} is neither a directory nor a tar archive; pass an image-folder tree "
                            "(train|test/<class>/*.jpg, directory or .tar.gz) or cifar-10-python.tar.gz")


def _from_tfds(split: str, data_dir: Optional[str]) -> Dataset:
    hint = ("pass a local copy instead: --data /path/to/cifar10_jpg_tree.tar.gz (image folders "
            "train|test/<class>/*.jpg, as a directory or archive) or /path/to/cifar-10-python.tar.gz")
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - tfds is a dependency
        raise DataNotFoundError(f"tensorflow-datasets is not installed; {hint}") from e
    try:
        source = tfds.data_source("cifar10", split=split, download=False, data_dir=data_dir)
    except Exception as e:  # tfds raises several types (AssertionError, DatasetNotFoundError, ...)
        raise DataNotFoundError(f"tensorflow-datasets has no prepared 'cifar10' (download=False, so nothing "
                                f"was fetched: {type(e).__name__}); {hint}") from e
    records = source.__getitems__(list(range(len(source))))
    images = np.stack([np.asarray(r["image"], np.uint8) for r in records])
    labels = np.asarray([int(r["label"]) for r in records], np.int32)
    return Dataset(images, labels, CIFAR10_CLASSES)


def _decode(data: bytes) -> np.ndarray:
    from jaxcam.images import open_image

    with open_image(io.BytesIO(data)) as im:  # a decompression bomb raises instead of being decoded
        return np.asarray(im.convert("RGB"), np.uint8)


def _split_members(paths: List[str], split: str) -> Dict[str, List[str]]:
    """{class name: [image paths]} of one split from relative paths ``[top/]split/class/file``."""
    by_class: Dict[str, List[str]] = {}
    for path in paths:
        parts = path.replace("\\", "/").strip("/").split("/")
        if len(parts) < 3 or not parts[-1].lower().endswith(IMAGE_SUFFIXES) or parts[-3] != split:
            continue
        by_class.setdefault(parts[-2], []).append(path)
    if not by_class:
        raise DataNotFoundError(f"no images under '{split}/<class>/*.{{png,jpg}}' in the image-folder source; "
                                "expected train|test/<class>/<image> files")
    return by_class


def _stack(by_class: Dict[str, List[str]], read) -> Dataset:
    from jaxcam.images import UNREADABLE, unreadable_reason

    class_names = tuple(sorted(by_class))
    images, labels = [], []
    for label, name in enumerate(class_names):
        for path in sorted(by_class[name]):
            try:
                images.append(_decode(read(path)))
            except UNREADABLE as err:  # truncated, not an image, a decompression bomb: one line, skipped
                print(f"skipped {path}: {unreadable_reason(err)}", file=sys.stderr)
                continue
            labels.append(label)
    if not images:
        raise DataNotFoundError("none of the images in the image-folder source could be read")
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ValueError(f"images of different sizes {sorted(shapes)[:3]}...; resize them to one size first")
    return Dataset(np.stack(images), np.asarray(labels, np.int32), class_names)


def _from_folder(root: str, split: str) -> Dataset:
    paths = [os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files]

    def read(rel):
        with open(os.path.join(root, rel), "rb") as fh:
            return fh.read()

    return _stack(_split_members(paths, split), read)


def _from_tar_tree(tar: tarfile.TarFile, split: str) -> Dataset:
    # One sequential pass: random access into a gzip stream would re-decompress from the start.
    contents = {m.name: tar.extractfile(m).read() for m in tar if m.isfile() and f"{split}/" in m.name}
    return _stack(_split_members(list(contents), split), contents.__getitem__)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays (the official archive's content), no code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "bytes"),
                ("_codecs", "encode")}  # how protocol-2 pickles written by Python 3 store bytes

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} from a CIFAR archive")


def _load_pickle(tar: tarfile.TarFile, name: str) -> dict:
    data = _ArrayUnpickler(tar.extractfile(name), encoding="bytes").load()
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in data.items()}


def _from_python_archive(tar: tarfile.TarFile, names: List[str], split: str) -> Dataset:
    base = {os.path.basename(n): n for n in names}
    wanted = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    wanted = [w for w in wanted if w in base]
    if not wanted:
        raise DataNotFoundError(f"the CIFAR archive has no {split} batches (data_batch_N / test_batch)")
    images, labels = [], []
    for key in wanted:
        batch = _load_pickle(tar, base[key])
        images.append(np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch["labels"], np.int32))
    meta = _load_pickle(tar, base["batches.meta"])
    class_names = tuple(n.decode() if isinstance(n, bytes) else n for n in meta["label_names"])
    return Dataset(np.concatenate(images), np.concatenate(labels), class_names)
