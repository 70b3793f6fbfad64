"""Gradient methods: one forward and one backward through the head (``jax.vjp``).

Notation: A = layer activations (N, h, w, C), y = target score per image, G = dy/dA (N, h, w, C).
Each rule turns (A, G) into channel-weighted activations (N, h, w, C); the runner sums them over
channels (or, with ``eigen_smooth``, takes their first principal component) and applies the final
activation (ReLU by default):

    grad_cam              w_k = mean_ij G_k                                    -> w_k A_k
    hires_cam             G * A                                                   (Draelos & Carin 2020)
    grad_cam_elementwise  ReLU(G * A)
    grad_cam_pp           w_k = sum_ij ReLU(G) a_ij,  a = G^2 / (2 G^2 + sum_ij(A) G^3 + eps)
                          (Chattopadhyay et al. 2018, exp-score closed form, as pytorch-grad-cam)
    xgrad_cam             w_k = sum_ij G A / (sum_ij A + eps)                     (Fu et al. 2020)
    layer_cam             ReLU(G) * A                                             (Jiang et al. 2021)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcam._src import scores as targets_lib
from jaxcam._src.request import spatial_axes
from jaxcam._src.runner import run
from jaxcam._src.split import Split
from jaxcam.methods.registry import (
    AUG_SMOOTH, EIGEN_SMOOTH, FINAL_ACTIVATION, NORMALIZE, RESHAPE_TRANSFORM, SCORE, method, Option,
)


GRAD_CAM_PP_EPS = 1e-6  # pytorch-grad-cam's
XGRAD_CAM_EPS = 1e-7  # pytorch-grad-cam's


def activations_and_grads(split: Split, x, targets, score: str = "logit"):
    """A (N, h, w, C) and G = dy/dA (N, h, w, C), with one forward and one backward of the head.

    Each image's score depends only on its own activations (eval-mode BatchNorm), so the gradient of
    the summed score gives every image its own dy/dA.
    """
    activations = split.features(x)
    logits, pullback = jax.vjp(lambda a: split.head(x, a), activations)
    classes = targets_lib.resolve_classes(targets, logits)
    d_logits = jax.grad(lambda z: targets_lib.target_score(z, targets, classes, score).sum())(logits)
    (grads,) = pullback(d_logits)
    return activations, grads


def _safe(denominator):
    """A denominator with exact zeros replaced by 1 (their numerators are 0 there)."""
    return jnp.where(denominator == 0, 1.0, denominator)


def grad_cam_rule(a, g):
    return g.mean(axis=spatial_axes(a), keepdims=True) * a


def hires_cam_rule(a, g):
    return g * a


def grad_cam_elementwise_rule(a, g):
    return jax.nn.relu(g * a)


def grad_cam_pp_rule(a, g):
    g2 = g * g
    sum_a = a.sum(axis=spatial_axes(a), keepdims=True)
    alpha = g2 / _safe(2 * g2 + sum_a * g2 * g + GRAD_CAM_PP_EPS)
    alpha = jnp.where(g != 0, alpha, 0.0)
    return (jax.nn.relu(g) * alpha).sum(axis=spatial_axes(a), keepdims=True) * a


def xgrad_cam_rule(a, g):
    sum_a = a.sum(axis=spatial_axes(a), keepdims=True)
    return (g * a / _safe(sum_a + XGRAD_CAM_EPS)).sum(axis=spatial_axes(a), keepdims=True) * a


def layer_cam_rule(a, g):
    return jax.nn.relu(g) * a


RULES = {
    "grad_cam": grad_cam_rule,
    "hires_cam": hires_cam_rule,
    "grad_cam_elementwise": grad_cam_elementwise_rule,
    "grad_cam_pp": grad_cam_pp_rule,
    "xgrad_cam": xgrad_cam_rule,
    "layer_cam": layer_cam_rule,
}


def gradient_map(split: Split, x, targets, rule: str = "grad_cam", score: str = "logit"):
    """Weighted activations (N, h, w, C) of one rule."""
    a, g = activations_and_grads(split, x, targets, score)
    return RULES[rule](a, g)


def stacked_gradient_maps(split: Split, x, targets, rules: tuple = (), score: str = "logit"):
    """Several rules from one backward pass, stacked on the batch axis: (R * N, h, w, C)."""
    a, g = activations_and_grads(split, x, targets, score)
    return jnp.concatenate([RULES[r](a, g) for r in rules], axis=0)


_SHARED_DOC = """
    Args:
      model: a `jaxcam.Model` (or a ``(flax_module, variables)`` pair).
      x: float input batch (N, H, W, C), normalized as the model expects.
      layer: module path, e.g. ``"layer4"``, or a list of paths (maps fused by their mean);
        default: the model's usual CAM layer.
      targets: None (argmax) | int | ints (N,) | callable on the scores (N, K) -> (N,).
      score: "logit" (default) | "softmax" | "sigmoid": the space y is taken in.
      final_activation: "relu" (default) | "softmax" (over locations) | "none".
      eigen_smooth: first principal component of the weighted activations instead of their sum.
      aug_smooth: False | True (= "multiply": flips x pixel factors 0.9/1/1.1, as pytorch-grad-cam)
        | "scale" (flips x image scales 0.9/1/1.1); maps averaged in input coordinates.
      reshape_transform: token models: linear (N, tokens, C) -> (N, h, w, C), e.g.
        `jaxcam.tokens_to_grid`.
      normalize: False: the raw map (resized; before final activation and min-max).

    Returns:
      (N, H, W) float32 maps in [0, 1] at input resolution.
"""

GRADIENT_OPTIONS = (SCORE, FINAL_ACTIVATION, EIGEN_SMOOTH, AUG_SMOOTH, RESHAPE_TRANSFORM, NORMALIZE)


def _declare(rule: str, summary: str, example: str = "", **declaration):
    """The public gradient method of `rule` (one of `RULES`), declared in the registry."""
    def fn(model, x, layer=None, targets=None, *, score="logit", final_activation="relu",
           eigen_smooth=False, aug_smooth=False, reshape_transform=None, normalize=True):
        return run(gradient_map, model, x, layer, targets, final_activation, rule=rule,
                   score=targets_lib.check_score(score), eigen_smooth=eigen_smooth, aug_smooth=aug_smooth,
                   reshape_transform=reshape_transform, normalize=normalize)

    fn.__name__ = fn.__qualname__ = rule
    fn.__doc__ = summary + "\n" + _SHARED_DOC + example
    return method(family="gradient", options=GRADIENT_OPTIONS, **declaration)(fn)


grad_cam = _declare(
    "grad_cam", "Grad-CAM (Selvaraju et al. 2017): map = ReLU(sum_k mean_ij(dy/dA_k) A_k).", """
    Example:
      >>> import jax, jaxcam
      >>> model = jaxcam.models.resnet18(num_classes=10)
      >>> jaxcam.grad_cam(model, jax.numpy.ones((2, 64, 64, 3)), layer="layer4").shape
      (2, 64, 64)
""", formula='ReLU(sum_k mean_ij(G_k) A_k)',
    aliases=("gradcam",), paper="Selvaraju et al., ICCV 2017", pgc="GradCAM")
hires_cam = _declare(
    "hires_cam", "HiResCAM (Draelos & Carin 2020): map = ReLU(sum_k dy/dA_k * A_k). Equals Grad-CAM under a "
    "GAP+FC head.", formula='ReLU(sum_k G_k ⊙ A_k)',
    aliases=("hires",), paper="Draelos & Carin, 2020", pgc="HiResCAM")
grad_cam_elementwise = _declare(
    "grad_cam_elementwise", "Grad-CAM element-wise: map = ReLU(sum_k ReLU(dy/dA_k * A_k)).",
    formula='ReLU(sum_k ReLU(G_k ⊙ A_k))',
    aliases=("elementwise",), paper="pytorch-grad-cam's element-wise Grad-CAM", pgc="GradCAMElementWise")
grad_cam_pp = _declare(
    "grad_cam_pp", "Grad-CAM++ (Chattopadhyay et al. 2018), pytorch-grad-cam's form: w_k = sum_ij ReLU(G) a_ij "
    "with\n    a_ij = G^2 / (2 G^2 + sum_ij(A_k) G^3 + 1e-6) (0 where G = 0); map = ReLU(sum_k w_k A_k).",
    formula='Grad-CAM++ (Chattopadhyay et al.) weights from G², G³',
    aliases=("grad_cam_plus_plus", "gradcam++", "grad_cam++"), paper="Chattopadhyay et al., WACV 2018",
    pgc="GradCAMPlusPlus")
xgrad_cam = _declare(
    "xgrad_cam", "XGrad-CAM (Fu et al. 2020): w_k = sum_ij G A_k / (sum_ij A_k + 1e-7); map = ReLU(sum_k w_k A_k).",
    formula='w_k = sum_ij G A_k / sum_ij A_k (Fu et al.)',
    aliases=("xgradcam",), paper="Fu et al., BMVC 2020", pgc="XGradCAM")
layer_cam = _declare(
    "layer_cam", "LayerCAM (Jiang et al. 2021): map = ReLU(sum_k ReLU(dy/dA_k) * A_k).",
    formula='ReLU(sum_k ReLU(G_k) A_k) (Jiang et al.)',
    aliases=("layercam",), paper="Jiang et al., IEEE TIP 2021", pgc="LayerCAM")


@method(formula='the six gradient maps from one forward + backward', family="gradient", output="maps",
        options=(Option("methods", tuple(RULES), "which gradient maps to compute from the one backward pass", cli=False),) + GRADIENT_OPTIONS,
        aliases=("all_gradient",),
        paper="grad_cam, hires_cam, grad_cam_elementwise, grad_cam_pp, xgrad_cam, layer_cam")
def gradient_cams(model, x, layer=None, targets=None, *, methods=tuple(RULES), score="logit",
                  final_activation="relu", eigen_smooth=False, aug_smooth=False, reshape_transform=None,
                  normalize=True) -> dict:
    """Several gradient methods from ONE forward + backward pass (one compilation).

    Args:
      methods: names among "grad_cam", "hires_cam", "grad_cam_elementwise", "grad_cam_pp",
        "xgrad_cam", "layer_cam" (default: all).
      Others: as `jaxcam.hires_cam`.

    Returns:
      {method name: (N, H, W) float32 maps in [0, 1]}, each equal to the single method's output.
    """
    methods = tuple(methods)
    unknown = [m for m in methods if m not in RULES]
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty list of {tuple(RULES)}; unknown: {unknown}")
    stacked = run(stacked_gradient_maps, model, x, layer, targets, final_activation, rules=methods,
                  score=targets_lib.check_score(score), eigen_smooth=eigen_smooth, aug_smooth=aug_smooth,
                  reshape_transform=reshape_transform, normalize=normalize)
    return dict(zip(methods, jnp.split(stacked, len(methods), axis=0)))
