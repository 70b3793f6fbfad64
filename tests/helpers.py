"""Test building blocks shared by several test files (one definition each)."""
import os
from pathlib import Path

import flax.linen as nn
import numpy as np
from PIL import Image


class ConvReLU(nn.Module):
    """3x3 convolution (padding 1) + ReLU; its kernel is named 'conv' (the twin torch nets copy it by name)."""

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(self.features, (3, 3), self.stride, padding=1, name="conv")(x))


def xla_flags(*extra: str) -> str:
    """XLA_FLAGS for a subprocess: the suite's own (tests/conftest.py: compile at level 0) plus `extra`.

    A subprocess given only its extra flags would compile at XLA's full optimization (measured alone: the
    four-device training test took 11.0 s that way, 9.8 s with the suite's flags)."""
    return " ".join([os.environ.get("XLA_FLAGS", ""), *extra]).strip()


def random_pngs(folder, names, shape, seed: int = 0):
    """Write uniform-noise RGB images of `shape` (H, W, 3) under `folder` (sub-folders made); returns `folder`."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)
    return folder


class Tiny(nn.Module):
    """conv1 -> conv2 (stride 2) -> global mean -> fc: 24 px inputs, 5 classes."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
        x = nn.relu(nn.Conv(16, (3, 3), strides=2, name="conv2")(x))
        return nn.Dense(5, name="fc")(x.mean(axis=(1, 2)))


def tiny_model():
    """`Tiny` with seed-0 weights as a jaxcam.Model (explained layer conv2)."""
    import jax
    import jax.numpy as jnp

    import jaxcam

    variables = Tiny().init(jax.random.key(0), jnp.zeros((1, 24, 24, 3)))
    info = jaxcam.ModelInfo(name="tiny", default_layer="conv2", classifier="fc", input_size=24)
    return jaxcam.Model(Tiny(), variables, info)


def tiny_images(n=7):
    return np.random.default_rng(0).integers(0, 256, (n, 24, 24, 3), dtype=np.uint8)


def render_folder(folder, out, batch_size: int = 2, method: str = "grad_cam"):
    """`jaxcam render <folder>` in-process on a random 32 px ResNet-20; returns (exit status, stdout + stderr)."""
    import contextlib
    import io

    from jaxcam.cli import render

    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        status = render.main([str(folder), "--method", method, "--model", "resnet20", "--weights", "none",
                              "--image-size", "32", "--batch-size", str(batch_size), "--out", str(out)])
    return status, text.getvalue()


# ------------------------------------------------------------------ GAP + FC references (numpy, any rank)
# A network ending in  features A (N, *space, C) -> global average pool -> Dense(W, b)  has
# dy_c/dA = W[:, c] / #locations everywhere, so most methods have a closed form in A, W and b.


def minmax(m):
    """Per-map (v - min) / (max - min), 0 where the map is constant."""
    axes = tuple(range(1, m.ndim))
    lo, hi = m.min(axis=axes, keepdims=True), m.max(axis=axes, keepdims=True)
    return np.where(hi > lo, (m - lo) / np.where(hi > lo, hi - lo, 1), 0.0)


def finish(m):
    """ReLU then min-max: jaxcam's finishing of a map that already has the input's size."""
    return minmax(np.maximum(m, 0))


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def gap_logits(a, w, b):
    return a.mean(axis=tuple(range(1, a.ndim - 1))) @ w + b


def gap_gradient(a, w, c):
    """dy_c/dA of the GAP + FC head: W[:, c] / #locations at every location."""
    locations = np.prod(a.shape[1:-1])
    return np.broadcast_to(w[:, c].T.reshape(len(c), *(1,) * (a.ndim - 2), -1) / locations, a.shape)


def gap_cam(a, w, c):
    """CAM of a GAP + FC head, which Grad-CAM equals: sum_k W[k, c] A_k, finished."""
    return finish((w[:, c].T.reshape(len(c), *(1,) * (a.ndim - 2), -1) * a).sum(-1))


def gap_ablation(a, w, b, c):
    """Ablation-CAM by brute force: zero channel k, re-run the GAP + FC head; w_k = (y - y^(k)) / y."""
    n = np.arange(len(c))
    y = gap_logits(a, w, b)[n, c]
    drops = np.stack([(y - gap_logits(np.where(np.arange(a.shape[-1]) == k, 0, a), w, b)[n, c]) / y
                      for k in range(a.shape[-1])], 1)
    return finish(np.einsum("nk,n...k->n...", drops, a))


def gap_location_ablations(a, w, b, c):
    """(Spatial-Ablation-CAM, Fast-Ablation-CAM) by brute force: zero every channel at one location at a time;
    spatial: w = (y - y^(loc)) / y times sum_k A_k; fast: softmax(y)_c - softmax(y^(loc))_c."""
    n = np.arange(len(c))
    logits = gap_logits(a, w, b)
    y, p = logits[n, c], softmax(logits)[n, c]
    spatial = a.shape[1:-1]
    weights, fast = np.zeros((len(c), *spatial)), np.zeros((len(c), *spatial))
    for loc in np.ndindex(*spatial):
        ablated = a.copy()
        ablated[(slice(None), *loc)] = 0
        z = gap_logits(ablated, w, b)
        weights[(slice(None), *loc)] = (y - z[n, c]) / y
        fast[(slice(None), *loc)] = p - softmax(z)[n, c]
    return finish(weights * a.sum(-1)), finish(fast)


def score_cam_reference(a, c, forward, x):
    """Score-CAM by brute force when the layer has the input's size: s_k = y_c(x * minmax(A_k)), w = softmax(s);
    `forward` maps inputs to logits (numpy)."""
    space = tuple(range(1, a.ndim - 1))
    scores = []
    for k in range(a.shape[-1]):
        m = a[..., k]
        lo = m.min(axis=space, keepdims=True)
        m = (m - lo) / (m.max(axis=space, keepdims=True) - lo + 1e-8)
        scores.append(np.asarray(forward(x * m[..., None].astype(np.float32)))[np.arange(len(c)), c])
    return finish(np.einsum("nk,n...k->n...", softmax(np.stack(scores, 1)), a))


def first_component(m):
    """numpy SVD: each location's centered channel vector on the first right singular vector, sum(v) >= 0."""
    n, c = m.shape[0], m.shape[-1]
    out = []
    for i in range(n):
        xi = m[i].reshape(-1, c)
        xi = xi - xi.mean(axis=0)
        v = np.linalg.svd(xi, full_matrices=False)[2][0]
        v = -v if v.sum() < 0 else v
        out.append((xi @ v).reshape(m.shape[1:-1]))
    return np.stack(out)


RANDOM_SEED = 3  # random_cam's seed in the closed forms


def gap_closed_forms(a, w, c):
    """{method: raw map} for the methods with a closed form under a GAP + FC head (finish() them)."""
    import jax

    g = gap_gradient(a, w, c)
    space = tuple(range(1, a.ndim - 1))
    wc = w[:, c].T.reshape(len(c), *(1,) * (a.ndim - 2), -1)  # (N, 1.., C)
    sum_a = a.sum(axis=space, keepdims=True)
    alpha = g ** 2 / (2 * g ** 2 + sum_a * g ** 3 + 1e-6)  # + pytorch-grad-cam's eps
    threshold = a.mean(axis=space, keepdims=True) + 2.0 * a.std(axis=space, keepdims=True)
    p = first_component(np.abs(g) * a)
    flip = np.abs(p.min(axis=space, keepdims=True)) > np.abs(p.max(axis=space, keepdims=True))
    uniform = jax.random.uniform(jax.random.key(RANDOM_SEED), (a.shape[0], *(1,) * len(space), a.shape[-1]),
                                 minval=-1.0, maxval=1.0)
    return {
        "grad_cam": (g * a).sum(-1),
        "hires_cam": (g * a).sum(-1),
        "xgrad_cam": (g * a).sum(-1),
        "shapley_cam": (g * a).sum(-1),  # the head is affine: no Hessian term
        "grad_cam_elementwise": np.maximum(g * a, 0).sum(-1),
        "layer_cam": (np.maximum(g, 0) * a).sum(-1),
        "grad_cam_pp": ((np.maximum(g, 0) * alpha).sum(axis=space, keepdims=True) * a).sum(-1),
        "cam": (wc * a).sum(-1),
        "eigen_cam": first_component(a),
        "eigen_grad_cam": first_component(g * a),
        "seg_eigen_cam": np.where(flip, -p, p),
        "fem": (((a > threshold).mean(axis=space, keepdims=True)) * a).sum(-1),
        "random_cam": (np.asarray(uniform) * a).sum(-1),
    }
