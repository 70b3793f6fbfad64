"""torchvision-exact Swin Transformer (Swin-T and any `SwinTransformer` v1 configuration) in Flax Linen.

Module names are torchvision's state_dict keys: ``features/0/0`` (patch conv), ``features/0/2``
(its LayerNorm), ``features/<odd>/<j>/{norm1, attn/{qkv, proj}, norm2, mlp/0, mlp/3}`` (the blocks
of each stage), ``features/<even>/{norm, reduction}`` (patch merging), ``norm``, ``head``. The
relative position bias table is a parameter under its torch name; torch's
``relative_position_index`` buffer is a constant here (the converter drops it: `torchvision_rename`).

Like torchvision's, every block reads and writes (N, H, W, C): a block's output is already a grid,
so CAM methods need no reshape (pytorch-grad-cam needs ``lambda t: t.permute(0, 3, 1, 2)`` on the
same model). Stochastic depth is a training-time regularizer and is not applied (eval semantics).
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxcam import nn as jnn

from jaxcam.models.vit import MLP, attention

LayerNorm = partial(nn.LayerNorm, epsilon=1e-5, use_fast_variance=False)


def relative_position_index(window) -> np.ndarray:
    """(Wh*Ww * Wh*Ww,) index into the bias table, as torchvision's buffer."""
    wh, ww = window
    coords = np.stack(np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij")).reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)
    rel[..., 0] = (rel[..., 0] + wh - 1) * (2 * ww - 1)
    rel[..., 1] += ww - 1
    return rel.sum(-1).reshape(-1)


def shift_mask(pad_h, pad_w, window, shift) -> np.ndarray:
    """(num_windows, Wh*Ww, Wh*Ww) additive mask: -100 between tokens from different shifted regions."""
    regions = np.zeros((pad_h, pad_w), np.float32)
    count = 0
    for hs in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
        for ws in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
            regions[hs[0]:hs[1], ws[0]:ws[1]] = count
            count += 1
    regions = regions.reshape(pad_h // window[0], window[0], pad_w // window[1], window[1])
    regions = regions.transpose(0, 2, 1, 3).reshape(-1, window[0] * window[1])
    diff = regions[:, None, :] - regions[:, :, None]
    return np.where(diff != 0, -100.0, 0.0).astype(np.float32)


class ShiftedWindowAttention(nn.Module):
    """torchvision ``ShiftedWindowAttention`` (v1): window attention with relative position bias."""

    dim: int
    window: Sequence[int]
    shift: Sequence[int]
    num_heads: int

    @nn.compact
    def __call__(self, x):
        wh, ww = self.window
        heads, c = self.num_heads, self.dim
        table = self.param("relative_position_bias_table", nn.initializers.truncated_normal(0.02),
                           ((2 * wh - 1) * (2 * ww - 1), heads))
        qkv_dense = nn.Dense(3 * c, name="qkv")
        proj = nn.Dense(c, name="proj")
        b, h, w, _ = x.shape
        pad_r, pad_b = (ww - w % ww) % ww, (wh - h % wh) % wh
        x = jnp.pad(x, ((0, 0), (0, pad_b), (0, pad_r), (0, 0)))
        ph, pw = x.shape[1:3]
        shift = [0 if wh >= ph else self.shift[0], 0 if ww >= pw else self.shift[1]]
        if sum(shift) > 0:
            x = jnp.roll(x, (-shift[0], -shift[1]), axis=(1, 2))
        nh, nw = ph // wh, pw // ww
        n = wh * ww
        x = x.reshape(b, nh, wh, nw, ww, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, nh * nw, n, c)
        qkv = qkv_dense(x).reshape(b, nh * nw, n, 3, heads, c // heads).transpose(3, 0, 1, 4, 2, 5)
        bias = table[relative_position_index(self.window)].reshape(n, n, heads).transpose(2, 0, 1)  # (heads, n, n)
        if sum(shift) > 0:
            bias = bias + jnp.asarray(shift_mask(ph, pw, self.window, shift))[:, None]  # (nW, heads, n, n)
        out = attention(qkv[0], qkv[1], qkv[2], bias)  # (B, nW, heads, n, d_h)
        out = proj(out.transpose(0, 1, 3, 2, 4).reshape(b, nh * nw, n, c))
        out = out.reshape(b, nh, nw, wh, ww, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
        if sum(shift) > 0:
            out = jnp.roll(out, (shift[0], shift[1]), axis=(1, 2))
        return out[:, :h, :w]


class SwinBlock(nn.Module):
    dim: int
    num_heads: int
    window: Sequence[int]
    shift: Sequence[int]
    mlp_ratio: float = 4.0

    @nn.compact
    def __call__(self, x):
        x = x + ShiftedWindowAttention(self.dim, self.window, self.shift, self.num_heads, name="attn")(
            LayerNorm(name="norm1")(x))
        return x + MLP(int(self.dim * self.mlp_ratio), self.dim, name="mlp")(LayerNorm(name="norm2")(x))


class Stage(nn.Module):
    """One ``features/<odd>`` Sequential of blocks; odd blocks use shifted windows."""

    dim: int
    depth: int
    num_heads: int
    window: Sequence[int]
    mlp_ratio: float = 4.0

    @nn.compact
    def __call__(self, x):
        for j in range(self.depth):
            shift = [0 if j % 2 == 0 else s // 2 for s in self.window]
            x = SwinBlock(self.dim, self.num_heads, tuple(self.window), tuple(shift), self.mlp_ratio, name=str(j))(x)
        return x


class PatchMerging(nn.Module):
    """torchvision ``PatchMerging``: 2x2 neighbours concatenated (x0 x1 x2 x3 order), norm, Linear(4C, 2C)."""

    dim: int

    @nn.compact
    def __call__(self, x):
        h, w = x.shape[1:3]
        x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
        return nn.Dense(2 * self.dim, use_bias=False, name="reduction")(LayerNorm(name="norm")(x))


class PatchEmbed(nn.Module):
    """``features/0``: Conv2d(3, C, p, stride p) (0), Permute to NHWC (1: a no-op here), LayerNorm (2)."""

    dim: int
    patch: Sequence[int]

    @nn.compact
    def __call__(self, x):
        x = jnn.Conv(self.dim, tuple(self.patch), strides=tuple(self.patch), padding="VALID", name="0")(x)
        return LayerNorm(name="2")(x)


class Features(nn.Module):
    patch_size: Sequence[int]
    embed_dim: int
    depths: Sequence[int]
    num_heads: Sequence[int]
    window_size: Sequence[int]
    mlp_ratio: float = 4.0

    @nn.compact
    def __call__(self, x):
        x = PatchEmbed(self.embed_dim, tuple(self.patch_size), name="0")(x)
        index = 1
        for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
            dim = self.embed_dim * 2 ** i
            x = Stage(dim, depth, heads, tuple(self.window_size), self.mlp_ratio, name=str(index))(x)
            index += 1
            if i < len(self.depths) - 1:
                x = PatchMerging(dim, name=str(index))(x)
                index += 1
        return x


class SwinTransformer(nn.Module):
    """torchvision ``SwinTransformer`` (v1 blocks): (N, H, W, 3) -> logits; any input size.

    ``train`` is accepted for the training loop's sake; dropout is 0 and stochastic depth is not
    applied.
    """

    patch_size: Sequence[int] = (4, 4)
    embed_dim: int = 96
    depths: Sequence[int] = (2, 2, 6, 2)
    num_heads: Sequence[int] = (3, 6, 12, 24)
    window_size: Sequence[int] = (7, 7)
    mlp_ratio: float = 4.0
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = Features(tuple(self.patch_size), self.embed_dim, tuple(self.depths), tuple(self.num_heads),
                     tuple(self.window_size), self.mlp_ratio, name="features")(x)
        x = LayerNorm(name="norm")(x).mean(axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)


SwinT = partial(SwinTransformer, (4, 4), 96, (2, 2, 6, 2), (3, 6, 12, 24), (7, 7))


def default_layer(depths: Sequence[int]) -> str:
    """pytorch-grad-cam's recommended Swin layer: the last block's first LayerNorm (``features/7/1/norm1``)."""
    return f"features/{2 * len(depths) - 1}/{depths[-1] - 1}/norm1"


def torchvision_rename(key: str):
    """torchvision Swin keys -> module paths: the ``relative_position_index`` buffers are constants here."""
    return None if key.endswith("relative_position_index") else key
