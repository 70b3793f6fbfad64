"""Losses on CAMs: train a model to look where it should ("right for the right reasons").

Every map method is a pure JAX function, so a map can sit inside a loss and ``jax.grad`` flows
through it to the parameters (docs/differentiable.md states where each method is differentiable).

    from jaxcam import losses

    def loss_fn(params, x, labels, patch):                  # patch: (N, H, W) or (H, W), 1 = no evidence here
        model = jaxcam.Model(net, {"params": params})
        ce = optax.softmax_cross_entropy_with_integer_labels(model(x), labels).mean()
        return ce + 10.0 * losses.guidance_loss(model, x, avoid=patch, targets=labels)

The energy of a map is its squared values (sign-agnostic: evidence for and against the class both
count); `energy_share` is the part of it inside a region. `guidance_loss` is the mean over images of
share(avoid) + (1 - share(focus)): in [0, 1] per mask kind, independent of the map's scale, so a
model cannot lower it by shrinking all its gradients.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam.methods import registry


def energy_share(maps: jnp.ndarray, region: jnp.ndarray) -> jnp.ndarray:
    """(N,) share of each map's energy (squared values) inside `region`, in [0, 1]; an all-zero map gives 0.

    Args:
      maps: (N, H, W) maps (raw or normalized).
      region: (N, H, W) or (H, W) weights in [0, 1] (1 = inside).
    """
    energy = jnp.square(maps)
    total = energy.sum(axis=(-2, -1))
    inside = (energy * region).sum(axis=(-2, -1))
    safe = jnp.where(total > 0, total, 1.0)
    return jnp.where(total > 0, inside / safe, 0.0)  # (N,) or (N, T) for maps (N, T, H, W)


def check_mask(mask, x_shape, name: str = "mask") -> jnp.ndarray:
    """`mask` as a float array (N, H, W) or (H, W) matching images of shape `x_shape` (N, H, W, C).

    Bad masks raise a one-line ValueError: wrong shape, values outside [0, 1] or not finite (values
    are checked when they are concrete, i.e. not under ``jax.jit``).
    """
    mask = jnp.asarray(mask)
    n, size = x_shape[0], tuple(x_shape[1:-1])
    if mask.shape not in (size, (n,) + size):
        raise ValueError(f"{name} has shape {tuple(mask.shape)}; expected {(n,) + size} (one per image) "
                         f"or {size} (all images), the images' height and width")
    if not (jnp.issubdtype(mask.dtype, jnp.floating) or jnp.issubdtype(mask.dtype, jnp.integer)
            or mask.dtype == jnp.bool_):
        raise ValueError(f"{name} has dtype {mask.dtype}; pass 0/1 or [0, 1] float values")
    try:
        values = np.asarray(mask, np.float64)
    except jax.errors.TracerArrayConversionError:
        values = None  # under jit: shape checked, values cannot be
    if values is not None and not np.isfinite(values).all():
        raise ValueError(f"{name} has NaN or infinite values; pass values in [0, 1] (1 = the region)")
    if values is not None and values.size and (values.min() < 0 or values.max() > 1):
        raise ValueError(f"{name} values must lie in [0, 1] (1 = the region); got min {values.min():g}, "
                         f"max {values.max():g}")
    return mask if jnp.issubdtype(mask.dtype, jnp.floating) else mask.astype(jnp.float32)


# map methods whose map cannot carry a training signal to the model (docs/differentiable.md)
NOT_DIFFERENTIABLE = {"random_cam": "its map is random weights on the activations: no gradient reaches the "
                                    "model's parameters through the weights"}


def map_method(method, normalize: bool = True):
    """A registry method of the "map" output kind that can be differentiated, by name/alias (or a
    `registry.Method`); ``normalize=False``: one with a raw map. Else a one-line ValueError naming the
    methods that work (unknown names: the registry's hint)."""
    chosen = registry.get(method)

    def usable(m):
        return (m.output == "map" and m.takes_layer and m.name not in NOT_DIFFERENTIABLE
                and (normalize or any(o.name == "normalize" for o in m.options)))

    ok = ", ".join(n for n in registry.names() if usable(registry.REGISTRY[n]))
    if chosen.output != "map" or not chosen.takes_layer:
        raise ValueError(f"method {chosen.name!r} does not return one map per image at a layer; use one of {ok}")
    if chosen.name in NOT_DIFFERENTIABLE:
        raise ValueError(f"method {chosen.name!r} cannot guide training: {NOT_DIFFERENTIABLE[chosen.name]}; "
                         f"use one of {ok}")
    if not usable(chosen):
        raise ValueError(f"{chosen.name} has no raw map (normalize=False); pass normalize=True or one of {ok}")
    return chosen


def guidance_loss(model, x, *, avoid=None, focus=None, method="grad_cam", layer=None, targets=None,
                  normalize: bool = False, **options) -> jnp.ndarray:
    """Scalar CAM-guidance penalty: map energy inside `avoid`, and outside `focus`.

    Args:
      model: a `jaxcam.Model` (build it from the parameters being trained, inside the loss function).
      x: input batch (N, H, W, C), as the model expects it.
      avoid: (N, H, W) or (H, W) masks in [0, 1] of where the evidence should NOT be (a decoy patch).
      focus: (N, H, W) or (H, W) masks in [0, 1] of where the evidence SHOULD be (the object).
      method: a map method's name or alias (default "grad_cam").
      layer: the method's layer (None: the model's default layer).
      targets: the explained classes: None (argmax), int or (N,) ints (in training: the labels), or
        (N, T) ints: T maps per image, all penalized (e.g. every class).
      normalize: False (default) penalizes the raw map (smooth: no ReLU, no min-max switching);
        True the normalized map in [0, 1] (see docs/differentiable.md for where it is not smooth).
      **options: the method's own options (e.g. ``score="softmax"``).

    Returns:
      mean over images of energy_share(map, avoid) + (1 - energy_share(map, focus)); each term in [0, 1].

    Example:
      >>> import jax, jax.numpy as jnp, jaxcam
      >>> from jaxcam import losses
      >>> params = {"w": jnp.ones((3, 4)) / 3, "fc": jnp.eye(4)[:, :2]}
      >>> model = jaxcam.Model.from_functions(
      ...     lambda p, x: jnp.tanh(x @ p["w"]), lambda p, a: a.mean(axis=(1, 2)) @ p["fc"], params)
      >>> x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
      >>> corner = jnp.zeros((6, 6)).at[:2, :2].set(1.0)
      >>> float(losses.guidance_loss(model, x, avoid=corner, targets=0)) < 1.0
      True
    """
    if avoid is None and focus is None:
        raise ValueError("guidance_loss needs masks: avoid= (where evidence should not be) and/or focus= (where it should)")
    chosen = map_method(method, normalize)
    x = jnp.asarray(x)
    avoid = None if avoid is None else check_mask(avoid, x.shape, "avoid")
    focus = None if focus is None else check_mask(focus, x.shape, "focus")
    if not normalize:
        options["normalize"] = False
    maps = chosen.fn(model, x, layer, targets, **options)
    if maps.ndim == 4:  # targets (N, T): one map per class, each against the image's masks
        avoid = avoid if avoid is None or avoid.ndim == 2 else avoid[:, None]
        focus = focus if focus is None or focus.ndim == 2 else focus[:, None]
    loss = jnp.zeros((), maps.dtype)
    if avoid is not None:
        loss = loss + energy_share(maps, avoid).mean()
    if focus is not None:
        loss = loss + (1.0 - energy_share(maps, focus)).mean()
    return loss
