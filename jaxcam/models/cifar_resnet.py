"""CIFAR ResNets in Flax Linen: ResNet-20/32/44/56 (He et al. 2016, section 4.2, akamaster layout)
and ResNet-18 for CIFAR (`CifarResNet18`, the common 11M-parameter layout; see its docstring).

3x3 stem conv 3->16 + BN + ReLU; stages ``layer1..3`` of n BasicBlocks with widths 16/32/64 (stride
2 at the first block of stages 2 and 3); option-A shortcut (``x[:, ::2, ::2]`` zero-padded by
planes//4 channels on both sides, no parameters); global average pool; ``linear`` 64 -> classes.
Module names are the state_dict keys of akamaster/pytorch_resnet_cifar10 (``conv1``, ``bn1``,
``layer3/8/conv2``, ``linear``), so its checkpoints convert by name. Input 32x32 (any size works).
"""
from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax.numpy as jnp

import jaxcam.models.resnet as resnet
from jaxcam.models.resnet import batch_norm, conv


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN + option-A shortcut, then ReLU."""

    planes: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        out = nn.relu(batch_norm(train, "bn1")(conv(self.planes, 3, self.stride, "conv1")(x)))
        out = batch_norm(train, "bn2")(conv(self.planes, 3, 1, "conv2")(out))
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.planes:
            pad = self.planes // 4
            shortcut = jnp.pad(x[:, ::2, ::2, :], ((0, 0), (0, 0), (0, 0), (pad, pad)))
        return nn.relu(out + shortcut)


class Stage(nn.Module):
    """``layerN``: blocks named ``0``, ``1``, ..."""

    planes: int
    blocks: int
    stride: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i in range(self.blocks):
            x = BasicBlock(self.planes, self.stride if i == 0 else 1, name=str(i))(x, train)
        return x


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs. (N, H, W, 3) -> logits (N, num_classes)."""

    depth: int = 20
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        if (self.depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, ...), got {self.depth}")
        n = (self.depth - 2) // 6
        x = nn.relu(batch_norm(train, "bn1")(conv(16, 3, 1, "conv1")(x)))
        for i, planes in enumerate((16, 32, 64)):
            x = Stage(planes, n, 1 if i == 0 else 2, name=f"layer{i + 1}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="linear")(x)


ResNet20 = partial(CifarResNet, 20)
ResNet32 = partial(CifarResNet, 32)
ResNet44 = partial(CifarResNet, 44)
ResNet56 = partial(CifarResNet, 56)


class CifarResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs (the layout of kuangliu/pytorch-cifar and most CIFAR courses).

    3x3 stem conv 3->64 (stride 1, no max-pool) + BN + ReLU; torchvision BasicBlock stages
    ``layer1..4`` of 2 blocks with widths 64-128-256-512 (stride 2 at the first block of stages 2-4,
    1x1 conv + BN ``downsample`` shortcut there); global average pool; ``fc`` 512 -> classes.
    11.17M parameters for 10 classes. Module names are torchvision's (``layer2/0/downsample/0``),
    so a torch reimplementation with those names converts by name. Feature maps at 32 px:
    32, 16, 8, 4.
    """

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(batch_norm(train, "bn1")(conv(64, 3, 1, "conv1")(x)))
        in_planes = 64
        for i in range(4):
            planes = 64 * 2**i
            x = resnet.Stage(resnet.BasicBlock, planes, 2, 1 if i == 0 else 2, in_planes, name=f"layer{i + 1}")(x, train)
            in_planes = planes
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="fc")(x)
