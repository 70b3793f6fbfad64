"""torchvision-exact ResNet-18/34/50/101/152 in Flax Linen.

Module names follow torchvision's state_dict keys one to one (``layer4/1/conv2``,
``layer1/0/downsample/0``), padding is torch-style explicit, BatchNorm uses eps 1e-5 and running
statistics unless ``train=True``; converted torchvision weights give the same logits.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence, Type

import flax.linen as nn
import jax.numpy as jnp

from jaxcam import nn as jnn


def conv(features: int, kernel: int, stride: int = 1, name: str = None) -> nn.Conv:
    """Bias-free conv with torch padding kernel // 2."""
    pad = kernel // 2
    return jnn.Conv(features, (kernel, kernel), (stride, stride), padding=((pad, pad), (pad, pad)),
                    use_bias=False, name=name)


def batch_norm(train: bool, name: str, eps: float = 1e-5) -> jnn.BatchNorm:
    """flax BatchNorm semantics (momentum 0.9), trained with jaxcam.nn's fast statistics."""
    return jnn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=eps, name=name)


class Downsample(nn.Module):
    """torchvision's ``downsample`` Sequential: 1x1 conv (``0``) + BatchNorm (``1``)."""

    features: int
    stride: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = conv(self.features, 1, self.stride, name="0")(x)
        return batch_norm(train, "1")(x)


class Block(nn.Module):
    """What torchvision's two residual blocks share: ``planes``, ``stride`` and the optional ``downsample``."""

    planes: int
    stride: int = 1
    downsample: bool = False
    expansion = 1

    def shortcut(self, x, train: bool):
        if not self.downsample:
            return x
        return Downsample(self.planes * self.expansion, self.stride, name="downsample")(x, train)


class BasicBlock(Block):
    @nn.compact
    def __call__(self, x, train: bool = False):
        out = nn.relu(batch_norm(train, "bn1")(conv(self.planes, 3, self.stride, "conv1")(x)))
        out = batch_norm(train, "bn2")(conv(self.planes, 3, 1, "conv2")(out))
        return nn.relu(out + self.shortcut(x, train))


class Bottleneck(Block):
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        out = nn.relu(batch_norm(train, "bn1")(conv(self.planes, 1, 1, "conv1")(x)))
        out = nn.relu(batch_norm(train, "bn2")(conv(self.planes, 3, self.stride, "conv2")(out)))
        out = batch_norm(train, "bn3")(conv(self.planes * 4, 1, 1, "conv3")(out))
        return nn.relu(out + self.shortcut(x, train))


class Stage(nn.Module):
    """torchvision's ``layerN`` Sequential of blocks named ``0``, ``1``, ..."""

    block: Type[nn.Module]
    planes: int
    blocks: int
    stride: int
    in_planes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        needs_downsample = self.stride != 1 or self.in_planes != self.planes * self.block.expansion
        for i in range(self.blocks):
            first = i == 0
            x = self.block(self.planes, self.stride if first else 1, first and needs_downsample, name=str(i))(x, train)
        return x


class ResNet(nn.Module):
    """ResNet (He et al. 2016), torchvision layout. Input (N, H, W, 3) -> logits (N, num_classes)."""

    block: Type[nn.Module]
    stage_sizes: Sequence[int]
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = jnn.Conv(64, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False, name="conv1")(x)
        x = nn.relu(batch_norm(train, "bn1")(x))
        x = jnn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
        in_planes = 64
        for i, blocks in enumerate(self.stage_sizes):
            planes = 64 * 2**i
            x = Stage(self.block, planes, blocks, 1 if i == 0 else 2, in_planes, name=f"layer{i + 1}")(x, train)
            in_planes = planes * self.block.expansion
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="fc")(x)


ResNet18 = partial(ResNet, BasicBlock, (2, 2, 2, 2))
ResNet34 = partial(ResNet, BasicBlock, (3, 4, 6, 3))
ResNet50 = partial(ResNet, Bottleneck, (3, 4, 6, 3))
ResNet101 = partial(ResNet, Bottleneck, (3, 4, 23, 3))
ResNet152 = partial(ResNet, Bottleneck, (3, 8, 36, 3))
