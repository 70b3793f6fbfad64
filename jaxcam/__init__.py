"""jaxcam: class-activation maps for Flax models, as pure jitted batched JAX functions.

    model = jaxcam.models.resnet50()
    maps = jaxcam.ablation_cam(model, x, layer="layer4")   # (N, H, W) in [0, 1]
"""
from jaxcam import _xla_flags  # noqa: F401  (sets XLA CPU flags before jax initializes its backend)
from jaxcam import metrics, models, targets
from jaxcam._src.split import Split, list_layers
from jaxcam.methods import ablation_cam, fast_ablation_cam, grad_cam, spatial_ablation_cam
from jaxcam.methods import (
    cam, deprocess_gradients, eigen_cam, eigen_grad_cam, grad_cam_elementwise, grad_cam_pp, gradient_cams,
    guided_backprop, guided_grad_cam, hires_cam, layer_cam, multi_layer, score_cam, xgrad_cam,
)
from jaxcam.methods import fem, finer_cam, fullgrad, kpca_cam, random_cam, seg_eigen_cam, shapley_cam
from jaxcam.methods import is_cam, refine_cam, smoothgrad_cam_pp, ss_cam
from jaxcam._src.tokens import tokens_to_grid
from jaxcam.model import Model, ModelInfo
from jaxcam.explain import Explanation, explain, explain_batches
from jaxcam.overlay import heatmap, overlay

__version__ = "0.1.0"

__all__ = [
    "fem", "finer_cam", "fullgrad", "kpca_cam", "random_cam", "seg_eigen_cam", "shapley_cam", "targets",
    "is_cam", "refine_cam", "smoothgrad_cam_pp", "ss_cam",
    "Model",
    "ModelInfo",
    "Split",
    "ablation_cam",
    "fast_ablation_cam",
    "grad_cam",
    "list_layers",
    "metrics",
    "models",
    "spatial_ablation_cam",
    "cam",
    "deprocess_gradients",
    "eigen_cam",
    "eigen_grad_cam",
    "grad_cam_elementwise",
    "grad_cam_pp",
    "gradient_cams",
    "guided_backprop",
    "guided_grad_cam",
    "hires_cam",
    "layer_cam",
    "multi_layer",
    "score_cam",
    "tokens_to_grid",
    "xgrad_cam",
    "Explanation",
    "explain",
    "explain_batches",
    "heatmap",
    "overlay",
]
