"""jaxcam: class-activation maps for Flax models, as pure jitted batched JAX functions.

    model = jaxcam.models.resnet50()
    maps = jaxcam.ablation_cam(model, x, layer="layer4")   # (N, H, W) in [0, 1]

Importing jaxcam has no process-wide side effects: XLA:CPU tuning is passed per compiled function
(see `jaxcam._src.compile`), never through ``XLA_FLAGS``.

Where things are (README "Layout"): one method per file in `jaxcam.methods`, each declared once
(`jaxcam.methods.registry`; this module's methods and ``__all__`` come from it), the shared engine in
`jaxcam._src` (model, split and the one layer resolver, runner, request, compile), models in
`jaxcam.models`, training in `jaxcam.train` (``jaxcam.train.fit``), batching over many images in
`jaxcam.batching` (`jaxcam.explain`), pictures in `jaxcam.viz`, metrics in `jaxcam.metrics`, data in
`jaxcam.data`, the one option system in `jaxcam.config`, the commands in `jaxcam.cli`.
"""
from jaxcam import images, jobs, metrics, models, sharding, targets
from jaxcam import methods
from jaxcam._src.blank import BlankMapWarning
from jaxcam._src.split import Split, list_layers
from jaxcam._src.tokens import tokens_to_grid
from jaxcam.batching import Explanation, explain, explain_batches
from jaxcam.methods import *  # noqa: F401,F403  (every registered method, by its name: see jaxcam.methods)
from jaxcam.methods import registry
from jaxcam._src.model import Model, ModelInfo
from jaxcam.sharding import batch_mesh, process_share
from jaxcam.viz import heatmap, overlay

__version__ = "0.1.0"

_CORE = [
    "BlankMapWarning", "Explanation", "Model", "ModelInfo", "Split", "batch_mesh", "explain", "explain_batches", "heatmap", "images",
    "jobs", "list_layers", "metrics", "models", "overlay", "process_share", "sharding", "targets", "tokens_to_grid",
]


def __getattr__(name: str):
    """``__all__`` (the core names + every registered method) and late-declared methods, from the registry."""
    if name == "__all__":
        return _CORE + methods.__all__
    try:
        return getattr(methods, name)
    except AttributeError:
        raise AttributeError(f"module 'jaxcam' has no attribute {name!r}") from None
