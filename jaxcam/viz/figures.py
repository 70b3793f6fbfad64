"""Figures of explained images: panels of one result (original | heatmap | overlay), one row per
image saved side by side, and a grid of images x methods. Written atomically (`jaxcam.jobs`).
"""
from __future__ import annotations

from typing import List, Optional

import matplotlib
import numpy as np

from jaxcam import jobs
from jaxcam.methods.guided import deprocess_gradients
from jaxcam.viz.heatmaps import heatmap, overlay


def _pyplot():
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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


def save_figure(path: str, shown: list, heading: str) -> None:
    """Write panels side by side to `path` (atomically)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(shown), figsize=(3.5 * len(shown), 3.9), squeeze=False)
    for ax, (name, panel) in zip(axes[0], shown):
        ax.imshow(panel)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(heading, fontsize=10)
    fig.tight_layout()
    with jobs.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def save_grid(path: str, rows: list, methods: List[str]) -> None:
    """rows: (name, image, {method: overlay}) -> one figure, images x (original + methods)."""
    plt = _pyplot()
    cols = 1 + len(methods)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.2 * cols, 2.3 * len(rows)), squeeze=False)
    for r, (name, image, overlays) in enumerate(rows):
        for c, panel in enumerate([image] + [overlays[m] for m in methods]):
            axes[r, c].imshow(panel)
            axes[r, c].axis("off")
            if r == 0:
                axes[r, c].set_title((["original"] + methods)[c], fontsize=8)
        axes[r, 0].text(-0.05, 0.5, name, transform=axes[r, 0].transAxes, rotation=90, ha="right", va="center",
                        fontsize=7)
    fig.tight_layout()
    with jobs.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


