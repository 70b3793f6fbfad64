"""SS-CAM, IS-CAM and SmoothGrad-CAM++ against torchcam 0.5.0 itself on identical weights, with the same noise.

The torch twin of the Flax VGG (identical weights, from test_parity_pgc_family) runs through torchcam's own
extractors; torchcam's noise sampler (``extractor._distrib``) is replaced by one that returns the noise jaxcam
draws (`mask_noise`, `input_noise`), so both sides average over the same samples. torchcam's raw maps
(``normalized=False``) are finished by `finish` below (ReLU, min-max, torch's half-pixel bilinear resize,
min-max): numpy/torch only, nothing from jaxcam.

SmoothGrad-CAM++: torchcam 0.5 weights each pixel's alpha by the ReLU of the LAST noisy sample's gradient
(jaxcam: of the mean gradient, documented in jaxcam/methods/smoothgrad_cam_pp.py) and, as its activation hook
stays on during the noisy passes, combines the weights with the LAST NOISY input's activations
(jaxcam: the clean input's; measured: the maps differ by 0.19 at S = 1). So torchcam's own weights are
taken at S = 1 (where mean and last coincide) and combined with the clean activations; S = 3 is checked
against the definition with a torch brute-force loop.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torchcam.methods import ISCAM, SSCAM, SmoothGradCAMpp

import jaxcam
from jaxcam.methods.smoothgrad_cam_pp import input_noise
from jaxcam.methods.ss_cam import mask_noise
from tests.methods.test_parity_pgc_families import tv_vgg, vgg, vgg_images  # noqa: F401  (fixtures)
from tests.torch_utils import nhwc_to_torch

CLASSES = np.array([2, 7])
TOL = 5e-6  # measured: SS-CAM 5.6e-7, IS-CAM 3.3e-7 max-abs (float32 on both sides)
SMOOTHGRAD_TOL = 5e-5  # measured 5.4e-6 (torchcam's weights at S = 1, float32 on both sides)
# measured 9.0e-5: the reference computes alpha = D2 / (2 D2 + sum A D3) in float64, jaxcam in float32, and
# the denominator is small where the gradients are (cancellation in sum A D3)
DEFINITION_TOL = 5e-4


def finish(cam):
    """Raw (N, h, w) maps -> ReLU, per-image min-max, bilinear half-pixel resize to 32 px, min-max."""
    def minmax(c):
        lo = c.min(axis=(1, 2), keepdims=True)
        span = c.max(axis=(1, 2), keepdims=True) - lo
        return np.where(span > 0, (c - lo) / np.where(span > 0, span, 1.0), 0.0)

    cam = minmax(np.maximum(np.asarray(cam, np.float64), 0.0))
    up = torch.nn.functional.interpolate(torch.from_numpy(cam)[:, None], (32, 32), mode="bilinear",
                                         align_corners=False)
    return minmax(up[:, 0].numpy())


class FixedNoise:
    """Stands in for torchcam's ``torch.distributions.Normal``: the i-th ``sample(size)`` is ``noise(i, size)``."""

    def __init__(self, noise):
        self.noise, self.calls = noise, 0

    def sample(self, size):
        out = torch.from_numpy(np.asarray(self.noise(self.calls, tuple(size)), np.float32))
        assert tuple(out.shape) == tuple(size), (out.shape, size)
        self.calls += 1
        return out


def torchcam_raw(tv, images, extractor_cls, noise=None, **kw):
    with extractor_cls(tv, target_layer="features", input_shape=(3, 32, 32), **kw) as extractor:
        if noise is not None:
            extractor._distrib = FixedNoise(noise)
        with torch.no_grad():
            scores = tv(nhwc_to_torch(images))
        cam = extractor(class_idx=CLASSES.tolist(), scores=scores, normalized=False)[0].numpy()
        if noise is not None:
            assert extractor._distrib.calls == kw["num_samples"]
    return cam


def check(what, got, expected, tol):
    span = expected.max(axis=(1, 2)) - expected.min(axis=(1, 2))
    assert (span > 0.5).all(), f"{what}: the reference map is blank"
    err = np.abs(np.asarray(got) - expected).max()
    print(f"{what}: max-abs {err:.2e}")
    assert err < tol, (what, err)


def test_ss_cam_matches_torchcam(vgg, tv_vgg, vgg_images):
    samples, std, seed = 3, 0.5, 7

    def noise(s, size):  # torchcam draws (N, C, H, W) per sample; jaxcam one (N, H, W) per (sample, channel)
        n, c, h, w = size
        return np.stack([np.asarray(mask_noise(seed, s, k, (n, h, w), std)) for k in range(c)], 1)

    expected = finish(torchcam_raw(tv_vgg, vgg_images, SSCAM, noise, num_samples=samples, std=std))
    got = jaxcam.ss_cam(vgg, vgg_images, layer="features", targets=CLASSES, num_samples=samples, std=std, seed=seed)
    check("SS-CAM vs torchcam", got, expected, TOL)


def test_is_cam_matches_torchcam(vgg, tv_vgg, vgg_images):
    expected = finish(torchcam_raw(tv_vgg, vgg_images, ISCAM, num_samples=4))
    got = jaxcam.is_cam(vgg, vgg_images, layer="features", targets=CLASSES, num_samples=4)
    check("IS-CAM vs torchcam", got, expected, TOL)


def test_smoothgrad_cam_pp_matches_torchcam_weights(vgg, tv_vgg, vgg_images):
    std, seed = 0.3, 5
    noise = lambda s, size: nhwc_to_torch(np.asarray(input_noise(seed, s, vgg_images.shape, std))).numpy()  # noqa: E731
    with SmoothGradCAMpp(tv_vgg, target_layer="features", input_shape=(3, 32, 32), num_samples=1, std=std) as ex:
        ex._distrib = FixedNoise(noise)
        tv_vgg(nhwc_to_torch(vgg_images))
        clean = ex.hook_a[0].detach().clone()
        weights = ex._get_weights(CLASSES.tolist())[0].detach()
        assert ex._distrib.calls == 1
    expected = finish((weights[:, :, None, None] * clean).sum(1).numpy())
    got = jaxcam.smoothgrad_cam_pp(vgg, vgg_images, layer="features", targets=CLASSES, num_samples=1, std=std,
                                   seed=seed)
    check("SmoothGrad-CAM++ (S=1) vs torchcam's weights", got, expected, SMOOTHGRAD_TOL)


def test_smoothgrad_cam_pp_matches_definition(vgg, tv_vgg, vgg_images):
    """S = 3: alpha from the mean squared / cubed gradients, ReLU of the MEAN gradient (a torch loop)."""
    samples, std, seed = 3, 0.3, 5
    store = {}

    def hook(module, inputs, output):
        if output.requires_grad:
            output.retain_grad()
        store["a"] = output

    handle = tv_vgg.features.register_forward_hook(hook)
    try:
        with torch.no_grad():
            tv_vgg(nhwc_to_torch(vgg_images))
        a = store["a"].numpy().astype(np.float64)
        grads = []
        for s in range(samples):
            noise = np.asarray(input_noise(seed, s, vgg_images.shape, std))
            logits = tv_vgg(nhwc_to_torch(vgg_images + noise))
            logits[np.arange(2), CLASSES].sum().backward()
            grads.append(store["a"].grad.numpy())
    finally:
        handle.remove()
    g = np.stack(grads).astype(np.float64)
    d1, d2, d3 = g.mean(0), (g ** 2).mean(0), (g ** 3).mean(0)
    alpha = d2 / (2 * d2 + (a * d3).sum((2, 3), keepdims=True) + 1e-8)
    w = (alpha * np.maximum(d1, 0)).sum((2, 3), keepdims=True)
    expected = finish((w * a).sum(1))
    got = jaxcam.smoothgrad_cam_pp(vgg, vgg_images, layer="features", targets=CLASSES, num_samples=samples,
                                   std=std, seed=seed)
    check("SmoothGrad-CAM++ (S=3) vs definition", got, expected, DEFINITION_TOL)
