"""Blank maps are never silent: a constant map (returned as zeros after min-max) warns, naming the cause.

A map is constant for an image when
- the layer's grid has one cell at this input size (nothing to localize);
- an ablation ``window`` covers the whole grid (one window position: every location scores the same);
- the target has no positive evidence at the layer (everything <= 0 before the final ReLU) or a zero
  gradient there.

`check` runs after a top-level call (concrete maps; inside a user's jit/vmap/grad nothing is checked) and
warns with `BlankMapWarning`. The message depends only on the configuration (method, layer, grid, cause),
so Python's default warning filter shows it once per call site and configuration, not once per image.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import os
import sys
import warnings
from typing import Optional, Sequence

import jax
import numpy as np


class BlankMapWarning(UserWarning):
    """A method returned a constant (blank) map for at least one image."""


# (name, outermost) of the registry method being run, set by its public function: the cores' own names
# are internal, and a method run by another one (SESS's base on every patch) is not checked itself.
METHOD = contextvars.ContextVar("jaxcam_method", default=None)
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def running(name: str):
    """Within the block, `name` is the registry method being run (the outermost one is checked)."""
    token = METHOD.set((name, METHOD.get() is None))
    try:
        yield
    finally:
        METHOD.reset(token)


def _caller_level() -> int:
    """The stacklevel of the first frame outside the jaxcam package (the user's call), for warnings.warn."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def constant(maps, spatial: int) -> np.ndarray:
    """One bool per map of `maps` (..., *spatial axes): True where the map is constant (max == min)."""
    a = np.asarray(maps)
    flat = a.reshape(-1, math.prod(a.shape[-spatial:]))
    return flat.max(axis=1) == flat.min(axis=1)


def cause(layer: str, grid: Sequence[int], options: dict) -> str:
    """Why a map of `layer` (grid `grid`, the layer's spatial sizes) is constant, and what to do about it."""
    cells = "x".join(str(g) for g in grid)
    if math.prod(grid) == 1:
        return (f"layer {layer!r} has a {cells} grid at this input size, so its map has one value. Use a larger "
                "input (the model's info.input_size), an earlier layer (jaxcam.list_layers(model)), or a method "
                "that maps pixels (guided_backprop)")
    window = options.get("window")
    if isinstance(window, int) and all(window >= g for g in grid):
        return (f"window={window} covers the whole {cells} grid of layer {layer!r}: one window position, so "
                "every location scores the same. Use a smaller window (window=1)")
    return (f"the target has no positive evidence at layer {layer!r} (every value <= 0 before the final ReLU) "
            "or no gradient there. Look at normalize=False (the raw map) or final_activation='none', or "
            "explain another target or layer")


def check(maps, *, method: str, layer: str, grid: Sequence[int], options: Optional[dict] = None) -> int:
    """Warn once if any map of a top-level call is constant; returns how many are (0 inside traces).

    `method` is used when no registry method is running (`METHOD`); the warning points at the first
    caller outside jaxcam."""
    running = METHOD.get()
    if isinstance(maps, jax.core.Tracer) or not grid or (running is not None and not running[1]):
        return 0
    blank = int(constant(maps, len(grid)).sum())
    if blank:
        name = running[0] if running else method
        warnings.warn(f"jaxcam: {name} returned a constant (blank) map: {cause(layer, grid, options or {})}.",
                      BlankMapWarning, stacklevel=_caller_level())
    return blank
