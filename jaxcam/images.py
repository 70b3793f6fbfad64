"""Image files in, uint8 arrays out: files, folders and globs; unreadable files reported, not fatal.

    paths, missing = jaxcam.images.expand(["photos/", "extra/*.png", "cat.jpg"])
    for item in jaxcam.images.load_all(paths, size=224):
        if item.error: print(item.path, item.error)
        else: use(item.image)          # (224, 224, 3) uint8: shorter side resized, centre crop

`sample_photos()` lists the public-domain photos shipped with jaxcam (a cat, a cup of coffee,
an astronaut, a rocket; from scikit-image's data, resized to at most 512 px).
"""
from __future__ import annotations

import dataclasses
import glob
import os
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
PHOTOS_DIR = Path(__file__).parent / "data" / "photos"


@dataclasses.dataclass
class Loaded:
    """One input: `image` (H, W, 3) uint8 when it could be read, else `error` says why."""

    path: str
    image: Optional[np.ndarray] = None
    error: Optional[str] = None
    label: Optional[str] = None  # the true class when known (e.g. a dataset's class folder)


def sample_photos() -> List[str]:
    """Paths of the photos shipped in ``jaxcam/data/photos`` (sorted)."""
    return sorted(str(p) for p in PHOTOS_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def expand(inputs: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Files, folders (searched recursively for image suffixes) and globs -> (paths, unmatched inputs).

    A file named explicitly is kept whatever its suffix (reading it may still fail later); folders
    and globs keep only files with an image suffix. Duplicates are dropped, order is kept.
    """
    paths, unmatched = [], []
    for spec in inputs:
        spec = os.path.expanduser(str(spec))
        if os.path.isdir(spec):
            found = sorted(str(p) for p in Path(spec).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif os.path.isfile(spec):
            found = [spec]
        elif glob.has_magic(spec):
            found = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            found = [p for p in found if Path(p).suffix.lower() in IMAGE_SUFFIXES]
        else:
            found = []
        if not found:
            unmatched.append(spec)
        paths.extend(found)
    return list(dict.fromkeys(paths)), unmatched


def fit(image: Image.Image, size: Optional[int], crop_fraction: float = 1.0) -> np.ndarray:
    """PIL image -> RGB uint8 (size, size, 3): shorter side resized to size / crop_fraction, centre crop.

    `size` None keeps the image as it is. crop_fraction 224 / 256 is the usual ImageNet evaluation crop.
    """
    image = image.convert("RGB")
    if size is not None:
        w, h = image.size
        scale = round(size / crop_fraction) / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, np.uint8)


def load(path: str, size: Optional[int] = None) -> Loaded:
    """Read one image file; never raises for a bad file (the reason is in ``.error``)."""
    try:
        with Image.open(path) as img:
            img.load()
            return Loaded(path, fit(img, size))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        reason = "not an image (or an unsupported format)" if isinstance(err, UnidentifiedImageError) else str(err)
        return Loaded(path, error=reason)


def load_all(paths: Iterable[str], size: Optional[int] = None) -> Iterator[Loaded]:
    """Lazily `load` each path (one file in memory at a time)."""
    for path in paths:
        yield load(path, size)
