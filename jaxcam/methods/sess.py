"""SESS, Saliency Enhancing with Scaling and Sliding (Tyagi et al., ECCV 2022, arXiv:2207.01769):
a meta-method that runs any base method on windows of several rescaled copies of the image.

    scales   s_i = w + round(w * step_ratio) * i, i < num_scales   (w = window = the shorter image side)
    patches  every w x w window (stride `step`, last one shifted back inside) of x resized to s_i
    score    p = max(softmax(model(patch))_c, 0)   (raw target scores with use_softmax=False)
    weight   p / max over patches (all ones if that max is 0)
    map_p    weight * base(patch) pasted at its window of an s_i canvas, resized back to the image
    fused    mean over patches of the map_p values > theta (or their max), Gaussian blur 11x11 sigma 5
    map      minmax(fused)

As pytorch-grad-cam 1.5.7's SESS (pre_filter_ratio not offered: every patch is kept).
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._src import maps
from jaxcam._src.dtypes import map_dtype
from jaxcam._src.request import check_input
from jaxcam.methods.registry import get, method, Option
from jaxcam._src.kinds import as_model


BLUR_SIZE, BLUR_SIGMA = 11, 5.0


def window_starts(length: int, step: int, window: int) -> list:
    """Window starts covering `length`; the last one is shifted back so every window fits."""
    starts = []
    for start in range(0, length, step):
        if start + window >= length:
            starts.append(max(length - window, 0))
            break
        starts.append(start)
    return starts


def scales_for(window: int, num_scales: int, step_ratio: float) -> list:
    step = int(round(window * step_ratio))
    return [window + step * i for i in range(num_scales)]


def gaussian_blur(m: jnp.ndarray, size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> jnp.ndarray:
    """Separable Gaussian blur of maps (N, H, W), mirrored borders without repeating the edge."""
    r = size // 2
    k = np.exp(-((np.arange(size) - r) ** 2) / (2 * sigma ** 2))
    k = jnp.asarray(k / k.sum(), m.dtype)
    p = jnp.pad(m, ((0, 0), (r, r), (r, r)), mode="reflect")
    p = sum(k[i] * p[:, i:i + m.shape[1], :] for i in range(size))
    return sum(k[i] * p[:, :, i:i + m.shape[2]] for i in range(size))


def resize_images(x, size):
    """Bilinear half-pixel resize of images (N, H, W, C) to (N, *size, C) (upscaling: no antialiasing)."""
    return jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), method="bilinear", antialias=False)


def scaled_size(height: int, width: int, scale: int):
    """torchvision's resize(img, scale): the shorter side becomes `scale`, the aspect ratio is kept."""
    if height <= width:
        return scale, int(scale * width / height)
    return int(scale * height / width), scale


def _in_chunks(fn, batch, targets, size: int):
    """fn(batch, targets) over chunks of `size` rows, concatenated; the last chunk is padded to `size`
    (one compiled shape for every chunk)."""
    if len(batch) <= size:
        return fn(batch, targets)
    parts = []
    for i in range(0, len(batch), size):
        b, t = batch[i:i + size], targets[i:i + size]
        short = size - len(b)
        if short:
            b = jnp.concatenate([b, jnp.repeat(b[-1:], short, axis=0)])
            t = jnp.concatenate([t, jnp.repeat(t[-1:], short)])
        parts.append(jax.tree_util.tree_map(lambda v: v[:size - short], fn(b, t)))
    return jax.tree_util.tree_map(lambda *v: jnp.concatenate(v), *parts)


@method(formula="SESS over any base method: windows of rescaled copies, fused back at the image's size. (Tyagi et al., ECCV 2022 (arXiv:2207.01769))",
        family="composite",
        options=(Option("base", "grad_cam", "the method run on every window"), Option("num_scales", 12, "number of scales", positive=True), Option("pool", "mean", "fusion of the window maps", choices=("mean", "max")), Option("smooth", True, "Gaussian blur of the fused map", choices=(True, False)),
                  Option("chunk_size", 16, "patches per call of the model and the base method", positive=True)),
        aliases=("saliency_enhancing_scaling_sliding",), paper="Tyagi et al., ECCV 2022 (arXiv:2207.01769)",
        pgc="SESS")
def sess(model, x, layer=None, targets=None, *, base="grad_cam", scales: Optional[Sequence[int]] = None,
         num_scales: int = 12, step_ratio: float = 2.0 / 7.0, window: Optional[int] = None,
         step: Optional[int] = None, theta: float = 0.0, pool: str = "mean", smooth: bool = True,
         use_softmax: bool = True, chunk_size: int = 16, **options):
    """SESS over any base method: windows of rescaled copies, fused back at the image's size.

    Args:
      base: a registered method name or function (default "grad_cam").
      scales: sizes of the shorter side (default: `num_scales` sizes from the window size, step
        round(window * step_ratio)); window: side of the square window (default: the shorter side);
      step: window stride (default: the window); theta: values <= theta are left out of the mean;
      pool: "mean" | "max"; smooth: Gaussian blur of the fused map; use_softmax: weigh patches by the
        target's softmax probability (else its raw score, clipped at 0).
      chunk_size: patches per call of the model and the base method (bounds memory: the ~130 patches
        of a 224 px image in one call took 2.4 GB on EfficientNet-Lite0).
      targets: None (argmax of each image) | int | ints (N,).
      **options: passed to the base method (layer is passed too).

    Returns:
      (N, H, W) float32 maps in [0, 1].
    """
    method = base if callable(base) and not isinstance(base, str) else get(base)
    if pool not in ("mean", "max"):
        raise ValueError(f"pool must be 'mean' or 'max', got {pool!r}")
    if callable(targets) or np.ndim(targets) > 1:
        raise TypeError("sess explains one class per image: pass targets=None, an int or one int per image")
    model, x = as_model(model), check_input(x)
    if x.ndim != 4:
        raise ValueError(f"sess slides square windows over rescaled images (N, H, W, C); x has shape {tuple(x.shape)}: "
                         "use the base method directly on signals and volumes")
    n, height, width = x.shape[:3]
    window = int(window or min(height, width))
    step = int(step or window)
    scales = list(scales) if scales is not None else scales_for(window, int(num_scales), float(step_ratio))
    if min(scales) < window:
        raise ValueError(f"every scale must be at least the window size {window}, got {scales}")
    logits = model(x)
    classes = jnp.argmax(logits, -1) if targets is None else jnp.broadcast_to(jnp.asarray(targets, jnp.int32), (n,))

    patches, places = [], []
    for scale in scales:
        sh, sw = scaled_size(height, width, scale)
        scaled = resize_images(x, (sh, sw)) if (sh, sw) != (height, width) else x
        for y0 in window_starts(sh, step, window):
            for x0 in window_starts(sw, step, window):
                patches.append(scaled[:, y0:y0 + window, x0:x0 + window])
                places.append((y0, x0, sh, sw))
    batch = jnp.stack(patches, axis=1).reshape(-1, window, window, x.shape[-1])  # (N * P, w, w, C)
    repeated = jnp.repeat(classes, len(patches))
    out, cams = _in_chunks(lambda b, t: (model(b), method(model, b, layer, t, **options)), batch, repeated,
                           int(chunk_size))
    out = jax.nn.softmax(out, -1) if use_softmax else out
    scores = jnp.maximum(jnp.take_along_axis(out, repeated[:, None], -1)[:, 0], 0).reshape(n, -1)
    top = scores.max(axis=1, keepdims=True)
    weights = jnp.where(top > 0, scores / jnp.where(top > 0, top, 1.0), 1.0)
    cams = cams.reshape(n, len(patches), window, window)

    dtype = map_dtype(cams.dtype)  # float64 maps stay float64
    total = jnp.zeros((n, height, width), dtype)
    counts = jnp.zeros((n, height, width), dtype)
    for p, (y0, x0, sh, sw) in enumerate(places):
        canvas = jnp.zeros((n, sh, sw), dtype).at[:, y0:y0 + window, x0:x0 + window].set(
            cams[:, p] * weights[:, p, None, None])
        pasted = maps.resize(canvas, (height, width))
        if pool == "max":
            total = jnp.maximum(total, pasted)
        else:
            keep = pasted > theta
            total = total + jnp.where(keep, pasted, 0.0)
            counts = counts + keep
    fused = total if pool == "max" else jnp.where(counts > 0, total / jnp.where(counts > 0, counts, 1.0), 0.0)
    if smooth:
        fused = gaussian_blur(fused)
    return maps.minmax(fused)
