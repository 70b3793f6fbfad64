"""Models for jaxcam: torchvision-exact Flax ports and a torch state_dict converter."""
from jaxcam.models.convert import torch_to_flax
from jaxcam.models.zoo import build, resnet18, resnet34, resnet50
from jaxcam.models.zoo import densenet121, densenet169, efficientnet_lite0, vgg16, vgg16_bn
from jaxcam.models.zoo import resnet20, resnet32, resnet44, resnet56
from jaxcam.models.zoo import nnx_resnet18, nnx_resnet50
from jaxcam.models.zoo import swin_t, swin_transformer, vision_transformer, vit_b_16
from jaxcam.models.torch_io import CheckpointError, read_state_dict
from jaxcam.models.loading import load

__all__ = ["build", "resnet18", "resnet34", "resnet50", "torch_to_flax",
           "densenet121", "densenet169", "efficientnet_lite0", "vgg16", "vgg16_bn",
           "resnet20", "resnet32", "resnet44", "resnet56", "load", "nnx_resnet18", "nnx_resnet50",
           "vit_b_16", "vision_transformer", "swin_t", "swin_transformer"]
