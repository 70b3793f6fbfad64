"""jaxcam: class-activation maps for Flax models, as pure jitted batched JAX functions.

    model = jaxcam.models.resnet50()
    maps = jaxcam.ablation_cam(model, x, layer="layer4")   # (N, H, W) in [0, 1]

Importing jaxcam has no process-wide side effects: XLA:CPU tuning is passed per compiled function
(see `jaxcam._src.compile`), never through ``XLA_FLAGS``.

Where things are: one method per file in `jaxcam.methods` (listed by `jaxcam.methods.registry`),
the shared engine in `jaxcam._src` (split, runner, request, compile), batching over many images in
`jaxcam.batching` (`jaxcam.explain`), the device mesh in `jaxcam.sharding`, colouring in
`jaxcam.visual`, image files in `jaxcam.images`, resumable jobs in `jaxcam.jobs`, the command line
in `jaxcam.cli`.
"""
from jaxcam import images, jobs, metrics, models, sharding, targets
from jaxcam._src.split import Split, list_layers
from jaxcam.methods import ablation_cam, fast_ablation_cam, grad_cam, spatial_ablation_cam
from jaxcam.methods import (
    cam, deprocess_gradients, eigen_cam, eigen_grad_cam, grad_cam_elementwise, grad_cam_pp, gradient_cams,
    guided_backprop, guided_grad_cam, hires_cam, layer_cam, multi_layer, score_cam, xgrad_cam,
)
from jaxcam.methods import registry
from jaxcam.methods import fem, finer_cam, fullgrad, kpca_cam, random_cam, seg_eigen_cam, shapley_cam
from jaxcam.methods import deep_feature_factorization, factorization_overlay
from jaxcam.methods import is_cam, refine_cam, sess, smoothgrad_cam_pp, ss_cam
from jaxcam._src.tokens import tokens_to_grid
from jaxcam.model import Model, ModelInfo
from jaxcam.batching import Explanation, explain, explain_batches
from jaxcam.sharding import batch_mesh, process_share
from jaxcam.visual import heatmap, overlay

__version__ = "0.1.0"

__all__ = [
    "fem", "finer_cam", "fullgrad", "kpca_cam", "random_cam", "seg_eigen_cam", "shapley_cam", "targets",
    "deep_feature_factorization", "factorization_overlay", "is_cam", "refine_cam", "sess", "smoothgrad_cam_pp", "ss_cam",
    "Model",
    "ModelInfo",
    "Split",
    "ablation_cam",
    "fast_ablation_cam",
    "grad_cam",
    "list_layers",
    "images",
    "jobs",
    "metrics",
    "sharding",
    "models",
    "registry",
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
    "batch_mesh",
    "process_share",
    "heatmap",
    "overlay",
]
