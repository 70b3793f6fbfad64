"""Deep Feature Factorization (Collins et al., ECCV 2018, arXiv:1806.10206): the layer's activations
factorized into K concepts by non-negative matrix factorization.

    V    = A as a (C, N*h*w) matrix, each channel shifted by its minimum o_c so that V >= 0
    V   ~= W H,   W (C, K) >= 0, H (K, N*h*w) >= 0        (Frobenius NMF, coordinate descent)
    concepts   W + o          (C, K): each concept is a channel vector
    maps       H reshaped (N, K, h, w), each min-maxed and resized to the input size
    top classes   the classifier applied to each concept vector (softmax, top k), when the model
                  names its classifier (a Dense on pooled channels: ModelInfo.classifier)

`factorization_overlay` colours each pixel with the colour of its strongest concept, brightness = that
concept's map (pytorch-grad-cam's show_factorization_on_image, gist_rainbow colours).
The NMF solver is not scikit-learn's own (pytorch-grad-cam's): NMF solutions are
not unique, so tests compare the reconstruction error with scikit-learn's, not the concepts.
"""
from __future__ import annotations

__all__ = ['deep_feature_factorization', 'factorization_overlay']  # public helpers beyond the registered methods

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._src import maps as maps_lib
from jaxcam._src.request import make_request
from jaxcam._src.split import Split
from jaxcam.methods.cam import classifier_params
from jaxcam.methods.registry import method, Option
from jaxcam._src.kinds import as_model


NMF_EPS = 1e-10


class Factorization(NamedTuple):
    concepts: jax.Array  # (C, K) concept embeddings
    maps: jax.Array  # (N, K, H, W) per-concept maps in [0, 1]
    concept_scores: Optional[jax.Array]  # (K, num_classes) softmax of the classifier on each concept, or None
    top_classes: Optional[jax.Array]  # (K, top_k) class indices, best first, or None


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def nmf(v, k: int, iterations: int = 200, seed: int = 0):
    """Non-negative V (m, n) ~= W (m, k) H (k, n) minimizing |V - WH|_F.

    Coordinate descent over the components (HALS: each row of H, then each column of W, is the
    non-negative least-squares optimum with the others fixed), the solver family of scikit-learn's
    default. Initialization as scikit-learn's init="random": |normal| * sqrt(mean(V) / k).
    """
    scale = jnp.sqrt(v.mean() / k)
    kw, kh = jax.random.split(jax.random.key(seed))
    w = scale * jnp.abs(jax.random.normal(kw, (v.shape[0], k)))
    h = scale * jnp.abs(jax.random.normal(kh, (k, v.shape[1])))

    def update_rows(h, gram, cross):
        """Each row j of h: max(0, h_j + (cross_j - gram_j h) / gram_jj), in turn."""
        def one(j, h):
            row = h[j] + (cross[j] - gram[j] @ h) / jnp.maximum(gram[j, j], NMF_EPS)
            return h.at[j].set(jnp.maximum(row, 0.0))
        return jax.lax.fori_loop(0, k, one, h)

    def step(_, wh):
        w, h = wh
        h = update_rows(h, w.T @ w, w.T @ v)
        w = update_rows(w.T, h @ h.T, h @ v.T).T
        return w, h

    return jax.lax.fori_loop(0, iterations, step, (w, h))


def deep_feature_factorization(model, x, layer=None, *, n_components: int = 5, top_k: int = 2,
                               iterations: int = 200, seed: int = 0) -> Factorization:
    """DFF: K concepts of the layer's activations over the batch, their maps and (if possible) their top classes.

    Args:
      model, x, layer: as `jaxcam.hires_cam`.
      n_components: K, the number of concepts; top_k: classes listed per concept.
      iterations, seed: of the NMF solver.

    Returns:
      `Factorization` (concepts (C, K), maps (N, K, H, W) in [0, 1], concept_scores (K, classes) or None,
      top_classes (K, top_k) or None).
    """
    if int(n_components) < 1:
        raise ValueError(f"n_components must be a positive int, got {n_components!r}")
    model = as_model(model)
    req = make_request(model, x, layer, None)
    a = Split(req.model, req.layer).features(req.x)  # (N, h, w, C), or (N, l, C) / (N, d, h, w, C)
    n, *spatial, c = a.shape
    v = jnp.nan_to_num(a).reshape(-1, c).T  # (C, N*h*w)
    offset = v.min(axis=1, keepdims=True)
    weights, hidden = nmf(v - offset, int(n_components), int(iterations), int(seed))
    concepts = weights + offset
    per_concept = jnp.swapaxes(hidden.reshape(n_components, n, *spatial), 0, 1).reshape(n * n_components, *spatial)
    concept_maps = maps_lib.minmax(maps_lib.resize(maps_lib.minmax(per_concept), req.x.shape[1:-1]))
    concept_maps = concept_maps.reshape(n, n_components, *req.x.shape[1:-1])
    scores = top = None
    if model.info.classifier is not None:
        params = classifier_params(model)
        if params["kernel"].shape[0] == c:
            scores = jax.nn.softmax(concepts.T @ params["kernel"] + params.get("bias", 0.0), axis=-1)
            top = jnp.argsort(-scores, axis=-1)[:, :top_k]
    return Factorization(concepts, concept_maps, scores, top)


@method("deep_feature_factorization",
        formula='DFF\'s per-concept maps as {"concept_k": (N, H, W)} (the registry\'s "maps" output; targets unused). (Collins et al., ECCV 2018 (arXiv:1806.10206))',
        family="eigen", output="maps",
        options=(Option("n_components", 5, "number of concepts", positive=True), Option("iterations", 200, "NMF iterations", positive=True), Option("seed", 0, "seed of the NMF initialization")),
        aliases=("dff",), paper="Collins et al., ECCV 2018 (arXiv:1806.10206)", pgc="DeepFeatureFactorization")
def dff_maps(model, x, layer=None, targets=None, *, n_components: int = 5, iterations: int = 200, seed: int = 0):
    """DFF's per-concept maps as {"concept_k": (N, H, W)} (the registry's "maps" output; targets unused)."""
    f = deep_feature_factorization(model, x, layer, n_components=n_components, iterations=iterations, seed=seed)
    return {f"concept_{k}": f.maps[:, k] for k in range(f.maps.shape[1])}


def concept_colors(n_components: int) -> np.ndarray:
    """(K, 3) RGB colours in [0, 1]: matplotlib's gist_rainbow at k / K."""
    from matplotlib import colormaps

    cmap = colormaps["gist_rainbow"]
    return np.array([cmap(k / n_components)[:3] for k in range(n_components)], np.float32)


def factorization_overlay(image, concept_maps, colors=None, image_weight: float = 0.5) -> np.ndarray:
    """uint8 RGB (H, W, 3): each pixel tinted by its strongest concept, as bright as that concept's map.

    Args:
      image: (H, W, 3) uint8 or floats in [0, 1].
      concept_maps: (K, H, W) maps in [0, 1] (one image's `Factorization.maps`).
      colors: (K, 3) RGB in [0, 1] (default `concept_colors(K)`).
    """
    m = np.asarray(concept_maps, np.float32)
    img = np.asarray(image)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    if m.ndim != 3 or m.shape[1:] != img.shape[:2]:
        raise ValueError(f"concept_maps must be (K, H, W) with (H, W) = image size {img.shape[:2]}, got {m.shape}")
    colors = concept_colors(m.shape[0]) if colors is None else np.asarray(colors, np.float32)
    winner = m.argmax(axis=0)
    value = np.take_along_axis(m, winner[None], axis=0)[0]
    hue = colors / np.maximum(colors.max(axis=1, keepdims=True), 1e-8)  # the colour at full brightness (V = 1)
    tint = hue[winner] * value[..., None]
    return np.uint8(np.clip(img * image_weight + tint * (1 - image_weight), 0, 1) * 255)
