"""Figures for maps of 1-D signals and 3-D volumes (2-D images: `jaxcam.overlay`).

    signal_figure(signal, cam)    the signal as a line, the map as a coloured band under it
    volume_figure(volume, cam)    a row of slices along one axis, the map blended over each
"""
from __future__ import annotations

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def signal_figure(signal, cam, *, cmap: str = "jet", title: str = None, ax=None):
    """A 1-D signal (L,) or (L, C) drawn as lines over a band coloured by its map (L,) in [0, 1].

    Returns the matplotlib Figure (save it with ``fig.savefig(path)``).
    """
    signal = np.asarray(signal, np.float32)
    cam = np.asarray(cam, np.float32)
    signal = signal[:, None] if signal.ndim == 1 else signal
    if signal.ndim != 2 or cam.ndim != 1 or cam.shape[0] != signal.shape[0]:
        raise ValueError(
            f"signal_figure expects a signal (L,) or (L, C) and its map (L,); got {signal.shape} and {cam.shape}"
        )
    plt = _pyplot()
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(8, 2.5))
    lo, hi = float(signal.min()), float(signal.max())
    hi = hi if hi > lo else lo + 1.0
    ax.imshow(cam[None], aspect="auto", cmap=cmap, vmin=0.0, vmax=1.0, alpha=0.45,
              extent=(-0.5, len(cam) - 0.5, lo, hi), origin="lower")
    ax.plot(np.arange(len(signal)), signal, color="black", linewidth=1.0)
    ax.set_xlim(-0.5, len(cam) - 0.5)
    ax.set_ylim(lo, hi)
    if title:
        ax.set_title(title)
    return fig


def volume_figure(volume, cam, *, axis: int = 0, slices: int = 6, alpha: float = 0.5, cmap: str = "jet",
                  title: str = None):
    """A volume (D, H, W) or (D, H, W, C) and its map (D, H, W) as `slices` evenly spaced slices along
    `axis`, each the (channel-mean, min-max scaled) volume slice in grey with the map blended over it."""
    volume = np.asarray(volume, np.float32)
    cam = np.asarray(cam, np.float32)
    volume = volume.mean(axis=-1) if volume.ndim == 4 else volume
    if volume.ndim != 3 or cam.shape != volume.shape:
        raise ValueError(f"volume_figure expects a volume (D, H, W[, C]) and its map (D, H, W); got {volume.shape}, {cam.shape}")
    span = volume.max() - volume.min()
    grey = (volume - volume.min()) / (span if span > 0 else 1.0)
    n = volume.shape[axis]
    index = np.unique(np.linspace(0, n - 1, min(slices, n)).round().astype(int))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(index), figsize=(2.2 * len(index), 2.4), squeeze=False)
    colors = plt.get_cmap(cmap)
    for ax, i in zip(axes[0], index):
        g, c = np.take(grey, i, axis=axis), np.take(cam, i, axis=axis)
        ax.imshow((1 - alpha) * np.repeat(g[..., None], 3, -1) + alpha * colors(c)[..., :3])
        ax.set_title(f"{'DHW'[axis]}={i}", fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig
