"""Deep Feature Factorization against pytorch-grad-cam 1.5.7's `DeepFeatureFactorization` on identical weights,
and its NMF solver (options `iterations`, `seed`) against a numpy loop.

NMF has no unique solution in general, so the comparison with pgc (scikit-learn's solver, its own random
start) uses activations whose factorization IS unique up to the order and scale of the concepts: a 1x1-conv
+ ReLU layer that maps each of K input colours onto its own channels only (separable: each channel and each
pixel belongs to exactly one concept). Maps are min-maxed per concept (scale-free) and concepts compared by
direction, both after matching concepts by their maps (order-free).
"""
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pytorch_grad_cam import DeepFeatureFactorization

import jaxcam
from jaxcam.methods.dff import NMF_EPS
from tests.torch_utils import nhwc_to_torch

CHANNELS_PER_CONCEPT = 2
SIZE = 8
TOL = 5e-6  # measured: maps 2.4e-7 (K=5) / 3.6e-7 (K=6), concept directions 8.9e-8 / 1.2e-7 max-abs
SOLVER_TOL = 5e-5  # measured: concepts 4.8e-6 relative (200 iterations, float32 vs float64), maps 1.5e-6


class TorchTwin(torch.nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, channels, 1, bias=False), torch.nn.ReLU())
        self.fc = torch.nn.Linear(channels, 4)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class Features(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(self.channels, (1, 1), use_bias=False, name="0")(x))


class FlaxTwin(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(4, name="fc")(Features(self.channels, name="features")(x).mean((1, 2)))


def separable(k, seed):
    """(torch model, jaxcam model, images (2, 8, 8, 3), true maps (2, K, 8, 8)).

    Colour j is p_j = (cos t_j, sin t_j, 1), t_j = 2 pi j / K; the channels of concept j have weights
    w = (cos t_j, sin t_j, -0.6) * c (c > 0), so w . p_i = c (cos(t_i - t_j) - 0.6) is > 0 only for i = j
    (K >= 5: cos 72 deg < 0.6). Each pixel is s * p_j for one j and an intensity s in [0.5, 1.5].
    """
    rng = np.random.default_rng(seed)
    t = 2 * np.pi * np.arange(k) / k
    colours = np.stack([np.cos(t), np.sin(t), np.ones(k)], 1)
    rows = [np.array([np.cos(t[j]), np.sin(t[j]), -0.6]) * rng.uniform(0.5, 2.0)
            for j in range(k) for _ in range(CHANNELS_PER_CONCEPT)]
    tv = TorchTwin(len(rows)).eval()
    with torch.no_grad():
        tv.features[0].weight.copy_(torch.tensor(np.array(rows), dtype=torch.float32)[:, :, None, None])
    model = jaxcam.models.build(FlaxTwin(len(rows)), jaxcam.ModelInfo(name="dff_twin", default_layer="features",
                                                                      input_size=SIZE), weights=tv.state_dict())
    owner = rng.integers(0, k, (2, SIZE, SIZE))
    owner.reshape(-1)[:k] = np.arange(k)  # every concept present
    intensity = rng.uniform(0.5, 1.5, (2, SIZE, SIZE))
    images = (colours[owner] * intensity[..., None]).astype(np.float32)
    truth = np.stack([np.where(owner == j, intensity, 0.0) for j in range(k)], 1)
    return tv, model, images, truth


def match(expected_maps, got_maps):
    """The permutation of got's concepts that best matches expected's (by map error)."""
    k = expected_maps.shape[1]
    return min(itertools.permutations(range(k)),
               key=lambda p: np.abs(got_maps[:, list(p)] - expected_maps).max())


@pytest.mark.parametrize("k", [5, 6])  # 5: the default n_components
def test_dff_matches_pgc(k):
    tv, model, images, truth = separable(k, seed=k)
    with torch.no_grad():
        np.testing.assert_allclose(model(jnp.asarray(images)), tv(nhwc_to_torch(images)).numpy(), atol=1e-5)
    dff = DeepFeatureFactorization(model=tv, target_layer=tv.features)
    concepts_pgc, maps_pgc = dff(nhwc_to_torch(images), n_components=k)
    maps_pgc = np.stack(maps_pgc)  # one (K, H, W) array per image
    dff.activations_and_grads.release()
    kwargs = {} if k == 5 else {"n_components": k}
    f = jaxcam.deep_feature_factorization(model, images, layer="features", **kwargs)
    maps, concepts = np.asarray(f.maps), np.asarray(f.concepts)
    assert maps.shape == maps_pgc.shape == (2, k, SIZE, SIZE)
    perm = list(match(maps_pgc, maps))
    err = np.abs(maps[:, perm] - maps_pgc).max()
    unit = lambda c: c / np.linalg.norm(c, axis=0, keepdims=True)  # noqa: E731
    concept_err = np.abs(unit(concepts[:, perm]) - unit(concepts_pgc)).max()
    truth = truth / truth.max((2, 3), keepdims=True)
    truth_err = np.abs(truth[:, list(match(maps_pgc, truth))] - maps_pgc).max()
    print(f"DFF K={k}: maps vs pgc {err:.2e}, concept directions {concept_err:.2e}, pgc vs truth {truth_err:.2e}")
    assert truth_err < TOL  # the reference found the unique factorization (measured 3.4e-7 / 3.8e-7)
    assert err < TOL and concept_err < TOL
    registry_maps = jaxcam.methods.registry.get("dff")(model, images, "features", **kwargs)
    np.testing.assert_array_equal(np.stack([registry_maps[f"concept_{j}"] for j in range(k)], 1), maps)


def numpy_hals(v, k, iterations, seed):
    """scikit-learn-style random start |normal| * sqrt(mean(V) / k) (the normals from jax.random with the
    seed, so both start equal), then HALS sweeps (rows of H, then columns of W), float64."""
    kw, kh = jax.random.split(jax.random.key(seed))
    scale = np.sqrt(v.mean() / k)
    w = scale * np.abs(np.asarray(jax.random.normal(kw, (v.shape[0], k)), np.float64))
    h = scale * np.abs(np.asarray(jax.random.normal(kh, (k, v.shape[1])), np.float64))
    for _ in range(iterations):
        gram, cross = w.T @ w, w.T @ v
        for j in range(k):
            h[j] = np.maximum(h[j] + (cross[j] - gram[j] @ h) / max(gram[j, j], NMF_EPS), 0.0)
        gram, cross = h @ h.T, h @ v.T
        for j in range(k):
            w[:, j] = np.maximum(w[:, j] + (cross[j] - gram[j] @ w.T) / max(gram[j, j], NMF_EPS), 0.0)
    return w, h


@pytest.mark.parametrize("iterations,seed", [(200, 0), (3, 0), (3, 4)])  # 200, 0: the defaults
def test_dff_iterations_and_seed_match_a_numpy_solver(tv_resnet20, resnet20, iterations, seed):
    """The layer's activations from the torch twin, the factorization by `numpy_hals`."""
    x = np.random.default_rng(3).normal(size=(2, 16, 16, 3)).astype(np.float32)
    kwargs = {k: v for k, v in (("iterations", iterations), ("seed", seed)) if (k, v) not in (("iterations", 200), ("seed", 0))}
    f = jaxcam.deep_feature_factorization(resnet20, x, layer="layer3", n_components=3, **kwargs)
    store = {}
    handle = tv_resnet20.layer3.register_forward_hook(lambda m, i, o: store.update(a=o.detach().numpy()))
    with torch.no_grad():
        tv_resnet20(nhwc_to_torch(x))
    handle.remove()
    a = store["a"].astype(np.float64).transpose(0, 2, 3, 1)  # (N, h, w, C)
    v = a.reshape(-1, a.shape[-1]).T
    offset = v.min(1, keepdims=True)
    w, h = numpy_hals(v - offset, 3, iterations, seed)
    concepts_err = np.abs(np.asarray(f.concepts) - (w + offset)).max() / np.abs(w + offset).max()
    raw = h.reshape(3, 2, *a.shape[1:3]).transpose(1, 0, 2, 3).reshape(6, *a.shape[1:3])
    expected = minmax(torch.nn.functional.interpolate(torch.from_numpy(minmax(raw))[:, None], (16, 16),
                                                      mode="bilinear", align_corners=False)[:, 0].numpy())
    maps_err = np.abs(np.asarray(f.maps).reshape(6, 16, 16) - expected).max()
    print(f"DFF iterations={iterations} seed={seed}: concepts rel. error {concepts_err:.2e}, maps {maps_err:.2e}")
    assert concepts_err < SOLVER_TOL and maps_err < SOLVER_TOL


def minmax(c):
    lo, hi = c.min((1, 2), keepdims=True), c.max((1, 2), keepdims=True)
    return (c - lo) / (hi - lo)
