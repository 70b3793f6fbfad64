"""torchvision-exact Vision Transformer (ViT-B/16 and any `VisionTransformer` configuration) in Flax Linen.

Module and parameter names are torchvision's state_dict keys: ``conv_proj``, ``class_token``,
``encoder/pos_embedding``, ``encoder/layers/encoder_layer_<i>/{ln_1, self_attention, ln_2, mlp/0,
mlp/3}``, ``encoder/ln``, ``heads/head``. The attention keeps torch's packed ``in_proj_weight``
(3D, D) / ``in_proj_bias`` and its ``out_proj``. LayerNorm eps 1e-6, exact (erf) GELU, no dropout
(torchvision's ViTs are built with dropout 0): converted torchvision weights give the same logits.

Every encoder layer outputs tokens (N, 1 + h*w, D). CAM methods see them as a grid (N, h, w, D)
through `jaxcam.tokens_to_grid` (the class token is kept aside and restored in the head), declared
by the zoo entry, so ``jaxcam.grad_cam(jaxcam.models.vit_b_16(), x)`` needs no extra argument.
"""
from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcam import nn as jnn

LayerNorm = partial(nn.LayerNorm, epsilon=1e-6, use_fast_variance=False)


class MultiheadAttention(nn.Module):
    """torch ``nn.MultiheadAttention(D, heads, batch_first=True)`` self-attention, packed q/k/v weights."""

    dim: int
    num_heads: int

    @nn.compact
    def __call__(self, x):
        d, h = self.dim, self.num_heads
        w = self.param("in_proj_weight", nn.initializers.xavier_uniform(), (3 * d, d))
        b = self.param("in_proj_bias", nn.initializers.zeros, (3 * d,))
        n, t, _ = x.shape
        qkv = (x @ w.T + b).reshape(n, t, 3, h, d // h).transpose(2, 0, 3, 1, 4)  # (3, N, heads, T, d_h)
        out = self.probabilities(qkv[0], qkv[1]) @ qkv[2]
        return nn.Dense(d, name="out_proj")(out.transpose(0, 2, 1, 3).reshape(n, t, d))

    def probabilities(self, q, k):
        """The post-softmax attention probabilities A (N, heads, queries, keys). A method of its own so that
        `flax.linen.intercept_methods` can read or perturb A (LeGrad: `jaxcam.methods.legrad`)."""
        return attention_probabilities(q, k)


def attention(q, k, v, bias=None):
    """softmax(q k^T / sqrt(d) + bias) v over the last two axes (torch's scaled dot product)."""
    return attention_probabilities(q, k, bias) @ v


def attention_probabilities(q, k, bias=None):
    """softmax(q k^T / sqrt(d) + bias) over the keys (the last axis)."""
    logits = (q * q.shape[-1] ** -0.5) @ jnp.swapaxes(k, -1, -2)
    if bias is not None:
        logits = logits + bias
    return jax.nn.softmax(logits, axis=-1)


class MLP(nn.Module):
    """torchvision ``MLP``: Linear(0) GELU Dropout Linear(3) Dropout."""

    hidden: int
    out: int

    @nn.compact
    def __call__(self, x):
        x = nn.gelu(nn.Dense(self.hidden, name="0")(x), approximate=False)
        return nn.Dense(self.out, name="3")(x)


class EncoderBlock(nn.Module):
    num_heads: int
    hidden_dim: int
    mlp_dim: int

    @nn.compact
    def __call__(self, inputs):
        x = LayerNorm(name="ln_1")(inputs)
        x = MultiheadAttention(self.hidden_dim, self.num_heads, name="self_attention")(x) + inputs
        return x + MLP(self.mlp_dim, self.hidden_dim, name="mlp")(LayerNorm(name="ln_2")(x))


class Layers(nn.Module):
    """torchvision's ``encoder.layers`` Sequential: ``encoder_layer_<i>``."""

    num_layers: int
    num_heads: int
    hidden_dim: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        for i in range(self.num_layers):
            x = EncoderBlock(self.num_heads, self.hidden_dim, self.mlp_dim, name=f"encoder_layer_{i}")(x)
        return x


class Encoder(nn.Module):
    """torchvision's ``encoder``: position embedding, the ``layers`` Sequential, final ``ln``."""

    seq_length: int
    layers: Layers

    @nn.compact
    def __call__(self, x):
        pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, self.seq_length, self.layers.hidden_dim))
        return LayerNorm(name="ln")(self.layers(x + pos))


class Heads(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.num_classes, name="head")(x)


class VisionTransformer(nn.Module):
    """torchvision ``VisionTransformer`` (no conv stem, no representation layer): (N, S, S, 3) -> logits.

    Attributes as torchvision's: `image_size` is fixed (the position embedding has one entry per
    patch), `patch_size`, `num_layers`, `num_heads`, `hidden_dim`, `mlp_dim`, `num_classes`.
    ``train`` is accepted for the training loop's sake; there is no dropout (torchvision uses 0.0).
    """

    image_size: int = 224
    patch_size: int = 16
    num_layers: int = 12
    num_heads: int = 12
    hidden_dim: int = 768
    mlp_dim: int = 3072
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x, train: bool = False):
        if x.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(f"this ViT takes {self.image_size}x{self.image_size} inputs (its position embedding is "
                             f"fixed), got {x.shape[1]}x{x.shape[2]}: resize the images to {self.image_size} px")
        p, d = self.patch_size, self.hidden_dim
        x = jnn.Conv(d, (p, p), strides=(p, p), padding="VALID", name="conv_proj")(x)  # (N, h, w, D)
        n = x.shape[0]
        x = x.reshape(n, -1, d)  # row-major patches, as torch's (N, D, h*w) permuted
        cls = self.param("class_token", nn.initializers.zeros, (1, 1, d))
        x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, d)).astype(x.dtype), x], axis=1)
        seq = (self.image_size // p) ** 2 + 1
        x = Encoder(seq, Layers(self.num_layers, self.num_heads, d, self.mlp_dim, parent=None), name="encoder")(x)
        return Heads(self.num_classes, name="heads")(x[:, 0])


ViT_B_16 = partial(VisionTransformer, 224, 16, 12, 12, 768, 3072)


def default_layer(num_layers: int) -> str:
    """pytorch-grad-cam's recommended ViT layer: the last block's first LayerNorm."""
    return f"encoder/layers/encoder_layer_{num_layers - 1}/ln_1"
