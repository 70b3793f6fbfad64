"""CAM methods: each a pure function ``method(model, x, layer=None, targets=None, **options)``.

Every method module ends with its ``register(Method(...))`` call; importing this package imports
them all, so `jaxcam.methods.registry` lists every method (``registry.names()``).
"""
from jaxcam.methods import registry
from jaxcam.methods.ablation import ablation_cam, fast_ablation_cam, spatial_ablation_cam
from jaxcam.methods.cam import cam
from jaxcam.methods.eigen import eigen_cam, eigen_grad_cam
from jaxcam.methods.gradient import (
    grad_cam, grad_cam_elementwise, grad_cam_pp, gradient_cams, hires_cam, layer_cam, xgrad_cam,
)
from jaxcam.methods.guided import deprocess_gradients, guided_backprop, guided_grad_cam
from jaxcam.methods.multilayer import multi_layer
from jaxcam.methods.score import score_cam
# issue 16: methods of pytorch-grad-cam 1.5.7 and torchcam 0.5
from jaxcam.methods.dff import deep_feature_factorization, factorization_overlay
from jaxcam.methods.fem import fem
from jaxcam.methods.finer import finer_cam
from jaxcam.methods.fullgrad import fullgrad
from jaxcam.methods.kpca import kpca_cam
from jaxcam.methods.random_baseline import random_cam
from jaxcam.methods.refine import refine_cam
from jaxcam.methods.sess import sess
from jaxcam.methods.seg_eigen import seg_eigen_cam
from jaxcam.methods.shapley import shapley_cam
from jaxcam.methods.ss_cam import ss_cam
from jaxcam.methods.is_cam import is_cam
from jaxcam.methods.smoothgrad_cam_pp import smoothgrad_cam_pp

NEW_METHODS = ["deep_feature_factorization", "factorization_overlay", "fem", "finer_cam", "fullgrad", "kpca_cam", "random_cam", "refine_cam", "seg_eigen_cam", "sess", "shapley_cam", "ss_cam", "is_cam",
               "smoothgrad_cam_pp"]

__all__ = [
    "ablation_cam", "fast_ablation_cam", "grad_cam", "spatial_ablation_cam",
    "cam", "deprocess_gradients", "eigen_cam", "eigen_grad_cam", "grad_cam_elementwise", "grad_cam_pp",
    "gradient_cams", "guided_backprop", "guided_grad_cam", "hires_cam", "layer_cam", "multi_layer",
    "registry", "score_cam", "xgrad_cam",
] + NEW_METHODS
