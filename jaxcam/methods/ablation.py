"""Ablation methods: re-run only the head with parts of the layer's activations replaced.

    ablation_cam          (channel, Desai & Ramaswamy 2020)  w_k  = (y - y^(k)) / y ; map = sum_k w_k A_k
    spatial_ablation_cam  (all channels at one location)      w_ij = (y - y^(ij)) / y ; map_ij = w_ij sum_k A_k,ij
    fast_ablation_cam     (FastAblationCAM)                   map_ij = y - y^(ij), y a softmax probability

The network up to the layer runs once; the head runs once per ablation, vmapped in chunks of
`chunk_size` ablations (``jax.lax.map``), so memory stays bounded for thousands of channels.
A window of `window` x `window` locations moved by `stride` generalizes "one location"; a location
covered by several windows gets the mean of their values.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Optional

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import numpy as np

from jaxcam._src import scores as targets_lib
from jaxcam._src.runner import run
from jaxcam._src.split import Split
from jaxcam import nn as jnn
from jaxcam.methods.registry import (
    AUG_SMOOTH, FINAL_ACTIVATION, NORMALIZE, RESHAPE_TRANSFORM, SCORE, method, Option, renamed,
)


_CHUNK_BYTES = 1 << 28  # ablated activation copies per chunk: 256 MiB


def materialized(a):
    """`a`, computed once into a buffer that the masked heads read.

    Without this XLA:CPU fuses the layer's own producers (the last block's BatchNorm, residual add and
    ReLU at ResNet layer4) into the fusion of every masked copy's head, recomputing them K times: on
    ResNet-50 layer4 location ablation (K = 49) that one fusion took 35 ms of a 57 ms call. A
    conditional whose two branches are the identity keeps the boundary (`jaxcam.nn.materialize`;
    `lax.optimization_barrier` does not survive XLA:CPU's pipeline).
    """
    return jnn.materialize(a)


def auto_chunk_size(num_ablations: int, activation_shape) -> int:
    """Ablations per chunk so that one chunk's activation copies stay near 256 MiB."""
    per_ablation = 4 * int(np.prod(activation_shape))
    return int(max(1, min(num_ablations, _CHUNK_BYTES // max(per_ablation, 1))))


def ablated_scores(split: Split, x, activations, keep, targets, classes, score, value, chunk_size):
    """Target score per image after each ablation: (K, N).

    Args:
      activations: A (N, h, w, C) (or (N, l, C), (N, d, h, w, C)).
      keep: bool (K, ...) masks broadcastable against A's (h, w, C); False entries are set to `value`.
      classes: int (N,) or None (callable targets).

    When the target logit is an affine function of A (the layer feeds only pooling, BatchNorm in
    eval mode, linear layers: e.g. ResNet layer4 -> mean -> fc), y^(k) = y + <dy/dA, A^(k) - A>
    exactly, so the K ablated heads are one contraction of the gradient with the masks
    (`_affine_ablated_logits`). Otherwise the head runs on the masked copies, `chunk_size` at a time.
    """
    only_target_logit = classes is not None and score in ("logit", "sigmoid") and split.can_gather_classes
    if only_target_logit:
        def head(a):
            return split.head(x, a, classes)

        if _is_affine(head, activations):
            return targets_lib.to_score_space(_affine_ablated_logits(head, activations, keep, value), score)

    activations = materialized(activations)

    def score_with(keep_k):
        ablated = jnp.where(keep_k, activations, value)
        if only_target_logit:
            return targets_lib.to_score_space(split.head(x, ablated, classes), score)
        return targets_lib.target_score(split.head(x, ablated), targets, classes, score)

    chunk = chunk_size or auto_chunk_size(keep.shape[0], activations.shape)
    return jax.lax.map(score_with, keep, batch_size=min(chunk, keep.shape[0]))


# Primitives that are affine in an operand: in every operand / in exactly one operand (the others
# constant) / in the first operand only (the others constant: divisor, indices, pad value, BatchNorm's
# statistics and scale, ...).
_AFFINE_ALL = frozenset({
    "add", "sub", "neg", "reduce_sum", "broadcast_in_dim", "reshape", "transpose", "squeeze", "expand_dims",
    "convert_element_type", "slice", "concatenate", "copy", "copy_p", "rev", "add_any",
})
_AFFINE_ONE = frozenset({"mul", "dot_general", "conv_general_dilated"})
_AFFINE_FIRST = frozenset({"div", "gather", "dynamic_slice", "pad", "reduce_precision",
                           "jaxcam_affine"})  # inference BatchNorm, (x - m) * a + b (jaxcam.nn.ops.batch_norm_eval)


def _jaxpr_is_affine(jaxpr, dependent) -> bool:
    """Whether every output of `jaxpr` is affine in the input variables flagged in `dependent`."""
    dep = {v for v, d in zip(jaxpr.invars, dependent) if d}
    for eqn in jaxpr.eqns:
        flags = [not isinstance(v, jex_core.Literal) and v in dep for v in eqn.invars]
        if not any(flags):
            continue
        name = eqn.primitive.name
        sub = eqn.params.get("jaxpr") or eqn.params.get("call_jaxpr") or eqn.params.get("fun_jaxpr")
        if sub is not None and name in ("pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
                                        "custom_vjp_call_jaxpr", "remat", "checkpoint"):
            inner = getattr(sub, "jaxpr", sub)
            n = len(inner.invars)
            if not _jaxpr_is_affine(inner, flags[-n:] if n <= len(flags) else flags):
                return False
        elif name in _AFFINE_ALL:
            pass
        elif name in _AFFINE_ONE:
            if sum(flags) != 1:
                return False
        elif name in _AFFINE_FIRST or name == "select_n":
            if name == "select_n" and flags[0]:
                return False
            if name != "select_n" and any(flags[1:]):
                return False
        else:
            return False
        dep.update(eqn.outvars)
    return True


def _is_affine(fn, a) -> bool:
    """Whether fn(a) is affine in a, by the primitives between a and the output (trace only)."""
    closed = jax.make_jaxpr(fn)(a)
    return _jaxpr_is_affine(closed.jaxpr, [True] * len(closed.jaxpr.invars))


def _affine_ablated_logits(head, activations, keep, value):
    """(K, N) head outputs for an affine head: y + sum over the masked-out entries of G (value - A).

    G[n, m] = d y_n / d A_m (images may interact through an affine head), one vjp per image.
    """
    y, pullback = jax.vjp(head, activations)
    grads = jax.vmap(lambda e: pullback(e)[0])(jnp.eye(y.shape[0], dtype=y.dtype))  # (N, N, h, w, C)
    delta = jnp.sum(grads * (value - activations)[None], axis=1)  # (N, h, w, C): effect of ablating everything
    drop = ~jnp.asarray(keep, bool)
    mask = drop.reshape(drop.shape[:1] + (1,) * (delta.ndim - drop.ndim) + drop.shape[1:])  # (K, 1|h, 1|w, 1|C)
    axes = tuple(1 + i for i in range(delta.ndim - 1) if mask.shape[1 + i] == 1)
    reduced = jnp.sum(delta, axis=axes, keepdims=True)  # sum where the mask is broadcast
    m = mask.astype(delta.dtype).reshape(mask.shape[0], -1)
    return y[None] + jnp.einsum("km,nm->kn", m, reduced.reshape(reduced.shape[0], -1))


def base_scores(split: Split, x, targets, score):
    """A (N, h, w, C), the explained classes (N,) or None, and the unablated score y (N,)."""
    activations = split.features(x)
    logits = split.head(x, activations)
    classes = targets_lib.resolve_classes(targets, logits)
    return activations, classes, targets_lib.target_score(logits, targets, classes, score)


def relative_drop(y, y_ablated):
    """(y - y^(k)) / y for y (N,), y^(k) (K, N) -> (N, K). y == 0 is treated as a tiny positive y."""
    denom = jnp.where(y == 0, 1e-12, y)
    return ((y[None] - y_ablated) / denom[None]).T


def window_masks(*sizes, window: int, stride: int):
    """Keep-masks (L, *spatial, 1) of every window position and their coverage (L, *spatial) as floats.

    ``window_masks(h, w, window=, stride=)`` for a 2-D layer; any number of spatial sizes (1-D: ``(l,)``,
    3-D: ``(d, h, w)``): a window is `window` cells long on every axis.
    """
    def starts(n):
        size = min(window, n)
        s = list(range(0, n - size + 1, stride))
        if s[-1] + size < n:
            s.append(n - size)
        return [slice(b, b + size) for b in s]

    spatial = tuple(int(n) for n in sizes)
    places = list(itertools.product(*(starts(n) for n in spatial)))
    cover = np.zeros((len(places), *spatial), np.float32)
    for k, place in enumerate(places):
        cover[(k, *place)] = 1.0
    return jnp.asarray(cover[..., None] == 0), jnp.asarray(cover)


def spread(values, cover):
    """Per-window values (N, L) -> per-location map (N, *spatial): mean over the windows covering it."""
    return jnp.einsum("nl,l...->n...", values, cover) / cover.sum(axis=0)


def ablation_cam_map(split, x, targets, score="logit", value=0.0, chunk_size=None):
    a, classes, y = base_scores(split, x, targets, score)
    channels = a.shape[-1]
    keep = ~jnp.eye(channels, dtype=bool)  # (C, C): mask k drops channel k
    weights = relative_drop(y, ablated_scores(split, x, a, keep, targets, classes, score, value, chunk_size))
    return jnp.einsum("nc,n...c->n...", weights, a)  # any spatial rank


def spatial_ablation_cam_map(split, x, targets, score="logit", value=0.0, chunk_size=None, window=1, stride=1):
    a, classes, y = base_scores(split, x, targets, score)
    keep, cover = window_masks(*a.shape[1:-1], window=window, stride=stride)
    weights = relative_drop(y, ablated_scores(split, x, a, keep, targets, classes, score, value, chunk_size))
    return spread(weights, cover) * a.sum(axis=-1)


def fast_ablation_cam_map(split, x, targets, score="softmax", value=0.0, chunk_size=None, window=1, stride=1):
    a, classes, y = base_scores(split, x, targets, score)
    keep, cover = window_masks(*a.shape[1:-1], window=window, stride=stride)
    drops = y[:, None] - ablated_scores(split, x, a, keep, targets, classes, score, value, chunk_size).T
    return spread(drops, cover)


# XLA:CPU's default fusion emitters turn "mask channel k, then the head's mean over locations" (one
# fused select + reduction over non-minor axes, C x h x w x C elements) into code ~8x slower than
# the legacy emitters: on ResNet-50 layer4 that part alone cost about one forward. The runner
# compiles channel ablation with the legacy emitters (numbers in benchmarks/README.md); location
# ablation has only h x w masks and runs faster with the defaults. (Heads affine in A -- ResNet layer4 --
# take the exact gradient shortcut in `ablated_scores` and run no masked copies at all.)
ablation_cam_map.cpu_compiler_options = {"xla_cpu_use_fusion_emitters": False}


CHUNK_SIZE = Option("chunk_size", None, "ablated copies per vmapped chunk (default: ~256 MiB of activations)",
                    positive=True)
ABLATION_VALUE = Option("ablation_value", 0.0, "what an ablated activation is set to")
ABLATION_OPTIONS = (SCORE, FINAL_ACTIVATION, ABLATION_VALUE, CHUNK_SIZE, AUG_SMOOTH, RESHAPE_TRANSFORM, NORMALIZE)
WINDOW_OPTIONS = ABLATION_OPTIONS + (
    Option("window", 1, "side of the square ablation window, in layer cells", positive=True),
    Option("stride", 1, "step between ablation windows, in layer cells", positive=True),
)


@method(formula='w_k = (y − y^(k)) / y, y^(k) with channel k zeroed; **head only**, chunked', family="ablation",
        options=ABLATION_OPTIONS, aliases=("ablation", "channel_ablation"), paper="Desai & Ramaswamy, WACV 2020",
        pgc="AblationCAM")
def ablation_cam(
    model, x, layer=None, targets=None, *, score="logit", final_activation="relu",
    ablation_value=0.0, chunk_size: Optional[int] = None, batch_size=None, aug_smooth=False, reshape_transform=None, normalize=True,
):
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020): drop each channel, weigh it by the score drop.

    w_k = (y - y^(k)) / y, y^(k) the score with channel k set to `ablation_value`;
    map = final_activation(sum_k w_k A_k). Only the head re-runs, `chunk_size` channels at a time
    (default: chunks of about 256 MiB of activations).

    Args:
      model, x, layer, targets, final_activation: as `jaxcam.grad_cam`.
      score: "logit" (default, as pytorch-grad-cam) | "softmax" | "sigmoid".
      ablation_value: what an ablated channel is set to (0.0).
      chunk_size: ablated copies per vmapped chunk (default: about 256 MiB of activations);
        `batch_size` is its deprecated old name.
      aug_smooth, reshape_transform: as `jaxcam.hires_cam` (test-time augmentation; token models).

    Returns:
      (N, H, W) float32 maps in [0, 1].

    Example:
      >>> import jax, jaxcam
      >>> model = jaxcam.models.resnet18(num_classes=10)
      >>> x = jax.random.normal(jax.random.key(0), (1, 64, 64, 3))
      >>> jaxcam.ablation_cam(model, x, layer="layer4").shape
      (1, 64, 64)
    """
    chunk_size = renamed(chunk_size, batch_size, where="ablation_cam")
    return run(
        ablation_cam_map, model, x, layer, targets, final_activation,
        score=score, value=float(ablation_value), chunk_size=chunk_size,
        aug_smooth=aug_smooth, reshape_transform=reshape_transform, normalize=normalize,
    )


@method(formula='w_ij = (y − y^(ij)) / y with all channels at (i, j) zeroed; map = w_ij · sum_k A_k,ij',
        family="ablation", options=WINDOW_OPTIONS, aliases=("spatial", "spatial_ablation", "location_ablation"),
        paper="location-wise Ablation-CAM")
def spatial_ablation_cam(
    model, x, layer=None, targets=None, *, score="logit", final_activation="relu",
    ablation_value=0.0, window: int = 1, stride: int = 1, chunk_size: Optional[int] = None, batch_size=None,
    aug_smooth=False, reshape_transform=None, normalize=True,
):
    """Location-wise Ablation-CAM: zero all channels at a location (or window) at a time.

    w_ij = (y - y^(ij)) / y ; map_ij = final_activation(w_ij * sum_k A_k,ij). Arguments as
    `ablation_cam`, plus `window` (side of the square window, in layer cells) and `stride`.
    """
    chunk_size = renamed(chunk_size, batch_size, where="spatial_ablation_cam")
    return run(
        spatial_ablation_cam_map, model, x, layer, targets, final_activation,
        score=score, value=float(ablation_value), chunk_size=chunk_size, window=int(window), stride=int(stride),
        aug_smooth=aug_smooth, reshape_transform=reshape_transform, normalize=normalize,
    )


@method(formula='map_ij = y − y^(ij), y a softmax probability; `window`, `stride`, `ablation_value`',
        family="ablation",
        options=tuple(dataclasses.replace(o, default="softmax") if o is SCORE else o for o in WINDOW_OPTIONS),
        aliases=("fast_ablation", "FastAblationCAM"), paper="FastAblationCAM (window ablation, softmax drop)")
def fast_ablation_cam(
    model, x, layer=None, targets=None, *, score="softmax", final_activation="relu",
    ablation_value=0.0, window: int = 1, stride: int = 1, chunk_size: Optional[int] = None, batch_size=None,
    aug_smooth=False, reshape_transform=None, normalize=True,
):
    """FastAblationCAM: map_ij = final_activation(y - y^(ij)), no activation weighting.

    One head run per location (or window) instead of per channel: 49 runs instead of 2048 for
    ResNet-50's layer4 at 224 px. `score` defaults to "softmax" (a probability), as in the method's
    description. Other arguments as `spatial_ablation_cam`.
    """
    chunk_size = renamed(chunk_size, batch_size, where="fast_ablation_cam")
    return run(
        fast_ablation_cam_map, model, x, layer, targets, final_activation,
        score=score, value=float(ablation_value), chunk_size=chunk_size, window=int(window), stride=int(stride),
        aug_smooth=aug_smooth, reshape_transform=reshape_transform, normalize=normalize,
    )
