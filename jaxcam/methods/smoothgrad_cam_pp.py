"""SmoothGrad-CAM++ (Omeiza et al., 2019, arXiv:1908.01224): Grad-CAM++ with gradients averaged over
noisy copies of the input.

    G_s   = dy/dA at x + e_s,   e_s ~ N(0, std^2) per input value, s = 1..S  (seeded)
    D_p   = 1/S sum_s G_s^p     (p = 1, 2, 3)
    a     = D_2 / (2 D_2 + sum_ij(A_k) * D_3 + 1e-8)     A: the clean input's activations
    w_k   = sum_ij a ReLU(D_1);   map = ReLU(sum_k w_k A_k)

torchcam 0.5 multiplies a by the ReLU of the LAST noisy sample's gradient; jaxcam uses their mean D_1
(the averaged gradient the paper smooths), so both agree for S = 1.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcam._src import scores as targets_lib
from jaxcam._src.request import spatial_axes
from jaxcam._src.runner import run
from jaxcam.methods.gradient import activations_and_grads
from jaxcam.methods.registry import AUG_SMOOTH, EIGEN_SMOOTH, FINAL_ACTIVATION, NORMALIZE, SCORE, method, Option


EPS = 1e-8  # torchcam's


def input_noise(seed: int, sample, shape, std: float):
    """The noise e_s added to the input in sample s."""
    return std * jax.random.normal(jax.random.fold_in(jax.random.key(seed), sample), shape)


def smoothgrad_cam_pp_map(split, x, targets, score="logit", num_samples=4, std=0.3, seed=0):
    a = split.features(x)
    classes = targets_lib.resolve_classes(targets, split.model(x))
    fixed = targets if classes is None else classes  # the clean image's class for every noisy copy

    def powers(s):
        _, g = activations_and_grads(split, x + input_noise(seed, s, x.shape, std), fixed, score)
        return g, g * g, g * g * g

    d1, d2, d3 = (p.mean(axis=0) for p in jax.lax.map(powers, jnp.arange(num_samples)))
    alpha = d2 / (2 * d2 + (a * d3).sum(axis=spatial_axes(a), keepdims=True) + EPS)
    return (alpha * jax.nn.relu(d1)).sum(axis=spatial_axes(a), keepdims=True) * a


SG_OPTIONS = (SCORE, FINAL_ACTIVATION,
              Option("num_samples", 4, "noisy input copies", positive=True),
              Option("std", 0.3, "standard deviation of the input noise"),
              Option("seed", 0, "seed of the noise"),
              EIGEN_SMOOTH, AUG_SMOOTH, NORMALIZE)


@method(formula="SmoothGrad-CAM++: Grad-CAM++ weights from gradients averaged over `num_samples` noisy inputs. (Omeiza et al., 2019 (arXiv:1908.01224); torchcam 0.5's SmoothGradCAMpp)",
        family="gradient", options=SG_OPTIONS, aliases=("smooth_grad_cam_pp", "smoothgradcampp"),
        paper="Omeiza et al., 2019 (arXiv:1908.01224); torchcam 0.5's SmoothGradCAMpp")
def smoothgrad_cam_pp(model, x, layer=None, targets=None, *, num_samples: int = 4, std: float = 0.3, seed: int = 0,
                      score="logit", final_activation="relu", eigen_smooth=False, aug_smooth=False, normalize=True):
    """SmoothGrad-CAM++: Grad-CAM++ weights from gradients averaged over `num_samples` noisy inputs.

    Args:
      num_samples: noisy copies (4, torchcam's default); std: input noise standard deviation (0.3);
      seed: seed of the noise. Others as `jaxcam.hires_cam`.

    Returns:
      (N, H, W) float32 maps in [0, 1].
    """
    return run(smoothgrad_cam_pp_map, model, x, layer, targets, final_activation, score=score,
               num_samples=int(num_samples), std=float(std), seed=int(seed), eigen_smooth=eigen_smooth,
               aug_smooth=aug_smooth, normalize=normalize)
