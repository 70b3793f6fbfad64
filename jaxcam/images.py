"""Image files in, uint8 arrays out: files, folders and globs; unreadable files reported, not fatal.

    paths, missing = jaxcam.images.expand(["photos/", "extra/*.png", "cat.jpg"])
    for item in jaxcam.images.load_all(paths, size=224):
        if item.error: print(item.path, item.error)
        else: use(item.image)          # (224, 224, 3) uint8: shorter side resized, centre crop

Files load as a person sees them (`to_rgb`): the EXIF orientation is applied; 16-bit and 32-bit
grayscale is scaled to 8 bits over its full range (65535 -> 255), not clipped; palette, CMYK and
grayscale become RGB; transparent pixels are composited on WHITE (``background=`` to change it).

`sample_photos()` lists the public-domain photos shipped with jaxcam (a cat, a cup of coffee,
an astronaut, a rocket; from scikit-image's data, resized to at most 512 px).
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import warnings
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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


WHITE = (255, 255, 255)


def to_rgb(image: Image.Image, background=WHITE) -> Image.Image:
    """A PIL image as a person sees it, in 8-bit RGB.

    - EXIF orientation applied (a portrait photo stored sideways comes out upright);
    - 16-bit (``I;16*``) and 32-bit (``I``) grayscale scaled from 0..65535 to 0..255; float (``F``)
      images taken as 0..1 when their maximum is <= 1, else as 0..65535 like 16-bit;
    - palette (``P``, with or without transparency), ``1``, ``L``, ``CMYK``, ``YCbCr``, ... converted;
    - alpha (``RGBA``, ``LA``, ``PA``, palette transparency) composited on `background` (white).
    """
    image = ImageOps.exif_transpose(image) or image
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image, np.float64)
        if mode == "F" and values.size and np.nanmax(values) <= 1.0:
            values = values * 255.0
        else:
            values = values / 257.0  # 65535 -> 255
        gray = np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    elif mode == "P":
        image = image.convert("RGB")
    if image.mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        canvas = Image.new("RGBA", image.size, tuple(background) + (255,))
        return Image.alpha_composite(canvas, image).convert("RGB")
    return image.convert("RGB")


def fit(image: Image.Image, size: Optional[int], crop_fraction: float = 1.0, background=WHITE) -> np.ndarray:
    """PIL image -> RGB uint8 (size, size, 3) as seen (`to_rgb`): shorter side resized to
    size / crop_fraction, centre crop.

    `size` None keeps the image as it is. crop_fraction 224 / 256 is the usual ImageNet evaluation crop.
    """
    image = to_rgb(image, background)
    if size is not None:
        w, h = image.size
        scale = round(size / crop_fraction) / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, np.uint8)


# What reading a bad file raises: PIL's errors for truncated, empty, fake and unsupported files, and
# decompression bombs (an image whose header claims more than Image.MAX_IMAGE_PIXELS pixels: PIL raises
# DecompressionBombError above twice the limit and only warns between 1x and 2x; `open_image` makes
# the warning an error too, so such a file is never decoded).
UNREADABLE = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
              Image.DecompressionBombWarning)


@contextlib.contextmanager
def open_image(fp):
    """``PIL.Image.open(fp)`` with its pixels loaded; a decompression bomb raises (never decoded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(fp)
    with img:
        img.load()
        yield img


def unreadable_reason(err: BaseException) -> str:
    """One line saying why a file in `UNREADABLE` could not be read."""
    if isinstance(err, UnidentifiedImageError):
        return "not an image (or an unsupported format)"
    if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"decompression bomb, not decoded: {err}"
    return " ".join(str(err).split()) or type(err).__name__


def load(path: str, size: Optional[int] = None, crop_fraction: float = 1.0, background=WHITE) -> Loaded:
    """Read one image file as a person sees it (see `fit`, `to_rgb`); never raises for a bad file
    (the reason is in ``.error``), including a decompression bomb (see `open_image`)."""
    try:
        with open_image(path) as img:
            return Loaded(path, fit(img, size, crop_fraction, background))
    except UNREADABLE as err:
        return Loaded(path, error=unreadable_reason(err))


def load_all(paths: Iterable[str], size: Optional[int] = None, crop_fraction: float = 1.0) -> Iterator[Loaded]:
    """Lazily `load` each path (one file in memory at a time)."""
    for path in paths:
        yield load(path, size, crop_fraction)
