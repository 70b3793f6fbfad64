"""Model constructors: a Flax module + its variables + what CAM needs to know, as a `jaxcam.Model`."""
from __future__ import annotations

from typing import Mapping, Optional, Union

import jax
import jax.numpy as jnp

from jaxcam.model import IMAGENET_MEAN, IMAGENET_STD, Model, ModelInfo
from jaxcam.models import convert, resnet

Weights = Union[None, Mapping]


def build(module, info: ModelInfo, weights: Weights = None, seed: int = 0, rename=None) -> Model:
    """Random variables (seeded) or converted torch weights (a state_dict mapping) for `module`."""
    size = min(info.input_size, 64)
    if weights is None:
        variables = jax.jit(module.init)(jax.random.key(seed), jnp.zeros((1, size, size, 3), jnp.float32))
    else:
        template = convert.abstract_variables(module, (1, size, size, 3))
        variables = jax.tree_util.tree_map(jnp.asarray, convert.torch_to_flax(weights, template, rename))
    return Model(module, variables, info)


def _resnet(name, factory, num_classes, weights, seed, class_names):
    info = ModelInfo(name=name, default_layer="layer4", classifier="fc", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                     class_names=tuple(class_names or ()), input_size=224)
    return build(factory(num_classes=num_classes), info, weights, seed)


def resnet18(num_classes: int = 1000, weights: Weights = None, seed: int = 0, class_names=None) -> Model:
    """torchvision ResNet-18; `weights`: a torchvision state_dict (mapping) or None (random, seeded)."""
    return _resnet("resnet18", resnet.ResNet18, num_classes, weights, seed, class_names)


def resnet34(num_classes: int = 1000, weights: Weights = None, seed: int = 0, class_names=None) -> Model:
    """torchvision ResNet-34; arguments as `resnet18`."""
    return _resnet("resnet34", resnet.ResNet34, num_classes, weights, seed, class_names)


def resnet50(num_classes: int = 1000, weights: Weights = None, seed: int = 0, class_names=None) -> Model:
    """torchvision ResNet-50; arguments as `resnet18`."""
    return _resnet("resnet50", resnet.ResNet50, num_classes, weights, seed, class_names)
