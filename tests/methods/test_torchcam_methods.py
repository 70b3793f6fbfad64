"""torchcam 0.5's SS-CAM, IS-CAM and SmoothGrad-CAM++ against their definitions, with the same (fixed) noise.

The references are brute-force loops over channels and samples on the torch twin of the Flax net
(identical weights, from test_parity_pgc_family), with the noise jaxcam draws exported to numpy.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxcam
from jaxcam._src import maps
from jaxcam.methods.smoothgrad_cam_pp import input_noise
from jaxcam.methods.ss_cam import mask_noise
from tests.test_parity_pgc_family import tv_vgg, vgg, vgg_images  # noqa: F401  (fixtures)
from tests.torch_utils import nhwc_to_torch

CLASSES = np.array([2, 7])


def torch_activations(tv, x, grad=False):
    store = {}

    def hook(module, inputs, output):
        if grad:
            output.retain_grad()
        store["a"] = output

    handle = tv.features.register_forward_hook(hook)
    out = tv(x)
    handle.remove()
    return out, store["a"]


def finish(cam_nchw_sum):
    return np.asarray(maps.finish(jnp.asarray(cam_nchw_sum), (32, 32)))


def torch_masks(a):
    a = a - a.amin(dim=(2, 3), keepdim=True)
    a = a / (a.amax(dim=(2, 3), keepdim=True) + 1e-8)
    return torch.nn.functional.interpolate(a, (32, 32), mode="bilinear", align_corners=False)


def score_reference(tv, x_np, masked_inputs):
    """softmax_k of mean over samples of y(masked) - y(x); map = ReLU(sum_k w_k A_k), finished."""
    x = nhwc_to_torch(x_np)
    with torch.no_grad():
        logits, a = torch_activations(tv, x)
        base = logits[np.arange(2), CLASSES]
        masks = torch_masks(a)
        scores = torch.zeros(2, a.shape[1])
        for k in range(a.shape[1]):
            samples = [tv(inp)[np.arange(2), CLASSES] - base for inp in masked_inputs(x, masks[:, k:k + 1], k)]
            scores[:, k] = torch.stack(samples).mean(0)
        w = torch.softmax(scores, -1)
        return finish((w[:, :, None, None] * a).sum(1).numpy())


def test_ss_cam_matches_definition(vgg, tv_vgg, vgg_images):
    samples, std, seed = 3, 0.5, 7

    def inputs(x, m, k):
        for s in range(samples):
            noise = torch.from_numpy(np.array(mask_noise(seed, s, k, (2, 32, 32), std)))[:, None]
            yield x * (m + noise)

    expected = score_reference(tv_vgg, vgg_images, inputs)
    got = np.asarray(jaxcam.ss_cam(vgg, vgg_images, layer="features", targets=CLASSES, num_samples=samples, std=std,
                                   seed=seed))
    assert expected.max() > 0.5
    err = np.abs(got - expected).max()
    print(f"SS-CAM vs definition: max-abs {err:.2e}")
    assert err < 1e-3


def test_is_cam_matches_definition(vgg, tv_vgg, vgg_images):
    samples = 4
    coefficients = np.cumsum(np.arange(1, samples + 1) / samples)

    def inputs(x, m, k):
        for c in coefficients:
            yield float(c) * (x * m)

    expected = score_reference(tv_vgg, vgg_images, inputs)
    got = np.asarray(jaxcam.is_cam(vgg, vgg_images, layer="features", targets=CLASSES, num_samples=samples))
    assert expected.max() > 0.5
    err = np.abs(got - expected).max()
    print(f"IS-CAM vs definition: max-abs {err:.2e}")
    assert err < 1e-3


def test_smoothgrad_cam_pp_matches_definition(vgg, tv_vgg, vgg_images):
    samples, std, seed = 3, 0.3, 5
    x = nhwc_to_torch(vgg_images)
    with torch.no_grad():
        a = torch_activations(tv_vgg, x)[1].numpy()
    grads = []
    for s in range(samples):
        noise = np.asarray(input_noise(seed, s, vgg_images.shape, std))
        logits, act = torch_activations(tv_vgg, nhwc_to_torch(vgg_images + noise), grad=True)
        logits[np.arange(2), CLASSES].sum().backward()
        grads.append(act.grad.numpy())
    g = np.stack(grads).astype(np.float64)
    d1, d2, d3 = g.mean(0), (g ** 2).mean(0), (g ** 3).mean(0)
    alpha = d2 / (2 * d2 + (a * d3).sum((2, 3), keepdims=True) + 1e-8)
    w = (alpha * np.maximum(d1, 0)).sum((2, 3), keepdims=True)
    expected = finish(np.float32((w * a).sum(1)))
    got = np.asarray(jaxcam.smoothgrad_cam_pp(vgg, vgg_images, layer="features", targets=CLASSES,
                                              num_samples=samples, std=std, seed=seed))
    assert expected.max() > 0.5
    err = np.abs(got - expected).max()
    print(f"SmoothGrad-CAM++ vs definition: max-abs {err:.2e}")
    assert err < 1e-3
