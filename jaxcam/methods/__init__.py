"""CAM methods: each a pure function ``method(model, x, layer=None, targets=None, **options)``."""
from jaxcam.methods.ablation import ablation_cam, fast_ablation_cam, spatial_ablation_cam
from jaxcam.methods.gradient import grad_cam

__all__ = ["ablation_cam", "fast_ablation_cam", "grad_cam", "spatial_ablation_cam"]
