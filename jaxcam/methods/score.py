"""Score-CAM (Wang et al. 2020): weigh each channel by the score of the input masked by it.

    M_k = minmax(upsample(A_k)) at input size     (per image and channel, (M - min) / (max - min + 1e-8))
    s_k = y(x * M_k)                               the WHOLE model on the masked input
    w   = softmax_k(s)                             over channels, per image
    map = ReLU(sum_k w_k A_k)

The K masked inputs are never materialized together: a scan runs `chunk_size` channels at a time,
each building its masks from A inside the loop, so memory is one chunk of forwards. Channels that are
zero everywhere share one forward (their masked input is x * 0).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._src import maps
from jaxcam._src import scores as targets_lib
from jaxcam._src.runner import run
from jaxcam.methods.registry import (
    AUG_SMOOTH, EIGEN_SMOOTH, FINAL_ACTIVATION, NORMALIZE, RESHAPE_TRANSFORM, SCORE, method, Option, renamed,
)


MASK_EPS = 1e-8  # pytorch-grad-cam's


def align_corners_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation weights with align_corners=True (torch's UpsamplingBilinear2d)."""
    pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    lo = np.clip(np.floor(pos).astype(int), 0, n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (pos - lo).astype(np.float32)
    weights = np.zeros((n_out, n_in), np.float32)
    np.add.at(weights, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(weights, (np.arange(n_out), hi), frac)
    return weights


def upsample(a: jnp.ndarray, size, align_corners: bool = True) -> jnp.ndarray:
    """Bilinear upsampling of maps (N, h, w) to (N, *size); corners aligned or half-pixel centers.

    Any spatial rank: (N, l) linear, (N, d, h, w) trilinear (one interpolation matrix per axis).
    """
    if not align_corners:
        return maps.resize(a, size)
    for axis, n_out in enumerate(size, start=1):
        weights = jnp.asarray(align_corners_matrix(n_out, a.shape[axis]))
        a = jnp.moveaxis(jnp.tensordot(a, weights, axes=((axis,), (1,))), -1, axis)
    return a


def score_cam_map(split, x, targets, score="logit", chunk_size=16, align_corners=True):
    """Weighted activations (N, h, w, C): softmax over channels of the masked-input scores, times A.

    A channel that is zero everywhere (a dead ReLU channel: half of EfficientNet-Lite0's head channels on
    ImageNet photos) has the mask 0, so its masked input is x * 0 for every such channel: its score is
    computed once per image. Each image's live channels are moved to the front of its slot order, and a
    chunk of slots in which every image has only dead channels left is skipped; the result is the same.
    """
    a = split.features(x)
    classes = targets_lib.resolve_classes(targets, split.model(x))
    size = x.shape[1:-1]  # 1, 2 or 3 spatial axes
    space = tuple(range(1, len(size) + 1))
    images, channels = a.shape[0], a.shape[-1]
    chunk = min(chunk_size, channels)

    def score_of(masked):
        return targets_lib.target_score(split.model(masked), targets, classes, score)

    def masked_score(ks):  # ks (N,): one channel per image -> (N,) scores
        a_k = jnp.take_along_axis(a, ks.reshape((images,) + (1,) * (a.ndim - 1)), axis=-1)[..., 0]
        m = upsample(a_k, size, align_corners)
        lo = m.min(axis=space, keepdims=True)
        m = (m - lo) / (m.max(axis=space, keepdims=True) - lo + MASK_EPS)
        return score_of(x * m[..., None])

    dead = jnp.all(a == 0, axis=space)  # (N, C): mask 0 -> masked input x * 0
    order = jnp.argsort(dead, axis=-1, stable=True)  # per image: its live channels first, in channel order
    live = jnp.max(channels - jnp.sum(dead, axis=-1))  # slots any image still needs
    n_chunks = -(-channels // chunk)
    slots = jnp.pad(order.T, ((0, n_chunks * chunk - channels), (0, 0))).reshape(n_chunks, chunk, images)

    shape = jax.eval_shape(jax.vmap(masked_score), slots[0])  # (chunk, N) scores, in the model's dtype

    def chunk_scores(_, c):
        i, ks = c
        scores = jax.lax.cond(i * chunk < live, jax.vmap(masked_score), lambda ks: jnp.zeros(shape.shape, shape.dtype), ks)
        return None, scores

    _, by_slot = jax.lax.scan(chunk_scores, None, (jnp.arange(n_chunks), slots))  # (chunks, chunk, N)
    by_slot = by_slot.reshape(n_chunks * chunk, images)[:channels].T  # (N, slots)
    scores = jnp.take_along_axis(by_slot, jnp.argsort(order, axis=-1), axis=-1)  # (N, C) by channel
    zero_score = jax.lax.cond(jnp.any(dead), lambda: score_of(x * 0.0),
                              lambda: jnp.zeros((images,), shape.dtype))
    scores = jnp.where(dead, zero_score[:, None], scores)
    weights = jax.nn.softmax(scores, axis=-1)  # (N, C)
    return weights.reshape(weights.shape[0], *(1,) * len(size), -1) * a


SCORE_OPTIONS = (
    SCORE, FINAL_ACTIVATION,
    Option("chunk_size", 16, "masked inputs (channels) per vmapped chunk of forwards", positive=True),
    Option("align_corners", True, "upsample masks with aligned corners (pytorch-grad-cam) or half-pixel",
           choices=(True, False)),
    EIGEN_SMOOTH, AUG_SMOOTH, RESHAPE_TRANSFORM, NORMALIZE,
)


@method(formula='w = softmax_k y(x ⊙ minmax(upsample(A_k))); whole model per channel, `chunk_size` at a time',
        family="score", options=SCORE_OPTIONS, aliases=("score",), paper="Wang et al., CVPR-W 2020", pgc="ScoreCAM")
def score_cam(model, x, layer=None, targets=None, *, score="logit", final_activation="relu", chunk_size: int = None,
              align_corners: bool = True, eigen_smooth=False, aug_smooth=False, reshape_transform=None,
              batch_size=None, normalize=True):
    """Score-CAM: one full forward per channel of the layer, `chunk_size` channels at a time; channels that
    are zero everywhere (dead ReLU channels) share one forward of x * 0, which gives them the same score.

    Args:
      model, x, layer, targets, score, final_activation, eigen_smooth, aug_smooth, reshape_transform:
        as `jaxcam.hires_cam`.
      chunk_size: masked copies (channels) per vmapped chunk (each chunk runs chunk_size * N
        forwards); 16 as pytorch-grad-cam's batch_size. Memory grows with it, total work does not.
        `batch_size` is its deprecated old name.
      align_corners: upsample the masks with aligned corners (True, pytorch-grad-cam's
        UpsamplingBilinear2d) or half-pixel centers (False, as the final maps).

    Returns:
      (N, H, W) float32 maps in [0, 1].

    Example:
      >>> import jax.numpy as jnp, jaxcam
      >>> jaxcam.score_cam(jaxcam.models.resnet20(weights=None), jnp.ones((1, 32, 32, 3)), chunk_size=64).shape
      (1, 32, 32)
    """
    chunk_size = renamed(chunk_size, batch_size, where="score_cam")
    chunk_size = 16 if chunk_size is None else chunk_size
    return run(score_cam_map, model, x, layer, targets, final_activation, score=score,
               chunk_size=int(chunk_size), align_corners=bool(align_corners), eigen_smooth=eigen_smooth,
               aug_smooth=aug_smooth, reshape_transform=reshape_transform, normalize=normalize)
