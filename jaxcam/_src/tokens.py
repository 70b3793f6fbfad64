"""Token models (ViTs): view a layer's (N, tokens, C) output as a (N, h, w, C) grid.

A `reshape_transform` maps the layer's output to (N, h, w, C). It must be LINEAR in the activations
(a slice / reshape / transpose, as usual), because the head needs the way back: replacing the grid
by A' writes A' into the token positions the transform read and leaves the other tokens (e.g. the
class token) as they were:

    tokens' = T^T(A') + (tokens - T^T(T(tokens)))   (T^T = jax.linear_transpose of T)

so gradients, ablations and Score-CAM all work unchanged on the grid. For a selection (slice,
reshape, transpose) this is exact: grid positions get A', the others their old tokens, bit for bit.

Zoo ViTs declare `tokens_to_grid` in their `ModelInfo.reshape_transform`; the split applies it (see
`jaxcam._src.split.Split`), so methods need no argument. A `reshape_transform=` passed to a method
acts on what the split gives (a grid for zoo ViTs: `tokens_to_grid` passes grids through).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def tokens_to_grid(tokens: jnp.ndarray) -> jnp.ndarray:
    """Default ViT reshape: (N, 1 + h*w, C) -> (N, h, w, C); drops the class token, square grid.

    For other layouts (several prefix tokens, non-square grids) write your own linear function.
    A grid (N, h, w, C) is returned as it is (a zoo ViT's layers are grids already).
    """
    if tokens.ndim == 4:
        return tokens
    n, t, c = tokens.shape
    side = math.isqrt(t - 1)
    if side * side != t - 1:
        raise ValueError(
            f"tokens_to_grid expects 1 class token + a square grid of patches; got {t} tokens. "
            "Pass your own reshape_transform=lambda t: t[:, k:].reshape(N, h, w, C)"
        )
    return tokens[:, 1:].reshape(n, side, side, c)


class ReshapedSplit:
    """A `Split` seen through a linear `transform` of its layer's output (same interface as `Split`)."""

    def __init__(self, split, transform):
        self.split = split
        self.transform = transform

    @property
    def model(self):
        return self.split.model

    @property
    def layer(self):
        return self.split.layer

    @property
    def can_gather_classes(self) -> bool:
        return self.split.can_gather_classes

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        """T(layer output): (N, h, w, C)."""
        return self.transform(self.split.features(x))

    def head(self, x: jnp.ndarray, activations: jnp.ndarray, classes=None) -> jnp.ndarray:
        """Scores with the grid replaced by `activations` (N, h, w, C); untouched tokens stay."""
        return self.split.head(x, from_grid(self.transform, self.split.features(x), activations), classes)


def from_grid(transform, tokens: jnp.ndarray, grid: jnp.ndarray) -> jnp.ndarray:
    """The tokens whose `transform` is `grid`, the tokens the transform does not read kept from `tokens`."""
    back = jax.linear_transpose(transform, tokens)
    (placed,) = back(grid.astype(tokens.dtype))
    (read,) = back(transform(tokens))
    return placed + (tokens - read)
