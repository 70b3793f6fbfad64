"""Figures of explained images: panels of one result (original | heatmap | overlay), one row per
image saved side by side, and a grid of images x methods. Written atomically (`jaxcam.jobs`).
"""
from __future__ import annotations

import functools
import os
from typing import List, Optional

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxcam import jobs
from jaxcam.methods.guided import deprocess_gradients
from jaxcam.viz.heatmaps import heatmap, overlay


# The figures are composed with PIL, not drawn by matplotlib: the same 1050 x 390 triptych took ~0.45 s of
# CPU per image through matplotlib's savefig (more than explaining it with most methods) and ~0.02 s here.
PANEL = 350  # pixels per panel column of a figure (a 3-panel figure is 1050 x 390)
HEIGHT = 390
CELL = 220  # pixels per cell of grid.png


@functools.lru_cache(maxsize=None)
def _font(size: int):
    """matplotlib's DejaVu Sans (always installed with it) at `size` px; PIL's own font if it cannot be read."""
    try:
        return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), size)
    except OSError:
        return ImageFont.load_default()


def _rgb8(panel) -> np.ndarray:
    a = np.asarray(panel)
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float32), 0.0, 1.0) * 255).round().astype(np.uint8)
    if a.ndim == 2 or a.shape[-1] == 1:
        a = np.repeat(a.reshape(a.shape[:2] + (1,)), 3, axis=-1)
    return a[..., :3]


def _fitted(panel, width: int, height: int) -> Image.Image:
    """The panel scaled to fit width x height, aspect kept: nearest when enlarging (a 32 px input keeps its
    pixels visible), area averaging when shrinking."""
    img = Image.fromarray(_rgb8(panel))
    scale = min(width / img.width, height / img.height)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.NEAREST if scale >= 1 else Image.BOX)


def _lines(draw, text: str, font, width: int) -> list:
    """`text` broken at ' | ' into lines no wider than `width` (a part longer than that stays whole)."""
    lines = []
    for part in text.split(" | "):
        if lines and draw.textlength(lines[-1] + " | " + part, font=font) <= width:
            lines[-1] += " | " + part
        else:
            lines.append(part)
    return lines


def save_figure(path: str, shown: list, heading: str) -> None:
    """Write panels side by side under their titles and a heading to `path` (PNG, atomically)."""
    canvas = Image.new("RGB", (PANEL * len(shown), HEIGHT), "white")
    draw = ImageDraw.Draw(canvas)
    big, small = _font(13), _font(12)
    lines = _lines(draw, heading, big, canvas.width - 16)
    for i, line in enumerate(lines):
        draw.text((canvas.width / 2, 6 + 17 * i), line, fill="black", font=big, anchor="ma")
    top = 12 + 17 * len(lines)
    for c, (name, panel) in enumerate(shown):
        draw.text((PANEL * c + PANEL / 2, top), name, fill="black", font=small, anchor="ma")
        area = HEIGHT - top - 24
        img = _fitted(panel, PANEL - 12, area)
        canvas.paste(img, (PANEL * c + (PANEL - img.width) // 2, top + 18 + (area - img.height) // 2))
    with jobs.atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def save_grid(path: str, rows: list, methods: List[str]) -> None:
    """rows: (name, image, {method: overlay}) -> one figure, images x (original + methods)."""
    titles = ["original"] + list(methods)
    left, top = 20, 20
    canvas = Image.new("RGB", (left + CELL * len(titles), top + CELL * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(11)
    for c, name in enumerate(titles):
        draw.text((left + CELL * c + CELL / 2, 4), name, fill="black", font=font, anchor="ma")
    for r, (name, image, overlays) in enumerate(rows):
        for c, panel in enumerate([image] + [overlays[m] for m in methods]):
            img = _fitted(panel, CELL - 8, CELL - 8)
            canvas.paste(img, (left + CELL * c + (CELL - img.width) // 2, top + CELL * r + (CELL - img.height) // 2))
        label = Image.new("RGB", (CELL, left - 4), "white")
        ImageDraw.Draw(label).text((CELL / 2, 2), name, fill="black", font=font, anchor="ma")
        canvas.paste(label.rotate(90, expand=True), (0, top + CELL * r))
    with jobs.atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def title(model, method: str, probs: np.ndarray, target: Optional[int], label: Optional[str]) -> str:
    """'<method>: true <label> | predicted <class> (p) | explained <class> (p)'."""
    pred = int(np.argmax(probs))
    parts = [f"true {label}"] if label is not None else []
    parts.append(f"predicted {model.class_name(pred)} ({probs[pred]:.2f})")
    if label is not None:
        names = [n.lower() for n in model.info.class_names]
        if label.lower() in names:
            parts[0] += f" ({probs[names.index(label.lower())]:.2f})"
    if target is not None:
        parts.append(f"explained {model.class_name(target)} ({probs[target]:.2f})")
    return f"{method}: " + " | ".join(parts)


def panels(output: str, image: np.ndarray, result, colormap: str, alpha: float) -> list:
    """[(panel title, RGB image)] for one image's result of a method with the given output kind."""
    if output == "map":
        return [("original", image), ("heatmap", heatmap(result, colormap)),
                ("overlay", overlay(image, result, colormap, alpha))]
    if output == "attribution":
        shown = np.asarray(deprocess_gradients(result[None])[0])
        magnitude = np.abs(np.asarray(result)).sum(axis=-1)
        magnitude = (magnitude - magnitude.min()) / (np.ptp(magnitude) or 1.0)
        return [("original", image), ("attribution", (shown * 255).round().astype(np.uint8)),
                ("|attribution|", overlay(image, magnitude, colormap, alpha))]
    return [("original", image)] + [(name, overlay(image, m, colormap, alpha)) for name, m in result.items()]
