"""Image augmentation on the device: jitted, random per image, named as torchvision/albumentations users know them.

    aug = jaxcam.data.augmentations.pipeline({"random_resized_crop": {"scale": (0.5, 1.0)}, "horizontal_flip": {},
                                   "coarse_dropout": {"max_holes": 1, "max_height": 8, "max_width": 8}})
    x = aug(key, x)          # x float (N, H, W, C) in [0, 1] -> same shape; one independent draw per image

Each transform is a pure function of ``(key, image (H, W, C))`` written with jax.numpy (colour via
dm-pix); `pipeline` applies them in the given order under ``jax.vmap`` over per-image keys.

    name (aliases)                       parameters (defaults)                      like
    horizontal_flip (flip, hflip)        p=0.5                                      T.RandomHorizontalFlip / A.HorizontalFlip
    random_crop (crop)                   padding=4, fill=0                          T.RandomCrop(size, padding)
    random_resized_crop (rrc)            scale=(0.08, 1), ratio=(3/4, 4/3)          T.RandomResizedCrop / A.RandomResizedCrop
    shift_scale_rotate (ssr)             shift_limit=0.0625, scale_limit=0.1,       A.ShiftScaleRotate (border constant)
                                         rotate_limit=45, p=0.5, fill=0
    coarse_dropout (cutout)              max_holes=8, max_height=8, max_width=8,    A.CoarseDropout / Cutout (DeVries 2017)
                                         min_holes=1, fill=0, p=0.5
    color_jitter (jitter)                brightness=0.2, contrast=0.2,              T.ColorJitter (fixed order b, c, s, h)
                                         saturation=0.2, hue=0.0

Sizes in pixels (max_height, padding) are of the image the transform receives; geometry uses
bilinear sampling with a constant fill outside the image.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

import jax
import jax.numpy as jnp

from jaxcam._src.hints import closest, unknown_name

Transform = Callable[..., jnp.ndarray]


def horizontal_flip(key, image, p: float = 0.5):
    """Mirror left-right with probability `p`."""
    return jnp.where(jax.random.uniform(key) < p, image[:, ::-1], image)


def vertical_flip(key, image, p: float = 0.5):
    """Mirror top-bottom with probability `p`."""
    return jnp.where(jax.random.uniform(key) < p, image[::-1], image)


def random_crop(key, image, padding: int = 4, fill: float = 0.0):
    """Pad by `padding` pixels of `fill` on each side, then crop the original size at a uniform offset."""
    h, w, c = image.shape
    padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)), constant_values=fill)
    ky, kx = jax.random.split(key)
    dy = jax.random.randint(ky, (), 0, 2 * padding + 1)
    dx = jax.random.randint(kx, (), 0, 2 * padding + 1)
    return jax.lax.dynamic_slice(padded, (dy, dx, 0), (h, w, c))


def _sample(image, ys, xs, fill):
    """Bilinear sample of `image` at float pixel coordinates (ys, xs) (pixel centres at integers)."""
    h, w, _ = image.shape
    y0, x0 = jnp.floor(ys), jnp.floor(xs)
    wy, wx = (ys - y0)[..., None], (xs - x0)[..., None]

    def at(yy, xx):
        inside = (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
        v = image[jnp.clip(yy, 0, h - 1).astype(jnp.int32), jnp.clip(xx, 0, w - 1).astype(jnp.int32)]
        return jnp.where(inside[..., None], v, fill)

    return ((1 - wy) * (1 - wx) * at(y0, x0) + (1 - wy) * wx * at(y0, x0 + 1)
            + wy * (1 - wx) * at(y0 + 1, x0) + wy * wx * at(y0 + 1, x0 + 1))


def crop_resize(image, top, left, height, width, out_hw: Tuple[int, int]):
    """The box (top, left, height, width) (floats, pixels) resampled to `out_hw` (half-pixel bilinear)."""
    oh, ow = out_hw
    ys = top + (jnp.arange(oh) + 0.5) * height / oh - 0.5
    xs = left + (jnp.arange(ow) + 0.5) * width / ow - 0.5
    ys = jnp.clip(ys, 0, image.shape[0] - 1)
    xs = jnp.clip(xs, 0, image.shape[1] - 1)
    return _sample(image, ys[:, None] * jnp.ones((1, ow)), xs[None, :] * jnp.ones((oh, 1)), 0.0)


def random_resized_crop(key, image, scale: Sequence[float] = (0.08, 1.0),
                        ratio: Sequence[float] = (3 / 4, 4 / 3)):
    """A box of area fraction ~U(scale) and log-uniform aspect ratio, resized back to the image's size.

    torchvision tries 10 boxes and falls back to a centre crop; here the box is clipped to fit
    (its aspect kept), which draws the same boxes whenever they fit.
    """
    h, w, _ = image.shape
    ks, kr, ky, kx = jax.random.split(key, 4)
    area = h * w * jax.random.uniform(ks, (), minval=scale[0], maxval=scale[1])
    log_r = jax.random.uniform(kr, (), minval=math.log(ratio[0]), maxval=math.log(ratio[1]))
    r = jnp.exp(log_r)
    bw = jnp.sqrt(area * r)
    bh = jnp.sqrt(area / r)
    fit = jnp.minimum(1.0, jnp.minimum(w / bw, h / bh))
    bw, bh = bw * fit, bh * fit
    top = jax.random.uniform(ky, ()) * (h - bh)
    left = jax.random.uniform(kx, ()) * (w - bw)
    return crop_resize(image, top, left, bh, bw, (h, w))


def shift_scale_rotate(key, image, shift_limit: float = 0.0625, scale_limit: float = 0.1,
                       rotate_limit: float = 45.0, p: float = 0.5, fill: float = 0.0):
    """Random affine about the centre: shift ~U(+-shift_limit) of the size, scale 1+U(+-scale_limit),
    rotation ~U(+-rotate_limit) degrees; applied with probability `p`; outside filled with `fill`."""
    h, w, _ = image.shape
    kp, ks, kz, kr = jax.random.split(key, 4)
    dy, dx = jax.random.uniform(ks, (2,), minval=-shift_limit, maxval=shift_limit) * jnp.array([h, w])
    zoom = 1.0 + jax.random.uniform(kz, (), minval=-scale_limit, maxval=scale_limit)
    angle = jnp.deg2rad(jax.random.uniform(kr, (), minval=-rotate_limit, maxval=rotate_limit))
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    # output pixel -> source pixel: undo shift, then rotate by -angle and scale by 1/zoom about the centre
    y, x = yy - cy - dy, xx - cx - dx
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    sy = (cos * y - sin * x) / zoom + cy
    sx = (sin * y + cos * x) / zoom + cx
    out = _sample(image, sy, sx, fill)
    return jnp.where(jax.random.uniform(kp) < p, out, image)


def coarse_dropout(key, image, max_holes: int = 8, max_height: int = 8, max_width: int = 8,
                   min_holes: int = 1, fill: float = 0.0, p: float = 0.5):
    """With probability `p`, fill U{min_holes..max_holes} rectangles of size up to max_height x
    max_width (each side U{1..max}, fully inside the image) with `fill` (albumentations CoarseDropout)."""
    h, w, _ = image.shape
    kp, kn, kh, kw, ky, kx = jax.random.split(key, 6)
    holes = jax.random.randint(kn, (), min_holes, max_holes + 1)
    hh = jax.random.randint(kh, (max_holes,), 1, min(max_height, h) + 1)
    ww = jax.random.randint(kw, (max_holes,), 1, min(max_width, w) + 1)
    y0 = (jax.random.uniform(ky, (max_holes,)) * (h - hh + 1)).astype(jnp.int32)
    x0 = (jax.random.uniform(kx, (max_holes,)) * (w - ww + 1)).astype(jnp.int32)
    rows, cols = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
    inside = ((rows >= y0[:, None, None]) & (rows < (y0 + hh)[:, None, None])
              & (cols >= x0[:, None, None]) & (cols < (x0 + ww)[:, None, None]))
    mask = jnp.any(inside & (jnp.arange(max_holes) < holes)[:, None, None], axis=0)
    mask = mask & (jax.random.uniform(kp) < p)
    return jnp.where(mask[..., None], fill, image)


def cutout(key, image, size: int = 16, p: float = 1.0, fill: float = 0.0):
    """DeVries & Taylor 2017: one size x size square centred at a uniform pixel, clipped at the border."""
    h, w, _ = image.shape
    kp, ky, kx = jax.random.split(key, 3)
    cy = jax.random.randint(ky, (), 0, h)
    cx = jax.random.randint(kx, (), 0, w)
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    mask = (rows >= cy - size // 2) & (rows < cy - size // 2 + size) & (cols >= cx - size // 2) & (cols < cx - size // 2 + size)
    mask = mask & (jax.random.uniform(kp) < p)
    return jnp.where(mask[..., None], fill, image)


def _gray(image):
    return image @ jnp.array([0.299, 0.587, 0.114], image.dtype)


def color_jitter(key, image, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2,
                 hue: float = 0.0):
    """torchvision ColorJitter factors (brightness/contrast/saturation ~U(1+-v), hue shift ~U(+-hue)
    of the colour circle) in a fixed order; images in [0, 1], clipped."""
    import dm_pix as pix

    kb, kc, ks, kh = jax.random.split(key, 4)

    def factor(k, v):
        return jax.random.uniform(k, (), minval=max(0.0, 1 - v), maxval=1 + v)

    x = image
    if brightness:
        x = jnp.clip(x * factor(kb, brightness), 0, 1)
    if contrast:
        x = jnp.clip(jnp.mean(_gray(x)) + factor(kc, contrast) * (x - jnp.mean(_gray(x))), 0, 1)
    if saturation:
        g = _gray(x)[..., None]
        x = jnp.clip(g + factor(ks, saturation) * (x - g), 0, 1)
    if hue:
        x = jnp.clip(pix.adjust_hue(x, jax.random.uniform(kh, (), minval=-hue, maxval=hue)), 0, 1)
    return x


TRANSFORMS: Dict[str, Transform] = {
    "horizontal_flip": horizontal_flip,
    "vertical_flip": vertical_flip,
    "random_crop": random_crop,
    "random_resized_crop": random_resized_crop,
    "shift_scale_rotate": shift_scale_rotate,
    "coarse_dropout": coarse_dropout,
    "cutout": cutout,
    "color_jitter": color_jitter,
}
ALIASES = {"flip": "horizontal_flip", "hflip": "horizontal_flip", "randomhorizontalflip": "horizontal_flip",
           "vflip": "vertical_flip", "crop": "random_crop", "randomcrop": "random_crop",
           "rrc": "random_resized_crop", "randomresizedcrop": "random_resized_crop",
           "ssr": "shift_scale_rotate", "shiftscalerotate": "shift_scale_rotate",
           "coarsedropout": "coarse_dropout", "jitter": "color_jitter", "colorjitter": "color_jitter"}


def canonical(name: str) -> str:
    """Canonical transform name of `name` (aliases and CamelCase accepted); ValueError names the closest."""
    key = str(name).strip().lower().replace("-", "_")
    key = ALIASES.get(key.replace("_", ""), ALIASES.get(key, key))
    if key not in TRANSFORMS:
        raise ValueError(unknown_name("augmentation", name, sorted(TRANSFORMS)))
    return key


def check_spec(spec: Mapping[str, Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Canonical names and known parameters (ValueError naming the transform and the parameter)."""
    out = {}
    for name, params in (spec or {}).items():
        key = canonical(name)
        params = dict(params or {})
        allowed = [p for p in inspect.signature(TRANSFORMS[key]).parameters if p not in ("key", "image")]
        for p in params:
            if p not in allowed:
                raise ValueError(f"augmentation {key}: unknown parameter {p!r}{closest(p, allowed)}; "
                                 f"it takes {', '.join(allowed)}")
        for p in ("p",):
            if p in params and not 0 <= float(params[p]) <= 1:
                raise ValueError(f"augmentation {key}: p must be in [0, 1], got {params[p]}")
        out[key] = params
    return out


GEOMETRIC = ("horizontal_flip", "vertical_flip", "random_crop", "random_resized_crop", "shift_scale_rotate")


def pipeline(spec: Mapping[str, Mapping[str, Any]]) -> Callable[..., Any]:
    """``augment(key, images (N, H, W, C) float) -> images``: the transforms of `spec` in order, each
    image with its own key. An empty spec is the identity.

    ``augment(key, images, masks (N, H, W)) -> (images, masks)``: the images exactly as without masks;
    each mask gets its image's geometric transforms (`GEOMETRIC`, the same draws; filled with 0 outside
    the image), not the photometric ones (colour, dropout).
    """
    steps = [(name, TRANSFORMS[name], v) for name, v in check_spec(spec).items()]

    def one(key, image, mask):
        for i, (name, fn, params) in enumerate(steps):
            k = jax.random.fold_in(key, i)
            image = fn(k, image, **params)
            if mask is not None and name in GEOMETRIC:
                mask = fn(k, mask[..., None], **{**params, **({"fill": 0.0} if "fill" in params else {})})[..., 0]
        return image, mask

    def augment(key, images, masks=None):
        if steps:
            images, masks = jax.vmap(one)(jax.random.split(key, images.shape[0]), images, masks)
        return images if masks is None else (images, masks)

    return augment
