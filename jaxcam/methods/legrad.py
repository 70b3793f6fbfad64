"""LeGrad (Bousselham et al., 2024; torchcam 0.5's ``LeGrad``): attention gradients of layer-wise scores.

For every chosen transformer block l, with t^l its output tokens (N, T, D) and A^l its post-softmax
attention probabilities (N, heads, queries, keys):

    s^l    = head(final_norm(mean over tokens of t^l))[target]      (the model's own norm and head)
    R^l    = mean over heads and queries of ReLU(ds^l / dA^l)        (N, keys)
    map    = mean over l of R^l without the class token, as the patch grid (N, h, w)

then the usual finishing (min-max, resize to the input size, min-max). The attention values are not
multiplied in (LeGrad's definition). s^l depends on A^l only through block l; one backward pass gives
every ds^l/dA^l: the input of every block is cut from the graph (`stop_gradient`, values unchanged), so
s^l sees no later or earlier block's attention, and each A^l gets a zero probe whose gradient is ds^l/dA^l.

Defined for jaxcam's vision transformer (`jaxcam.models.vision_transformer`, `vit_b_16`), whose attention
exposes its probabilities (`MultiheadAttention.probabilities`). Not for Swin: its blocks attend within
shifted windows (no token attends to every patch, and torchcam's LeGrad is defined for torchvision's
``VisionTransformer`` blocks only), nor for CNNs.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcam._src import dtypes
from jaxcam._src import scores as targets_lib
from jaxcam._src.kinds import as_model
from jaxcam._src.runner import run
from jaxcam._src.split import kind_of
from jaxcam.methods.registry import NORMALIZE, SCORE, method
from jaxcam.models import vit

DEFAULT_BLOCKS = 4  # the last four blocks, as torchcam's example and the paper's ViT-B/16 setting
PREFIX_TOKENS = 1  # jaxcam's ViT: the class token comes first
REQUIRES = "a vision transformer whose attention jaxcam reads (jaxcam.models.vision_transformer, vit_b_16)"


def block_outputs(model, x, probes=None):
    """``(logits, {block path: output tokens}, {block path: attention probabilities})`` of model(x), with
    ``probes[path]`` added to that block's probabilities; every block's input is cut from the graph."""
    tokens, probs = {}, {}

    def record(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, vit.EncoderBlock) and context.method_name == "__call__":
            out = next_fun(jax.lax.stop_gradient(args[0]), *args[1:], **kwargs)
            tokens["/".join(module.path)] = out
            return out
        out = next_fun(*args, **kwargs)
        if isinstance(module, vit.MultiheadAttention) and context.method_name == "probabilities":
            block = "/".join(module.path[:-1])
            probs[block] = out
            if probes is not None and block in probes:
                out = out + probes[block].astype(out.dtype)
        return out

    with nn.intercept_methods(record):
        logits = model.module.apply(model.variables, dtypes.to_compute(model.info, x))
    return dtypes.from_compute(model.info, (logits, tokens, probs))  # float32 from a bfloat16 model


def block_logits(model, t):
    """The model's final norm and head applied to the mean token of a block's output (N, T, D) -> (N, K)."""
    params = model.variables["params"]
    z = vit.LayerNorm().apply({"params": params["encoder"]["ln"]}, t.mean(axis=1))
    head = params["heads"]["head"]
    return nn.Dense(head["kernel"].shape[-1]).apply({"params": head}, z)


def legrad_map(split, x, targets, score: str = "logit", blocks: Tuple[str, ...] = ()):
    """(N, h, w): the layer-averaged positive attention gradients of the patch tokens."""
    model = split.model
    logits, _, probs = block_outputs(model, x)
    classes = targets_lib.resolve_classes(targets, logits)
    probes = {b: jnp.zeros_like(probs[b]) for b in blocks}

    def total(probes):
        _, tokens, _ = block_outputs(model, x, probes)
        return sum(targets_lib.target_score(block_logits(model, tokens[b]), targets, classes, score).sum()
                   for b in blocks)

    grads = jax.grad(total)(probes)
    side = model.module.image_size // model.module.patch_size
    relevance = jnp.stack([jax.nn.relu(grads[b]).mean(axis=(1, 2))[:, PREFIX_TOKENS:] for b in blocks])
    return relevance.mean(axis=0).reshape(x.shape[0], side, side)


def encoder_blocks(model) -> list:
    """The encoder block paths of jaxcam's ViT, in order; one line naming what to pass otherwise."""
    module = getattr(model, "module", None)
    if kind_of(model) is not None or not isinstance(module, vit.VisionTransformer):
        raise ValueError(f"legrad needs {REQUIRES}; got {type(module or model).__name__}: "
                         "for CNNs and Swin use jaxcam.grad_cam or another layer method")
    return [f"encoder/layers/encoder_layer_{i}" for i in range(module.num_layers)]


def choose_blocks(model, layer) -> Tuple[str, ...]:
    every = encoder_blocks(model)
    if layer is None:
        return tuple(every[-DEFAULT_BLOCKS:])
    chosen = (layer,) if isinstance(layer, str) else tuple(layer)
    wrong = [b for b in chosen if not isinstance(b, str) or b not in every]
    if not chosen or wrong:
        raise ValueError(f"legrad takes encoder blocks as layer (one or a list), got {wrong or list(chosen)}; "
                         f"blocks: {', '.join(every)}")
    return tuple(dict.fromkeys(chosen))


@method(formula="LeGrad: mean over blocks l of ReLU(ds_l/dA_l) averaged over heads and queries, s_l = the head "
                "on block l's mean token, A_l = its attention probabilities. (Bousselham et al., 2024)",
        family="gradient", options=(SCORE, NORMALIZE), paper="Bousselham et al., LeGrad, 2024",
        requires=REQUIRES)
def legrad(model, x, layer: Union[None, str, Sequence[str]] = None, targets=None, *, score="logit",
           normalize=True):
    """LeGrad: positive gradients of each block's own class score w.r.t. its attention, averaged over blocks.

    Args:
      model: jaxcam's vision transformer (`jaxcam.models.vit_b_16`, `vision_transformer`).
      x: (N, H, W, C) images at the model's input size.
      layer: an encoder block (``"encoder/layers/encoder_layer_11"``) or a list of them; default the last four.
      targets, score, normalize: as `jaxcam.grad_cam`.

    Returns:
      (N, H, W) float32 maps in [0, 1].

    Example:
      >>> maps = jaxcam.legrad(jaxcam.models.vit_b_16(), x)  # doctest: +SKIP
    """
    model = as_model(model)
    blocks = choose_blocks(model, layer)
    return run(legrad_map, model, x, blocks[-1], targets, "none", score=score, blocks=blocks, normalize=normalize)
