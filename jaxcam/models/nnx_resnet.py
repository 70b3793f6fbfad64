"""torchvision-exact ResNet-18/34/50 in Flax NNX (same layout and names as `jaxcam.models.resnet`).

Attribute paths follow torchvision's state_dict keys (``layer4/1/conv2``, ``layer1/0/downsample/0``),
so torchvision weights load through the same converter as the Linen ResNet (`load_linen_variables`
moves converted Linen variables into the NNX module). Built in eval mode (running BatchNorm stats).
"""
from __future__ import annotations

import flax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcam import nn as jnn
from jaxcam._src.arrays import on_device


def _conv(cin, cout, kernel, stride, rngs):
    pad = kernel // 2
    return nnx.Conv(cin, cout, (kernel, kernel), (stride, stride), padding=((pad, pad), (pad, pad)),
                    use_bias=False, conv_general_dilated=jnn.conv_general_dilated, rngs=rngs)


def _bn(n, rngs):
    return nnx.BatchNorm(n, use_running_average=True, momentum=0.9, epsilon=1e-5, rngs=rngs)


class BasicBlock(nnx.Module):
    expansion = 1

    def __init__(self, cin, planes, stride, downsample, rngs):
        self.conv1, self.bn1 = _conv(cin, planes, 3, stride, rngs), _bn(planes, rngs)
        self.conv2, self.bn2 = _conv(planes, planes, 3, 1, rngs), _bn(planes, rngs)
        self.downsample = Stage([_conv(cin, planes, 1, stride, rngs), _bn(planes, rngs)]) if downsample else None

    def __call__(self, x):
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return nnx.relu(out + identity)


class Bottleneck(nnx.Module):
    expansion = 4

    def __init__(self, cin, planes, stride, downsample, rngs):
        self.conv1, self.bn1 = _conv(cin, planes, 1, 1, rngs), _bn(planes, rngs)
        self.conv2, self.bn2 = _conv(planes, planes, 3, stride, rngs), _bn(planes, rngs)
        self.conv3, self.bn3 = _conv(planes, planes * 4, 1, 1, rngs), _bn(planes * 4, rngs)
        self.downsample = Stage([_conv(cin, planes * 4, 1, stride, rngs), _bn(planes * 4, rngs)]) if downsample else None

    def __call__(self, x):
        out = nnx.relu(self.bn1(self.conv1(x)))
        out = nnx.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return nnx.relu(out + identity)


class Stage(nnx.Module):
    """torchvision's ``layerN`` Sequential: blocks at attribute paths ``layerN/0``, ``layerN/1``, ...

    (Attributes named "0", "1": an ``nnx.List`` with a ``__call__`` breaks ``nnx.capture``, whose
    output state would mix int and str keys.)
    """

    def __init__(self, blocks):
        for i, block in enumerate(blocks):
            setattr(self, str(i), block)
        self.num_blocks = len(blocks)

    def __getitem__(self, i):
        return getattr(self, str(i))

    def __call__(self, x):
        for i in range(self.num_blocks):
            x = self[i](x)
        return x


class ResNet(nnx.Module):
    def __init__(self, block, stage_sizes, num_classes=1000, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(3, 64, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                                conv_general_dilated=jnn.conv_general_dilated, rngs=rngs)
        self.bn1 = _bn(64, rngs)
        cin = 64
        for i, n in enumerate(stage_sizes):
            planes, stride = 64 * 2**i, 1 if i == 0 else 2
            down = stride != 1 or cin != planes * block.expansion
            blocks = [block(cin if j == 0 else planes * block.expansion, planes, stride if j == 0 else 1,
                            j == 0 and down, rngs) for j in range(n)]
            setattr(self, f"layer{i + 1}", Stage(blocks))
            cin = planes * block.expansion
        self.fc = nnx.Linear(cin, num_classes, rngs=rngs)
        self.num_stages = len(stage_sizes)

    def __call__(self, x):
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = jnn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(jnp.mean(x, axis=(1, 2)))


def ResNet18(num_classes=1000, *, rngs):
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, rngs=rngs)


def ResNet34(num_classes=1000, *, rngs):
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, rngs=rngs)


def ResNet50(num_classes=1000, *, rngs):
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, rngs=rngs)


_LEAVES = {("params", "kernel"): "kernel", ("params", "bias"): "bias", ("params", "scale"): "scale",
           ("batch_stats", "mean"): "mean", ("batch_stats", "var"): "var"}


def load_linen_variables(module: nnx.Module, variables) -> nnx.Module:
    """Copy Linen variables (``params/layer4/1/conv2/kernel``) into the NNX module with the same
    attribute paths (``layer4/1/conv2/kernel``), in place; every leaf must match once."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
    state = nnx.state(module)
    targets = {tuple(str(p) for p in path): path for path, _ in nnx.to_flat_state(state)}
    done = set()
    for key, value in flat.items():
        leaf = _LEAVES[(key[0], key[-1])]
        path = tuple(key[1:-1]) + (leaf,)
        if path not in targets:
            raise ValueError(f"Linen variable {'/'.join(key)} has no place in the NNX module")
        node = state
        for p in targets[path]:
            node = node[p]
        if tuple(node.shape) != tuple(np.shape(value)):
            raise ValueError(f"{'/'.join(path)}: shape {np.shape(value)} vs NNX {tuple(node.shape)}")
        node.set_value(on_device(value))
        done.add(path)
    missing = sorted("/".join(p) for p in targets if p not in done)
    if missing:
        raise ValueError(f"NNX variables not set from the Linen variables: {', '.join(missing)}")
    nnx.update(module, state)
    return module
