"""Models for jaxcam: torchvision-exact Flax ports and a torch state_dict converter."""
from jaxcam.models.convert import torch_to_flax
from jaxcam.models.zoo import build, resnet18, resnet34, resnet50

__all__ = ["build", "resnet18", "resnet34", "resnet50", "torch_to_flax"]
