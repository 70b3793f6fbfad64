"""`random_cam` against numpy: activations from the torch twin of ResNet-20 (identical weights), the weights
w (N, 1, 1, C) ~ Uniform(-1, 1) drawn from ``jax.random.key(seed)`` as its docstring defines them, the map
ReLU(sum_k w_k A_k) and the finish (min-max, torch's half-pixel bilinear resize, min-max) in numpy/torch."""
import jax
import numpy as np
import pytest
import torch

import jaxcam
from tests.torch_utils import nhwc_to_torch

TOL = 1e-5  # measured 5.5e-7 to 1.8e-6 max-abs (float32 jaxcam vs float64 numpy)


def finish(cam, size, final_activation="relu"):
    def minmax(c):
        lo = c.min(axis=(1, 2), keepdims=True)
        span = c.max(axis=(1, 2), keepdims=True) - lo
        return np.where(span > 0, (c - lo) / np.where(span > 0, span, 1.0), 0.0)

    cam = np.asarray(cam, np.float64)
    if final_activation == "relu":
        cam = np.maximum(cam, 0.0)
    elif final_activation == "softmax":
        flat = cam.reshape(len(cam), -1)
        e = np.exp(flat - flat.max(1, keepdims=True))
        cam = (e / e.sum(1, keepdims=True)).reshape(cam.shape)
    up = torch.nn.functional.interpolate(torch.from_numpy(minmax(cam))[:, None], size, mode="bilinear",
                                         align_corners=False)
    return minmax(up[:, 0].numpy())


def torch_layer(tv, module, x):
    store = {}
    handle = module.register_forward_hook(lambda m, i, o: store.update(a=o.detach().numpy()))
    with torch.no_grad():
        tv(nhwc_to_torch(x))
    handle.remove()
    return store["a"].transpose(0, 2, 3, 1).astype(np.float64)  # NHWC


@pytest.mark.parametrize("seed,final_activation", [(0, "relu"), (3, "relu"), (3, "softmax"), (3, "none")])
def test_random_cam_matches_numpy(tv_resnet20, resnet20, seed, final_activation):
    x = np.random.default_rng(5).normal(size=(2, 16, 16, 3)).astype(np.float32)
    a = torch_layer(tv_resnet20, tv_resnet20.layer3, x)
    w = np.asarray(jax.random.uniform(jax.random.key(seed), (2, 1, 1, a.shape[-1]), minval=-1.0, maxval=1.0))
    expected = finish((w * a).sum(-1), (16, 16), final_activation)
    kwargs = {"seed": seed} if seed else {}
    if final_activation != "relu":
        kwargs["final_activation"] = final_activation
    got = np.asarray(jaxcam.random_cam(resnet20, x, layer="layer3", **kwargs))
    err = np.abs(got - expected).max()
    print(f"random_cam seed={seed} {final_activation}: max-abs {err:.2e}")
    assert (expected.max((1, 2)) - expected.min((1, 2)) > 0.5).all()
    assert err < TOL
