"""torchvision-exact VGG-16 (and VGG-16-BN) in Flax Linen.

Module names are torchvision's state_dict keys: ``features/<i>`` for the i-th entry of the torch
``features`` Sequential (convs, BatchNorms, and -- as parameter-free modules -- every ReLU and
MaxPool, so any torch index is a valid CAM layer, e.g. ``features/29`` = ReLU after the last conv,
``features/30`` = the last max-pool, pytorch-grad-cam's ``features[-1]``) and ``classifier/0|3|6``.
The 7x7 adaptive average pool and the channel-first flatten follow torch, so converted torchvision
weights give the same logits at any input size >= 32 px.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence, Union

import flax.linen as nn
import jax.numpy as jnp

from jaxcam import nn as jnn
from jaxcam.models.resnet import batch_norm

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class ReLU(nn.Module):
    """A parameter-free ReLU module, so it has a path (a CAM layer) like torch's ``nn.ReLU``."""

    @nn.compact
    def __call__(self, x):
        return nn.relu(x)


class MaxPool2(nn.Module):
    """torch ``MaxPool2d(2, 2)`` as a module (floor mode)."""

    @nn.compact
    def __call__(self, x):
        return jnn.max_pool(x, (2, 2), (2, 2))


def adaptive_avg_pool(x: jnp.ndarray, size: int) -> jnp.ndarray:
    """torch ``adaptive_avg_pool2d`` (N, H, W, C) -> (N, size, size, C): bins [floor(i*H/s), ceil((i+1)*H/s))."""
    h, w = x.shape[1:3]
    if (h, w) == (size, size):
        return x

    def bins(n):
        return [(i * n // size, -(-(i + 1) * n // size)) for i in range(size)]

    rows = [jnp.mean(x[:, a:b], axis=1) for a, b in bins(h)]  # each (N, W, C)
    out = jnp.stack([jnp.stack([jnp.mean(r[:, a:b], axis=1) for a, b in bins(w)], axis=1) for r in rows], axis=1)
    return out


class Features(nn.Module):
    """torchvision's ``features`` Sequential; children named by their torch index."""

    cfg: Sequence[Union[int, str]]
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        i = 0
        for v in self.cfg:
            if v == "M":
                x, i = MaxPool2(name=str(i))(x), i + 1
                continue
            x, i = jnn.Conv(v, (3, 3), padding=((1, 1), (1, 1)), name=str(i))(x), i + 1
            if self.batch_norm:
                x, i = batch_norm(train, str(i))(x), i + 1
            x, i = ReLU(name=str(i))(x), i + 1
        return x


class Classifier(nn.Module):
    """torchvision's ``classifier``: Linear(0) ReLU Dropout Linear(3) ReLU Dropout Linear(6)."""

    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dropout(0.5, deterministic=not train)(nn.relu(nn.Dense(4096, name="0")(x)))
        x = nn.Dropout(0.5, deterministic=not train)(nn.relu(nn.Dense(4096, name="3")(x)))
        return nn.Dense(self.num_classes, name="6")(x)


class VGG(nn.Module):
    """VGG (Simonyan & Zisserman 2015), torchvision layout. (N, H, W, 3) -> logits (N, num_classes).

    ``train=True`` uses batch statistics and dropout (pass ``rngs={'dropout': key}``).
    """

    cfg: Sequence[Union[int, str]] = VGG16_CFG
    batch_norm: bool = False
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = Features(self.cfg, self.batch_norm, name="features")(x, train)
        x = adaptive_avg_pool(x, 7)
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)  # torch flattens channel-first
        return Classifier(self.num_classes, name="classifier")(x, train)


VGG16 = partial(VGG, VGG16_CFG, False)
VGG16BN = partial(VGG, VGG16_CFG, True)
