"""FullGrad (Srinivas & Fleuret, NeurIPS 2019): input-gradient plus every bias's gradient.

With y the target score, x the input, and for every layer l with a bias b_l (convolutions with a bias,
and BatchNorm, whose effective bias is beta - mu * gamma / sqrt(var + eps)) g_l = dy/d(output of l):

    map = psi(|dy/dx * x|) + sum_l sum_c psi(|b_l,c * g_l,c|)

psi: per image and channel, (v - min v) / (max v + 1e-7) and a bilinear resize to the input size.
No layer is chosen: every bias of the network contributes (`layer` is accepted and ignored).
The gradients come from one backward pass: a zero "probe" is added to each bias layer's output and
y is differentiated with respect to the probes.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcam._src import dtypes
from jaxcam._src import scores as targets_lib
from jaxcam._src.kinds import as_model
from jaxcam._src.request import check_input, spatial_axes
from jaxcam._src.runner import run
from jaxcam._src.split import kind_of, layer_shapes
from jaxcam import nn as jnn
from jaxcam.methods.registry import AUG_SMOOTH, NORMALIZE, SCORE, method


SCALE_EPS = 1e-7  # pytorch-grad-cam's (and the paper code's) per-channel scaling


BATCH_NORMS = (nn.BatchNorm, jnn.BatchNorm)  # flax's and jaxcam.nn's (same variables and epsilon)


def _biased(module) -> bool:
    return isinstance(module, BATCH_NORMS) or (isinstance(module, nn.Conv) and module.use_bias)


def _effective_bias(module, out_dtype):
    if isinstance(module, BATCH_NORMS):
        params, stats = module.variables["params"], module.variables["batch_stats"]
        scale = params.get("scale", 1.0)
        return params.get("bias", 0.0) - stats["mean"] * scale / jnp.sqrt(stats["var"] + module.epsilon)
    return module.variables["params"]["bias"].astype(out_dtype)


def bias_outputs(model, x, probes=None):
    """``(scores, {path: (output, effective bias)})`` over every Conv-with-bias and BatchNorm called in
    model(x), with ``probes[path]`` added to that layer's output when given. Other model kinds provide
    their own ``bias_outputs`` (`jaxcam.nnx`); a kind without one cannot run FullGrad."""
    x = dtypes.to_compute(model.info, x)  # outputs back in float32 below (a bfloat16 model)
    kind = kind_of(model)
    if kind is not None:
        if not hasattr(kind, "bias_outputs"):
            raise ValueError(NO_BIAS_LAYERS.format(kind=type(kind).__name__))
        return dtypes.from_compute(model.info, kind.bias_outputs(model.variables, x, probes))
    found = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and _biased(context.module):
            path = "/".join(context.module.path)
            found[path] = (out, _effective_bias(context.module, out.dtype))
            if probes is not None and path in probes:
                out = out + probes[path].astype(out.dtype)
        return out

    with nn.intercept_methods(record):
        scores = model.module.apply(model.variables, x)
    return dtypes.from_compute(model.info, (scores, found))


NO_BIAS_LAYERS = ("fullgrad reads every bias layer of the model, which a model of kind {kind} (e.g. "
                  "jaxcam.Model.from_functions) does not expose; use jaxcam.grad_cam or another one-layer method")


def scale_channels(v, size):
    """psi: (N, h, w, C) -> (N, H, W, C): per image and channel (v - min) / (max + 1e-7), bilinear resize.

    Any spatial rank ((N, l, C), (N, d, h, w, C)); `size` has one entry per spatial axis."""
    space = spatial_axes(v)
    v = v - v.min(axis=space, keepdims=True)
    v = v / (v.max(axis=space, keepdims=True) + SCALE_EPS)
    if v.shape[1:-1] == tuple(size):
        return v
    return jax.image.resize(v, (v.shape[0], *size, v.shape[-1]), method="bilinear", antialias=False)


def fullgrad_map(split, x, targets, score: str = "logit"):
    """(N, H, W): psi(|dy/dx x|) + sum over bias layers and channels of psi(|b g|), at input size."""
    model = split.model
    logits, layers = bias_outputs(model, x)
    biases = {path: bias for path, (_, bias) in layers.items()}
    probes = {path: jnp.zeros_like(out) for path, (out, _) in layers.items()}
    classes = targets_lib.resolve_classes(targets, logits)

    def score_fn(inputs, probes):
        logits, _ = bias_outputs(model, inputs, probes)
        return targets_lib.target_score(logits, targets, classes, score).sum()

    g_x, g_layers = jax.grad(score_fn, argnums=(0, 1))(x, probes)
    size = x.shape[1:-1]
    total = scale_channels(jnp.abs(g_x * x), size).sum(-1)
    for path, g in g_layers.items():
        total = total + scale_channels(jnp.abs(biases[path] * g), size).sum(-1)
    return total


fullgrad_map.maps_pixels = True  # its map is made at the input's resolution (`layer` only runs the split)

FULLGRAD_OPTIONS = (SCORE, AUG_SMOOTH, NORMALIZE)


@method(formula='FullGrad: input-gradient x input plus every bias-gradient x bias, each channel scaled to [0, 1]. (Srinivas & Fleuret, NeurIPS 2019)',
        family="gradient", options=FULLGRAD_OPTIONS, aliases=("full_grad",), paper="Srinivas & Fleuret, NeurIPS 2019",
        pgc="FullGrad")
def fullgrad(model, x, layer=None, targets=None, *, score="logit", aug_smooth=False, normalize=True):
    """FullGrad: input-gradient x input plus every bias-gradient x bias, each channel scaled to [0, 1].

    Args:
      model, x, targets, score, aug_smooth: as `jaxcam.hires_cam`.
      layer: ignored (every layer with a bias contributes); accepted for a uniform signature.

    Returns:
      (N, H, W) float32 maps in [0, 1].
    """
    model = as_model(model)
    kind = kind_of(model)
    if kind is not None and not hasattr(kind, "bias_outputs"):
        raise ValueError(NO_BIAS_LAYERS.format(kind=type(kind).__name__))
    return run(fullgrad_map, model, x, _any_layer(model, x), targets, "none", score=score, aug_smooth=aug_smooth,
               normalize=normalize)


def _any_layer(model, x) -> str:
    """A layer for the runner's checks (FullGrad reads every bias layer, not one): the model's default layer,
    or else any layer with the input's spatial rank."""
    if model.info.default_layer is not None:
        return model.info.default_layer
    x = check_input(x)
    try:
        shapes = layer_shapes(model, x.shape, x.dtype)
    except Exception:
        return None  # the runner's own check says what is wrong with x
    return next((p for p, s in shapes.items() if p and len(s) == x.ndim), None)
