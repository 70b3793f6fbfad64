"""CAM (Zhou et al. 2016): the classifier's weights of the target class on the layer's channels.

    map = ReLU(sum_k W[k, c] A_k)      W: kernel (C, K) of the Dense named by ModelInfo.classifier

Defined only when the network after the layer is global average pooling + that Dense (GAP+FC).
Then y_c = b_c + mean_ij sum_k W[k, c] A_k,ij, so CAM = h*w * HiResCAM = h*w * Grad-CAM.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxcam._src import scores as targets_lib
from jaxcam._src.request import check_input, make_request, spatial_axes
from jaxcam._src.runner import run
from jaxcam._src.split import Split, kind_of, parse_layer
from jaxcam.methods.ss_cam import channel_weighted
from jaxcam.methods.registry import AUG_SMOOTH, EIGEN_SMOOTH, FINAL_ACTIVATION, method
from jaxcam._src.kinds import as_model


GAP_FC_RTOL = 1e-3


def classifier_params(model, x=None) -> dict:
    """The classifier Dense's params {'kernel': (C, K), 'bias'?: (K,)}; a clear error when there is none.

    Linen: the Dense at ``model.info.classifier``. Other kinds answer through their own
    ``classifier_params(variables, x, layer)`` (`jaxcam.nnx` also finds the Linear whose output is the
    model's output on `x` when ``info.classifier`` is None).
    """
    path = None if model.info.classifier is None else parse_layer(model.info.classifier)
    kind = kind_of(model)
    if kind is not None:
        if not hasattr(kind, "classifier_params"):
            raise ValueError(
                f"cam needs the classifier's weights, which a model of kind {type(kind).__name__} (e.g. "
                "jaxcam.Model.from_functions) does not expose; use jaxcam.grad_cam or hires_cam, which equal "
                "CAM up to a constant factor under a GAP+FC head"
            )
        return kind.classifier_params(model.variables, x, path)
    if path is None:
        raise ValueError(
            "cam needs the model's classifier: build the model with ModelInfo(classifier='fc') (the path of the "
            "final Dense), or use jaxcam.grad_cam / hires_cam, which equal CAM under a GAP+FC head"
        )
    node = model.variables["params"]
    for name in path:
        node = node[name]
    return node


def cam_map(split, x, targets):
    """Weighted activations (N, h, w, C): W[k, c] * A_k for the target class c of each image."""
    a = split.features(x)
    classes = targets_lib.resolve_classes(targets, split.head(x, a))
    kernel = classifier_params(split.model, x)["kernel"]  # (C, K)
    return channel_weighted(kernel.T[classes], a)


@functools.partial(jax.jit, static_argnums=(2,))
def _head_residual(model, x, layer):
    """max |head(A') - (mean_ij A' @ W + b)| / max |mean_ij A' @ W + b| for a random A' (0 for GAP+FC).

    Structural, so computed in float32 (bfloat16's rounding alone is ~1e-3 of the scores)."""
    model = model.with_compute_dtype("float32")
    split = Split(model, layer)
    a = split.features(x)
    probe = a + jax.random.normal(jax.random.key(0), a.shape) * (jnp.abs(a).mean() + 1.0)
    params = classifier_params(model, x)
    expected = probe.mean(axis=spatial_axes(probe)) @ params["kernel"] + params.get("bias", 0.0)
    return jnp.abs(split.head(x, probe) - expected).max() / (jnp.abs(expected).max() + 1e-12)


def check_gap_fc(req) -> None:
    """Raise unless the network after `req.layer` is global average pooling + the classifier."""
    kernel = classifier_params(req.model, req.x)["kernel"]
    channels = req.activation_shape[-1]
    not_gap_fc = (
        f"cam needs a GAP+FC head after the layer: layer {'/'.join(req.layer)} is not followed by global average "
        f"pooling + the classifier {req.model.info.classifier or 'Linear'!r}. Pick the last conv block (e.g. the model's "
        "default layer) or use jaxcam.grad_cam / hires_cam, which work for any head"
    )
    if kernel.shape[0] != channels:
        raise ValueError(f"{not_gap_fc} (layer has {channels} channels, classifier expects {kernel.shape[0]})")
    leaves = jax.tree_util.tree_leaves((req.model.variables, req.x))
    if any(isinstance(v, jax.core.Tracer) for v in leaves):
        return  # inside a user's jit: only the structural check is possible
    if float(_head_residual(req.model, req.x[:1], req.layer)) > GAP_FC_RTOL:
        raise ValueError(not_gap_fc)


CAM_OPTIONS = (FINAL_ACTIVATION, EIGEN_SMOOTH, AUG_SMOOTH)


@method(formula='Zhou et al.: sum_k W_fc[k, c] A_k; clear error unless the head is GAP + FC', family="cam",
        options=CAM_OPTIONS, aliases=("class_activation_map",), paper="Zhou et al., CVPR 2016")
def cam(model, x, layer=None, targets=None, *, final_activation="relu", eigen_smooth=False, aug_smooth=False):
    """CAM (Zhou et al. 2016): map = ReLU(sum_k W[k, c] A_k) with W the classifier's kernel.

    Needs `model.info.classifier` and a GAP+FC head after `layer` (checked: a clear error otherwise).

    Args:
      model, x, layer, final_activation, eigen_smooth, aug_smooth: as `jaxcam.hires_cam`.
      targets: None (argmax) | int | ints (N,): CAM explains one class per image (no callables).

    Returns:
      (N, H, W) float32 maps in [0, 1].

    Example:
      >>> import jax, jaxcam
      >>> model = jaxcam.models.resnet18(num_classes=10)
      >>> jaxcam.cam(model, jax.numpy.ones((1, 64, 64, 3)), layer="layer4").shape
      (1, 64, 64)
    """
    if callable(targets):
        raise TypeError("cam explains one class per image: pass targets=None, an int or one int per image")
    model = as_model(model)
    classifier_params(model, check_input(x))
    for one in layer if isinstance(layer, (list, tuple)) else [layer]:
        check_gap_fc(make_request(model, x, one, targets))
    return run(cam_map, model, x, layer, targets, final_activation, eigen_smooth=eigen_smooth, aug_smooth=aug_smooth)
