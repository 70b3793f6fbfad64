"""Targets: which scalar per image a map explains, as functions of the model's whole output.

Pass one as ``targets=`` to any method. Each is a callable ``f(output) -> (N,)`` on the model's
output (class scores (N, K), a segmentation (N, H, W, K), embeddings (N, D), any pytree), hashable by
value when its fields are plain values (``ClassLogit(3) == ClassLogit(3)``: one compilation), else by
identity (build it once and reuse it: a new object compiles anew). Use the method's default
``score="logit"`` with them: each target applies its own score space.

    ClassLogit(c)                    y = z_c                                 (an int target does the same)
    ClassSoftmax(c)                  y = softmax(z)_c
    Binary(c)                        y = z for c = 1, -z for c = 0           (one-logit binary classifiers)
    ReST(c)                          y = z_c - CE(z, c) = 2 z_c - logsumexp(z)   (Liu et al., 2025)
    RawScores()                      y = sum_k z_k
    SemanticSegmentation(c, mask)    y = sum_ij mask_ij z_ij,c               output (N, H, W, K)
    SimilarityToConcept(e)           y = cos(z, e)                           output (N, D)
    DifferenceFromConcept(e)         y = 1 - cos(z, e)
    FinerWeighted(c, others, alpha)  y = sum_j p_j (z_c - alpha z_j) / (sum_j p_j + 1e-9), p = softmax(z)
    Fn(f)                            any f(output) -> (N,)
    PerImage([f_1, ..., f_N])        y_i = f_i(output)[i]: one target per image (a plain list does the same)

These follow pytorch-grad-cam 1.5.7's targets of the same names (ClassifierOutputTarget, ...).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

COSINE_EPS = 1e-8  # torch.nn.CosineSimilarity's


class Target:
    """Base: a callable on the model output returning one score per image (N,)."""

    def __call__(self, output):
        raise NotImplementedError

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not isinstance(v, np.ndarray))
        return f"{type(self).__name__}({fields})"

    def _key(self):
        """(type, fields) when every field is a plain hashable value, else None (then: identity)."""
        fields = tuple(sorted(vars(self).items()))
        try:
            hash(fields)
        except TypeError:
            return None
        return type(self), fields

    def __eq__(self, other):  # equal targets compile once: ClassLogit(3) == ClassLogit(3)
        key = self._key()
        return self is other if key is None else isinstance(other, Target) and key == other._key()

    def __hash__(self):
        key = self._key()
        return id(self) if key is None else hash(key)


class ClassLogit(Target):
    def __init__(self, category: int):
        self.category = int(category)

    def __call__(self, output):
        return output[:, self.category]


class ClassSoftmax(Target):
    def __init__(self, category: int):
        self.category = int(category)

    def __call__(self, output):
        return jax.nn.softmax(output, axis=-1)[:, self.category]


class Binary(Target):
    """A one-logit binary classifier (output (N,) or (N, 1)): +z explains class 1, -z class 0."""

    def __init__(self, category: int):
        if category not in (0, 1):
            raise ValueError(f"Binary category must be 0 or 1, got {category!r}")
        self.category = int(category)

    def __call__(self, output):
        z = output.reshape(output.shape[0], -1)[:, 0]
        return z if self.category == 1 else -z


class ReST(Target):
    """Pre- and post-softmax together: z_c - cross_entropy(z, c)."""

    def __init__(self, category: int):
        self.category = int(category)

    def __call__(self, output):
        z = output[:, self.category]
        return z - (jax.nn.logsumexp(output, axis=-1) - z)


class RawScores(Target):
    """The sum of every output score of each image."""

    def __call__(self, output):
        return output.reshape(output.shape[0], -1).sum(axis=-1)


class SemanticSegmentation(Target):
    """Score of `category` summed over the pixels of `mask`, for outputs (N, H, W, K).

    mask: (H, W) for every image or (N, H, W); any numbers (binary masks select pixels).
    """

    def __init__(self, category: int, mask):
        self.category = int(category)
        self.mask = np.asarray(mask, np.float32)
        if self.mask.ndim not in (2, 3):
            raise ValueError(f"mask must be (H, W) or (N, H, W), got shape {self.mask.shape}")

    def __call__(self, output):
        if output.ndim != 4 or output.shape[-3:-1] != self.mask.shape[-2:]:
            raise ValueError(f"SemanticSegmentation needs outputs (N, H, W, K) with (H, W) = mask shape "
                             f"{self.mask.shape[-2:]}, got {output.shape}")
        return (output[..., self.category] * jnp.asarray(self.mask)).sum(axis=(1, 2))


def _cosine(output, concept):
    concept = jnp.asarray(concept)
    dot = (output * concept).sum(-1)
    norms = jnp.maximum(jnp.linalg.norm(output, axis=-1) * jnp.linalg.norm(concept, axis=-1), COSINE_EPS)
    return dot / norms


class SimilarityToConcept(Target):
    """Cosine similarity of the model's embedding (N, D) to a concept embedding (D,) or (N, D)."""

    def __init__(self, concept):
        self.concept = np.asarray(concept, np.float32)

    def __call__(self, output):
        return _cosine(output, self.concept)


class DifferenceFromConcept(Target):
    """1 - cosine similarity to a concept embedding: what makes the image unlike the concept."""

    def __init__(self, concept):
        self.concept = np.asarray(concept, np.float32)

    def __call__(self, output):
        return 1.0 - _cosine(output, self.concept)


class FinerWeighted(Target):
    """Finer-CAM's comparison target: the main class against softmax-weighted similar classes."""

    def __init__(self, category: int, comparisons, alpha: float = 1.0):
        self.category = int(category)
        self.comparisons = tuple(int(c) for c in comparisons)
        self.alpha = float(alpha)
        if not self.comparisons:
            raise ValueError("FinerWeighted needs at least one comparison category")

    def __call__(self, output):
        main = output[:, self.category]
        prob = jax.nn.softmax(output, axis=-1)
        idx = jnp.asarray(self.comparisons)
        w = prob[:, idx]
        return (w * (main[:, None] - self.alpha * output[:, idx])).sum(-1) / (w.sum(-1) + 1e-9)


class Fn(Target):
    """Any function of the model's whole output (a pytree) -> (N,)."""

    def __init__(self, fn):
        if not callable(fn):
            raise TypeError(f"Fn needs a callable, got {fn!r}")
        self.fn = fn

    def __call__(self, output):
        return self.fn(output)


class PerImage(Target):
    """One target per image, as pytorch-grad-cam's ``targets=[t_1, ..., t_N]``: image i explains f_i(output)[i].

    Methods accept the plain list too. Equal lists of equal targets compare equal (one compilation).
    """

    def __init__(self, targets):
        self.targets = tuple(targets)
        if not self.targets or not all(callable(t) for t in self.targets):
            raise TypeError("PerImage needs a non-empty list of callables, one per image")

    def __call__(self, output):
        batch = jax.tree_util.tree_leaves(output)[0].shape[0]
        if batch != len(self.targets):
            raise ValueError(f"PerImage has {len(self.targets)} targets for a batch of {batch}: pass one per image")
        return jnp.stack([t(output)[i] for i, t in enumerate(self.targets)])


__all__ = [
    "Target", "PerImage", "ClassLogit", "ClassSoftmax", "Binary", "ReST", "RawScores", "SemanticSegmentation",
    "SimilarityToConcept", "DifferenceFromConcept", "FinerWeighted", "Fn",
]
