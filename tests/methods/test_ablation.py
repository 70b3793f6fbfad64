"""Ablation-CAM through a deep (non-affine) head: the masked-copies path against brute force.

At layer3 of a ResNet (head = layer4 + pool + fc) and at the first layer of a small Linen net whose
head has ReLUs, the target score cannot take the affine shortcut, so `ablated_scores` runs the head
on masked copies, in chunks. Brute force here: every ablated activation built one at a time in numpy
and sent through a head written independently (torchvision's modules in float64; a numpy head), then
w_k = (y - y^(k)) / y and map = sum_k w_k A_k (channel) or w_ij sum_k A_k,ij (location).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxcam
from jaxcam._src.split import Split, parse_layer
from jaxcam.methods import ablation
from tests.torch_utils import nhwc_to_torch

TOL = 1e-5  # of each map's largest magnitude


def _close(got, expected, tol=TOL):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    scale = np.abs(expected).max(axis=(1, 2), keepdims=True)
    assert (scale > 0).all(), "blank reference map"
    err = (np.abs(got - expected) / scale).max()
    assert err < tol, err


class DeepHead(nn.Module):
    """conv1 (the ablated layer) -> ReLU -> 2x2 conv -> ReLU -> mean -> fc: not affine in conv1's output."""

    @nn.compact
    def __call__(self, x):
        a = nn.Conv(6, (3, 3), name="conv1")(x)
        h = nn.Conv(5, (2, 2), padding="VALID", name="conv2")(nn.relu(a))
        return nn.Dense(3, name="fc")(nn.relu(h).mean(axis=(1, 2)))


def _numpy_head(params, a):
    """The DeepHead head on activations a (..., h, w, 6), float64 numpy."""
    k, b = (np.asarray(params["conv2"][n], np.float64) for n in ("kernel", "bias"))
    r = np.maximum(a, 0)
    h = sum(r[..., i : r.shape[-3] - 1 + i, j : r.shape[-2] - 1 + j, :] @ k[i, j] for i in range(2) for j in range(2)) + b
    pooled = np.maximum(h, 0).mean(axis=(-3, -2))
    return pooled @ np.asarray(params["fc"]["kernel"], np.float64) + np.asarray(params["fc"]["bias"], np.float64)


@pytest.mark.parametrize("value", [0.0, 0.3])
def test_deep_head_channel_and_location_ablation_equal_brute_force(value):
    module = DeepHead()
    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
    variables = module.init(jax.random.key(1), x)
    model = jaxcam.Model(module, variables, jaxcam.ModelInfo(default_layer="conv1", classifier="fc"))
    split = Split(model, parse_layer("conv1"))
    assert not ablation._is_affine(lambda v: split.head(x, v, jnp.array([0, 1])), split.features(x))
    _, state = module.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    a = np.asarray(state["intermediates"]["conv1"]["__call__"][0], np.float64)  # (2, 9, 8, 6), flax's own capture
    targets = np.array([2, 0])
    params, rows = variables["params"], np.arange(2)
    y = _numpy_head(params, a)[rows, targets]

    channel = []
    for k in range(a.shape[-1]):
        ablated = a.copy()
        ablated[..., k] = value
        channel.append((y - _numpy_head(params, ablated)[rows, targets]) / y)
    cam = np.einsum("kn,nhwk->nhw", np.array(channel), a)
    got = jaxcam.ablation_cam(model, x, targets=targets, ablation_value=value, chunk_size=4, normalize=False)
    _close(got, cam)  # chunks of 4 of 6 channels: a full chunk and a remainder

    location = np.zeros(a.shape[:3])
    for i in range(a.shape[1]):
        for j in range(a.shape[2]):
            ablated = a.copy()
            ablated[:, i, j, :] = value
            location[:, i, j] = (y - _numpy_head(params, ablated)[rows, targets]) / y
    got = jaxcam.spatial_ablation_cam(model, x, targets=targets, ablation_value=value, chunk_size=16, normalize=False)
    _close(got, location * a.sum(-1))


def test_resnet18_layer3_ablation_cam_equals_brute_force(tv_resnet18, resnet18):
    """ResNet-18 layer3 (256 channels, head = layer4 + pool + fc), 32 px: each channel zeroed in
    torchvision's layer3 output, then torchvision's layer4/avgpool/fc in float64.

    Tolerance 1e-4 of the map's scale, not 1e-5: y - y^(k) cancels, and float32 itself is ~3e-5 off
    the float64 map here (measured: torchvision's own float32 brute force 2.5e-5, jaxcam 3.7e-5).
    The 1e-5 check of the masked path is the DeepHead test above (float64 numpy reference)."""
    images = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
    targets = np.array([3, 7])
    net = tv_resnet18.double()
    try:
        with torch.no_grad():
            t = nhwc_to_torch(images).double()
            t = net.maxpool(net.relu(net.bn1(net.conv1(t))))
            a = net.layer3(net.layer2(net.layer1(t)))  # (2, 256, 2, 2)

            def head(v):
                return net.fc(torch.flatten(net.avgpool(net.layer4(v)), 1))

            y = head(a)[torch.arange(2), torch.as_tensor(targets)]
            channels = a.shape[1]
            masked = a[None].repeat(channels, 1, 1, 1, 1)  # (C, N, C, h, w)
            masked[torch.arange(channels), :, torch.arange(channels)] = 0.0
            y_k = head(masked.reshape(-1, *a.shape[1:])).reshape(channels, 2, -1)[:, torch.arange(2), torch.as_tensor(targets)]
            weights = ((y[None] - y_k) / y[None]).numpy()  # (C, N)
            cam = np.einsum("kn,nkhw->nhw", weights, a.numpy())
            expected = torch.nn.functional.interpolate(torch.from_numpy(cam[:, None]), size=(32, 32), mode="bilinear",
                                                       align_corners=False)[:, 0].numpy()
    finally:
        net.float()
    got = jaxcam.ablation_cam(resnet18, images, layer="layer3", targets=targets, chunk_size=96, normalize=False)
    _close(got, expected, tol=1e-4)
