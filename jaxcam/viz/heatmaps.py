"""Colour CAM maps and blend them onto images (host-side NumPy + matplotlib colormaps).

    heat = jaxcam.heatmap(cams)                      # (N, H, W) in [0, 1] -> (N, H, W, 3) uint8
    rgb = jaxcam.overlay(images, cams, "jet", 0.5)   # -> (N, H, W, 3) uint8

Both accept one image ``(H, W, 3)`` / map ``(H, W)`` or a batch ``(N, H, W, 3)`` / ``(N, H, W)``.
A map whose size differs from the image's is resized (bilinear) to the image.
"""
from __future__ import annotations

import difflib

import matplotlib
import numpy as np
from PIL import Image


def check_colormap(name: str):
    """The matplotlib colormap called `name`; a ValueError with the closest names otherwise."""
    try:
        return matplotlib.colormaps[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(matplotlib.colormaps), n=5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown colormap {name!r}: use a matplotlib colormap name such as 'jet', 'viridis', 'inferno'.{hint}"
        ) from None


def as_uint8_images(images) -> np.ndarray:
    """uint8 images, or floats in [0, 1], (..., H, W, 3) -> uint8 (..., H, W, 3)."""
    images = np.asarray(images)
    if images.ndim not in (3, 4) or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"images must be (H, W, 3) or (N, H, W, 3) RGB, got shape {images.shape}")
    if images.shape[-1] == 4:
        images = images[..., :3]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.floating) and not np.issubdtype(images.dtype, np.integer):
        raise TypeError(f"images must be uint8 or floats in [0, 1], got dtype {images.dtype}")
    if np.issubdtype(images.dtype, np.floating):
        images = np.nan_to_num(images.astype(np.float32)) * 255.0
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def _resize_maps(cams: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, h, w) float maps -> (N, height, width), bilinear."""
    if cams.shape[1:] == (height, width):
        return cams
    return np.stack(
        [np.asarray(Image.fromarray(c).resize((width, height), Image.BILINEAR)) for c in cams.astype(np.float32)]
    )


def heatmap(cam, colormap: str = "jet") -> np.ndarray:
    """Maps in [0, 1], (H, W) or (N, H, W) -> colored uint8 RGB (..., H, W, 3). NaN counts as 0."""
    cmap = check_colormap(colormap)
    cam = np.nan_to_num(np.asarray(cam, np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    if cam.ndim not in (2, 3):
        raise ValueError(f"cam must be (H, W) or (N, H, W), got shape {cam.shape}")
    rgba = cmap(np.clip(cam, 0.0, 1.0))
    return np.rint(rgba[..., :3] * 255.0).astype(np.uint8)


def overlay(image, cam, colormap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """Blend colored CAM maps onto images: ``(1 - alpha) * image + alpha * heatmap(cam)``.

    Args:
      image: uint8 RGB, or floats in [0, 1]; (H, W, 3) or a batch (N, H, W, 3). Grayscale (..., 1)
        and RGBA are accepted.
      cam: maps in [0, 1]; (H, W) or (N, H, W) (JAX or NumPy). Resized to the image size if needed.
      colormap: a matplotlib colormap name ("jet", "viridis", "inferno", ...).
      alpha: weight of the heatmap, in [0, 1].

    Returns:
      uint8 RGB (H, W, 3), or (N, H, W, 3) when either argument is a batch.

    Example:
      >>> import numpy as np, jaxcam
      >>> img = np.zeros((32, 32, 3), np.uint8)
      >>> jaxcam.overlay(img, np.ones((8, 8)), alpha=1.0)[0, 0]   # jet(1.0): dark red
      array([128,   0,   0], dtype=uint8)
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    images = as_uint8_images(image)
    cams = np.asarray(cam, np.float32)
    if cams.ndim not in (2, 3):
        raise ValueError(f"cam must be (H, W) or (N, H, W), got shape {cams.shape}")
    batched = images.ndim == 4 or cams.ndim == 3
    images = images if images.ndim == 4 else images[None]
    cams = cams if cams.ndim == 3 else cams[None]
    if len(images) != len(cams) and 1 not in (len(images), len(cams)):
        raise ValueError(f"{len(images)} images but {len(cams)} maps: pass one map per image")
    n = max(len(images), len(cams))
    images = np.broadcast_to(images, (n, *images.shape[1:]))
    cams = np.broadcast_to(_resize_maps(cams, *images.shape[1:3]), (n, *images.shape[1:3]))
    blend = (1.0 - alpha) * images.astype(np.float32) + alpha * heatmap(cams, colormap).astype(np.float32)
    out = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    return out if batched else out[0]
