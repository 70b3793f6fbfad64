"""torchvision-exact DenseNet-121/169 in Flax Linen.

Module names are torchvision's state_dict keys (``features/conv0``, ``features/denseblock4/
denselayer16/conv2``, ``features/transition3/conv``, ``features/norm5``, ``classifier``). As in
torchvision, the network output is ``classifier(mean(relu(features(x))))``; ``features/norm5`` is
the last feature map (pytorch-grad-cam's ``features[-1]``). Old torchvision checkpoints name
layer weights ``norm.1`` instead of ``norm1``: `torchvision_rename` fixes that.
"""
from __future__ import annotations

import re
from functools import partial
from typing import Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxcam import nn as jnn
from jaxcam.models.resnet import batch_norm


def conv(features: int, kernel: int, name: str) -> nn.Conv:
    pad = kernel // 2
    return jnn.Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)), use_bias=False, name=name)


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bn_size * growth) - BN-ReLU-3x3 conv (growth); returns the new features only."""

    growth_rate: int
    bn_size: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = conv(self.bn_size * self.growth_rate, 1, "conv1")(nn.relu(batch_norm(train, "norm1")(x)))
        return conv(self.growth_rate, 3, "conv2")(nn.relu(batch_norm(train, "norm2")(x)))


class DenseBlock(nn.Module):
    """``denseblockN``: layers ``denselayer1..L``, each fed the concatenation of all earlier outputs."""

    num_layers: int
    growth_rate: int
    bn_size: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i in range(self.num_layers):
            new = DenseLayer(self.growth_rate, self.bn_size, name=f"denselayer{i + 1}")(x, train)
            x = jnp.concatenate([x, new], axis=-1)
        return x


class Transition(nn.Module):
    """``transitionN``: BN-ReLU-1x1 conv halving the channels, then 2x2 average pool."""

    features: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = conv(self.features, 1, "conv")(nn.relu(batch_norm(train, "norm")(x)))
        return nn.avg_pool(x, (2, 2), (2, 2))


class Features(nn.Module):
    """torchvision's ``features``: stem, dense blocks with transitions, final BatchNorm ``norm5``."""

    block_config: Sequence[int]
    growth_rate: int = 32
    num_init_features: int = 64
    bn_size: int = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = jnn.Conv(self.num_init_features, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False, name="conv0")(x)
        x = nn.relu(batch_norm(train, "norm0")(x))
        x = jnn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
        channels = self.num_init_features
        for i, layers in enumerate(self.block_config):
            x = DenseBlock(layers, self.growth_rate, self.bn_size, name=f"denseblock{i + 1}")(x, train)
            channels += layers * self.growth_rate
            if i != len(self.block_config) - 1:
                channels //= 2
                x = Transition(channels, name=f"transition{i + 1}")(x, train)
        return batch_norm(train, "norm5")(x)


class DenseNet(nn.Module):
    """DenseNet-BC (Huang et al. 2017), torchvision layout. (N, H, W, 3) -> logits (N, num_classes)."""

    block_config: Sequence[int]
    num_classes: int = 1000
    growth_rate: int = 32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = Features(self.block_config, self.growth_rate, name="features")(x, train)
        x = jnp.mean(nn.relu(x), axis=(1, 2))
        return nn.Dense(self.num_classes, name="classifier")(x)


DenseNet121 = partial(DenseNet, (6, 12, 24, 16))
DenseNet169 = partial(DenseNet, (6, 12, 32, 32))

_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def torchvision_rename(key: str) -> Optional[str]:
    """``...denselayer1.norm.1.weight`` (old torchvision checkpoints) -> ``...denselayer1.norm1.weight``."""
    match = _OLD_KEY.match(key)
    return match.group(1) + match.group(2) if match else key
