"""Any labelled image-classification data set as a `Dataset` of uint8 images: an image-folder tree
(directory, ``.tar[.gz]`` or ``.zip``) of ``train/<class>/*`` plus ``val/`` or ``test/``, or a
tensorflow-datasets data set by name.

    train = load_dataset("imagenette2-160.tgz", "train", size=160)
    val = load_dataset("imagenette2-160.tgz", "val", size=160)   # class names: "tench", "English springer", ...

Images are decoded on the host (PIL: png, jpg, bmp, gif, webp, tiff, ...). When a split holds
images of different sizes they are brought to `size` x `size` on the host (shorter side resized to
`size`, centre crop) so that they stack; augmentation and the resize to the model's input happen
on the device. Class folders named by WordNet id (``n01440764``) get their ImageNet names.
"""
from __future__ import annotations

import io
import os
import socket
import tarfile
import urllib.error
import urllib.request
import zipfile
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from jaxcam.data.sources import CIFAR10_CLASSES, DataNotFoundError, Dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
EVAL_SPLITS = ("val", "validation", "test")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
NETWORK_PROBE = "https://storage.googleapis.com/"
PROBE_TIMEOUT = 5.0


def folder_hint() -> str:
    return ("pass a local image-folder tree instead: --data /path/to/tree (train/<class>/* and val/<class>/* "
            "or test/<class>/*, as a directory, .tar.gz or .zip)")


def is_local(source: str) -> bool:
    """Does `source` name a local path (rather than a tfds name such as ``cifar10``, ``imagenette/160px``
    or ``tfds:mnist``)? An existing path, an archive name, or anything starting with . / ~ is local."""
    s = str(source)
    if s.startswith("tfds:"):
        return False
    return os.path.exists(s) or s.startswith((".", "/", "~")) or s.lower().endswith(ARCHIVE_SUFFIXES)


# ---------------------------------------------------------------- listing (no decoding)


class _Tree:
    """Relative member paths of a folder / tar / zip and a reader for one member."""

    def __init__(self, source: str):
        self.source = source
        if os.path.isdir(source):
            self.paths = sorted(os.path.relpath(os.path.join(d, f), source).replace(os.sep, "/")
                                for d, _, files in os.walk(source) for f in files)
            self.kind = "dir"
        elif zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as z:
                self.paths = sorted(n for n in z.namelist() if not n.endswith("/"))
            self.kind = "zip"
        elif tarfile.is_tarfile(source):
            with tarfile.open(source) as tar:
                self.paths = sorted(m.name for m in tar if m.isfile())
            self.kind = "tar"
        else:
            raise DataNotFoundError(f"{source!r} is neither a directory nor a .tar/.tar.gz/.zip archive; "
                                    + folder_hint())

    def split_members(self, split: str) -> Dict[str, List[str]]:
        """{class folder: [member paths]} of ``[top/]split/class/file`` images."""
        by_class: Dict[str, List[str]] = {}
        for path in self.paths:
            parts = path.strip("/").split("/")
            if len(parts) < 3 or parts[-3] != split or not parts[-1].lower().endswith(IMAGE_SUFFIXES):
                continue
            if any(p.startswith(".") for p in parts):
                continue
            by_class.setdefault(parts[-2], []).append(path)
        return by_class

    def splits(self) -> List[str]:
        found = set()
        for path in self.paths:
            parts = path.strip("/").split("/")
            if len(parts) >= 3 and parts[-1].lower().endswith(IMAGE_SUFFIXES):
                found.add(parts[-3])
        return sorted(found)

    def read_many(self, paths: Sequence[str], progress: Optional[Callable] = None) -> Dict[str, bytes]:
        wanted = set(paths)
        out: Dict[str, bytes] = {}
        bar = progress(total=len(wanted)) if progress else None
        if self.kind == "dir":
            for p in paths:
                with open(os.path.join(self.source, p), "rb") as fh:
                    out[p] = fh.read()
                bar and bar.update(1)
        elif self.kind == "zip":
            with zipfile.ZipFile(self.source) as z:
                for p in paths:
                    out[p] = z.read(p)
                    bar and bar.update(1)
        else:  # one sequential pass: random access into a gzip stream would re-decompress from the start
            with tarfile.open(self.source) as tar:
                for m in tar:
                    if m.isfile() and m.name in wanted:
                        out[m.name] = tar.extractfile(m).read()
                        bar and bar.update(1)
        bar and bar.close()
        return out


_TREES: Dict[Tuple[str, float], _Tree] = {}


def _tree(source: str) -> _Tree:
    key = (os.path.abspath(source), os.path.getmtime(source))
    if key not in _TREES:
        _TREES.clear()
        _TREES[key] = _Tree(source)
    return _TREES[key]


def folder_splits(source: str) -> List[str]:
    """Split folders (``train``, ``val``, ``test``, ...) holding ``<class>/<image>`` files."""
    return _tree(source).splits()


def eval_split(source: str) -> str:
    """The evaluation split of a local tree: ``val`` if present, else ``validation``, else ``test``."""
    present = folder_splits(source)
    for s in EVAL_SPLITS:
        if s in present:
            return s
    raise DataNotFoundError(f"{source}: no val/ or test/ folder of <class>/<image> files (found: "
                            f"{', '.join(present) or 'none'}); " + folder_hint())


def count_images(source: str, split: str) -> int:
    """Number of images in a split of a local tree, without decoding them."""
    return sum(len(v) for v in _tree(source).split_members(split).values())


# ---------------------------------------------------------------- class names


def human_names(folders: Sequence[str]) -> Tuple[str, ...]:
    """WordNet ids (``n01440764``) -> ImageNet names (``tench``); other folder names unchanged."""
    from jaxcam.models.classes import imagenet_names, imagenet_wnids

    lookup = dict(zip(imagenet_wnids(), imagenet_names()))
    return tuple(lookup.get(f, f) for f in folders)


# ---------------------------------------------------------------- decoding


def decode(data: bytes, size: Optional[int] = None, mode: str = "RGB") -> np.ndarray:
    """uint8 RGB (H, W, 3) (``mode="L"``: gray (H, W), for masks); with `size`: shorter side resized to
    `size`, centre-cropped square."""
    from jaxcam.images import open_image

    with open_image(io.BytesIO(data)) as im:  # a decompression bomb raises instead of being decoded
        im = im.convert(mode)
        if size is not None and im.size != (size, size):
            w, h = im.size
            s = size / min(w, h)
            nw, nh = max(size, round(w * s)), max(size, round(h * s))
            im = im.resize((nw, nh), Image.BILINEAR)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, np.uint8)


def load_dataset(source: str, split: str, size: Optional[int] = None, tfds_data_dir: Optional[str] = None,
                 download: bool = True, progress: Optional[Callable] = None, limit: Optional[int] = None,
                 seed: int = 0, masks: Optional[str] = None) -> Dataset:
    """One split of a local tree or a tfds data set as a `Dataset`.

    Args:
      source: a directory / .tar(.gz) / .zip of ``split/<class>/<image>``, or a tfds name
        (``cifar10``, ``imagenette/160px``; ``tfds:`` prefix optional).
      split: ``train``, ``val``, ``test`` (tfds: ``val`` means ``validation``).
      size: square size for splits of mixed sizes (see module doc); None keeps same-size images
        as they are and raises on mixed sizes.
      download: tfds only: download and prepare when missing (offline: fails at once, see
        `load_tfds`).
      progress: a tqdm-like factory (``total=``) for the decoding bar.
      limit: at most this many images (a seeded random subset, in the original order).
      masks: a folder of PNG masks, one per image at the image's path from the split folder on
        (``<masks>/<split>/<class>/<name>.png`` for ``<split>/<class>/<name>.jpg``), each of its image's
        height and width (`load_masks`); they become ``Dataset.masks``. Local trees only.
    """
    if not is_local(source):
        if masks is not None:
            raise MaskError(f"masks are matched to images by their paths in a local image-folder tree; "
                            f"{source!r} is a tensorflow-datasets name")
        return load_tfds(source, split, size, tfds_data_dir, download, progress, limit, seed)
    if not os.path.exists(source):
        raise DataNotFoundError(f"data source {source!r} does not exist; " + folder_hint())
    tree = _tree(source)
    by_class = tree.split_members(split)
    if not by_class:
        raise DataNotFoundError(f"{source}: no images under {split}/<class>/ (splits found: "
                                f"{', '.join(tree.splits()) or 'none'}); " + folder_hint())
    folders = tuple(sorted(by_class))
    items = [(path, label) for label, f in enumerate(folders) for path in sorted(by_class[f])]
    if limit and limit < len(items):
        keep = np.sort(np.random.default_rng(seed).permutation(len(items))[:limit])
        items = [items[i] for i in keep]
    if masks is not None:
        mask_files(masks, [p for p, _ in items])  # before reading anything
    contents = tree.read_many([p for p, _ in items], progress)
    items, images = _readable(items, contents, source)
    shapes = [im.shape[:2] for im in images]
    resize = len({im.shape for im in images}) > 1
    if resize:
        if size is None:
            shapes = sorted({im.shape for im in images})
            raise ValueError(f"{source}/{split}: images of different sizes ({shapes[0]}, {shapes[-1]}, ...); "
                             "give a size to bring them to one")
        images = [decode(contents[p], size) for p, _ in items]
    found = None if masks is None else load_masks(masks, [p for p, _ in items], shapes, size if resize else None)
    return Dataset(np.stack(images), np.asarray([l for _, l in items], np.int32), human_names(folders), found)


class MaskError(ValueError):
    """A mask folder that does not fit the images (missing masks, other sizes); the message says which."""


def mask_path(image_path: str) -> str:
    """Where an image's mask lies under the mask folder: its path from the split folder on, as .png
    (``top/train/cat/1.jpg`` -> ``train/cat/1.png``)."""
    split, folder, name = image_path.strip("/").split("/")[-3:]
    return f"{split}/{folder}/{os.path.splitext(name)[0]}.png"


def mask_files(folder: str, image_paths: Sequence[str]) -> List[str]:
    """The mask file of each image (`mask_path` under `folder`); `MaskError` (one line) when the folder
    or any mask is missing, naming the first and how many."""
    if not os.path.isdir(folder):
        raise MaskError(f"no such directory {folder!r}; pass a folder of PNG masks at the training images' "
                        "paths (<split>/<class>/<name>.png)")
    wanted = [os.path.join(folder, *mask_path(p).split("/")) for p in image_paths]
    missing = [i for i, w in enumerate(wanted) if not os.path.isfile(w)]
    if missing:
        i = missing[0]
        raise MaskError(f"no mask for {len(missing)} of {len(wanted)} images, e.g. {image_paths[i]} (expected "
                        f"{wanted[i]}); every image needs a PNG mask at its path under {folder}")
    return wanted


def load_masks(folder: str, image_paths: Sequence[str], shapes: Sequence[Tuple[int, int]],
               size: Optional[int] = None) -> np.ndarray:
    """uint8 (N, H, W) masks of the images at `image_paths` (member paths of a tree) from the PNGs of
    `folder` (`mask_files`); each must have its image's (height, width) of `shapes`; `size`: brought to
    it as the images were (shorter side, centre crop). Raises `MaskError` (one line)."""
    masks = []
    for path, want, shape in zip(image_paths, mask_files(folder, image_paths), shapes):
        with open(want, "rb") as fh:
            data = fh.read()
        mask = decode(data, None, "L")
        if mask.shape != tuple(shape):
            raise MaskError(f"mask {want} is {mask.shape[0]}x{mask.shape[1]} but its image {path} is "
                            f"{shape[0]}x{shape[1]} (height x width); a mask must have its image's size")
        masks.append(decode(data, size, "L") if size else mask)
    return np.stack(masks)


def _readable(items, contents, source):
    """(items, decoded images) without the unreadable files (truncated, not images, decompression
    bombs): each is reported in one ``skipped <path>: <reason>`` line on stderr, the rest are kept."""
    import sys

    from jaxcam.images import UNREADABLE, unreadable_reason

    kept, images = [], []
    for path, label in items:
        try:
            images.append(decode(contents[path]))
        except UNREADABLE as err:
            print(f"skipped {path}: {unreadable_reason(err)}", file=sys.stderr)
            continue
        kept.append((path, label))
    if items and not kept:
        raise DataNotFoundError(f"{source}: none of the {len(items)} images could be read")
    return kept, images


# ---------------------------------------------------------------- tensorflow-datasets


def network_available(timeout: float = PROBE_TIMEOUT) -> Tuple[bool, str]:
    """Can we reach the tfds download servers (honours http(s)_proxy)? (ok, reason)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(NETWORK_PROBE, method="HEAD"), timeout=timeout):
            return True, ""
    except urllib.error.HTTPError:
        return True, ""  # the server answered
    except (urllib.error.URLError, OSError, socket.timeout) as e:
        return False, str(getattr(e, "reason", e))


def load_tfds(name: str, split: str, size: Optional[int] = None, data_dir: Optional[str] = None,
              download: bool = True, progress: Optional[Callable] = None, limit: Optional[int] = None,
              seed: int = 0) -> Dataset:
    """One split of a tensorflow-datasets data set (prepared copy, else download + prepare).

    Offline (or `download` False) with no prepared copy: `DataNotFoundError` at once (one probe
    of a few seconds at most), naming the local-folder alternative; tfds' own download would retry
    for minutes.
    """
    name = name[5:] if name.startswith("tfds:") else name
    tfds_split = "validation" if split == "val" else split
    try:
        import tensorflow_datasets as tfds
    except ImportError:  # pragma: no cover - a dependency
        raise DataNotFoundError(f"tensorflow-datasets is not installed, so {name!r} cannot be read; "
                                + folder_hint()) from None
    try:
        source = tfds.data_source(name, split=tfds_split, download=False, data_dir=data_dir)
    except Exception as first:  # noqa: BLE001 - tfds raises many types for "not prepared"
        if isinstance(first, (ValueError, KeyError)) and "split" in str(first).lower():
            raise DataNotFoundError(f"tfds {name!r} has no split {tfds_split!r} ({first}); " + folder_hint()) from None
        if not download:
            raise DataNotFoundError(f"tfds {name!r} is not prepared in {data_dir or '~/tensorflow_datasets'} and "
                                    "--no-download was given; " + folder_hint()) from None
        ok, reason = network_available()
        if not ok:
            raise DataNotFoundError(f"tfds {name!r} is not prepared here and the network is unreachable "
                                    f"({reason}); " + folder_hint()) from None
        try:
            source = tfds.data_source(name, split=tfds_split, download=True, data_dir=data_dir)
        except Exception as e:  # noqa: BLE001
            raise DataNotFoundError(f"tfds could not download/prepare {name!r} ({type(e).__name__}: "
                                    f"{str(e).splitlines()[0][:200] if str(e) else ''}); preparing some tfds "
                                    "data sets needs TensorFlow (pip install tensorflow); or " + folder_hint()) from None
    n = len(source)
    idx = list(range(n))
    if limit and limit < n:
        idx = sorted(np.random.default_rng(seed).permutation(n)[:limit].tolist())
    bar = progress(total=len(idx)) if progress else None
    images, labels = [], []
    for start in range(0, len(idx), 1024):
        for r in source.__getitems__(idx[start:start + 1024]):
            images.append(np.asarray(r["image"], np.uint8))
            labels.append(int(r["label"]))
        bar and bar.update(min(1024, len(idx) - start))
    bar and bar.close()
    if len({im.shape for im in images}) > 1 or (size is not None and images[0].shape[:2] != (size, size)):
        if len({im.shape for im in images}) > 1:
            target = size or 224
            images = [_fit(im, target) for im in images]
    images = [np.repeat(im, 3, -1) if im.shape[-1] == 1 else im for im in images]
    try:
        names = tuple(source.dataset_info.features["label"].names)
    except Exception:  # noqa: BLE001
        names = CIFAR10_CLASSES if name == "cifar10" else tuple(str(i) for i in range(max(labels) + 1))
    return Dataset(np.stack(images), np.asarray(labels, np.int32), human_names(names))


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return decode(buf.getvalue(), size)
