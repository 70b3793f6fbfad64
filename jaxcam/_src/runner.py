"""Run a method core under jit: validate once in Python, then one compiled call per configuration.

A method core is a pure function ``core(split, x, targets, **options) -> raw maps (N, h, w)`` that
reads like its paper's formula; `run` does the rest (validation, jit, final activation, min-max,
resize to the input size).
"""
from __future__ import annotations

import functools

import jax

from jaxcam._src import maps
from jaxcam._src.request import make_request
from jaxcam._src.split import Split


def run(core, model, x, layer, targets, final_activation: str = "relu", **options):
    """Validate the call and run `core` jitted; returns (N, H, W) float32 maps in [0, 1]."""
    maps.check_final_activation(final_activation)
    req = make_request(model, x, layer, targets)
    target_fn = req.targets if callable(req.targets) else None
    classes = None if target_fn is not None else req.targets
    return _run_jit(
        core, req.model, req.x, classes, req.layer, target_fn, final_activation, tuple(sorted(options.items()))
    )


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6, 7))
def _run_jit(core, model, x, classes, layer, target_fn, final_activation, options):
    split = Split(model, layer)
    targets = target_fn if target_fn is not None else classes
    cam = core(split, x, targets, **dict(options))
    return maps.finish(cam, x.shape[1:3], final_activation)
