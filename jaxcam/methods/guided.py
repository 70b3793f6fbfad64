"""Guided backpropagation (Springenberg et al. 2015) and guided Grad-CAM, batched.

Guided backprop is the input gradient of the target score with every ReLU's backward pass replaced
by ``g * (x > 0) * (g > 0)`` (gradient flows only where the input and the incoming gradient are
positive), as pytorch-grad-cam's GuidedBackpropReLU. Clipping activations (ReLU6 = ``jnp.clip(x, 0, 6)``,
``jax.nn.relu6``, ``lax.clamp(0, x, hi)``) are guided too: ``g * (0 < x < hi) * (g > 0)``, the gradient
passes only where it is positive and the unit is not saturated (their ``max(x, 0)`` is guided, the
``min(., hi)`` keeps its own gradient).

How the ReLUs are found, without touching any module: the model's forward is traced to a jaxpr
(``jax.make_jaxpr``) and re-evaluated by a small interpreter (`guided_eval`) that replaces every
``max(x, 0)`` (what ``nn.relu``, ``jax.nn.relu`` and ``jnp.maximum(x, 0)`` all lower to) by a
``jax.custom_vjp`` ReLU with the guided backward rule; every other operation is bound as traced.
Nothing global is patched, so other threads running plain methods at the same time are unaffected.
Custom JVP rules inside the model (e.g. of ``jax.nn.relu`` itself) are replaced by differentiation of
their primal code; control flow (scan/while/cond) is kept as is and ReLUs inside it are not guided.
"""
from __future__ import annotations

__all__ = ['deprocess_gradients', 'guided_backprop', 'guided_grad_cam']  # public helpers beyond the registered methods

import functools

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

from jaxcam._src import compile as compile_lib
from jaxcam._src import scores as targets_lib
from jaxcam._src.request import check_input
from jaxcam.methods.gradient import grad_cam
from jaxcam.methods.registry import SCORE, method
from jaxcam._src.kinds import as_model


@jax.custom_vjp
def guided_relu(x):
    """ReLU forward; guided backward: g * (x > 0) * (g > 0)."""
    return jnp.maximum(x, 0)


def _guided_relu_fwd(x):
    return jnp.maximum(x, 0), x


def _guided_relu_bwd(x, g):
    return (jnp.where((x > 0) & (g > 0), g, 0.0),)


guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)


def _constant(v, known):
    """The value of `v` if it is a literal or a known constant of the traced program, else None."""
    if isinstance(v, jex.core.Literal):
        return np.asarray(v.val)
    return known.get(v)


def _is_zero(v, known) -> bool:
    value = _constant(v, known)
    return value is not None and bool(np.all(value == 0))


def _relu_input(eqn, known):
    """The operand index of x in a ``max(x, 0)`` equation (a ReLU; the 0 may be a converted constant, as
    in ``jnp.clip(x, 0, 6)``), else None."""
    if eqn.primitive.name != "max" or len(eqn.invars) != 2:
        return None
    a, b = eqn.invars
    if _is_zero(b, known) and not _is_zero(a, known):
        return 0
    if _is_zero(a, known) and not _is_zero(b, known):
        return 1
    return None


def guided_eval(jaxpr, consts, args, count: list, known_args=None):
    """Evaluate `jaxpr` with every ReLU guided; ``count[0]`` is increased per ReLU found.

    `known_args`: per argument, its constant value (literals of the caller) or None.
    """
    env = {}
    known = {v: k for v, k in zip(jaxpr.invars, known_args or ()) if k is not None}

    def read(v):
        return v.val if isinstance(v, jex.core.Literal) else env[v]

    def write(v, value):
        if not isinstance(v, jex.core.DropVar):
            env[v] = value

    for v, value in zip(jaxpr.constvars, consts):
        write(v, value)
    for v, value in zip(jaxpr.invars, args):
        write(v, value)
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        relu_arg = _relu_input(eqn, known)
        constants = [_constant(v, known) for v in eqn.invars]
        if name == "convert_element_type" and constants[0] is not None:
            known[eqn.outvars[0]] = constants[0].astype(eqn.params["new_dtype"])
        if relu_arg is not None:
            count[0] += 1
            outs = [guided_relu(invals[relu_arg])]
        elif name == "clamp" and _is_zero(eqn.invars[0], known):  # clamp(0, x, hi)
            count[0] += 1
            outs = [jnp.minimum(guided_relu(invals[1]), invals[2]).astype(invals[1].dtype)]
        elif name in ("jit", "pjit", "closed_call", "core_call"):
            sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
            outs = _eval_closed(sub, invals, count, constants)
        elif name == "custom_jvp_call":
            outs = _eval_closed(eqn.params["call_jaxpr"], invals, count, constants)
        else:
            bind = eqn.primitive.get_bind_params(eqn.params)
            subfuns, params = bind if isinstance(bind, tuple) else ((), bind)  # older jax: (subfuns, params)
            outs = eqn.primitive.bind(*subfuns, *invals, **params)
            outs = outs if eqn.primitive.multiple_results else [outs]
        for v, value in zip(eqn.outvars, outs):
            write(v, value)
    return [read(v) for v in jaxpr.outvars]


def _eval_closed(sub, invals, count, constants=None):
    if isinstance(sub, jex.core.ClosedJaxpr):
        return guided_eval(sub.jaxpr, sub.consts, invals, count, constants)
    return guided_eval(sub, (), invals, count, constants)


def guided_forward(model, x):
    """``model(x)`` with guided ReLUs (same values; guided gradients) and the number of ReLUs found."""
    leaves, tree = jax.tree_util.tree_flatten((model, x))
    closed = jax.make_jaxpr(lambda *flat: jax.tree_util.tree_unflatten(tree, flat)[0](
        jax.tree_util.tree_unflatten(tree, flat)[1]))(*leaves)
    count = [0]
    (out,) = guided_eval(closed.jaxpr, closed.consts, leaves, count)
    return out, count[0]


@functools.partial(compile_lib.jit, static_argnums=(3, 4))
def _guided_jit(model, x, classes, target_fn, score):
    targets = target_fn if target_fn is not None else classes
    found = []

    def total(inputs):
        logits, relus = guided_forward(model, inputs)
        found.append(relus)
        chosen = targets_lib.resolve_classes(targets, jax.lax.stop_gradient(logits))
        return targets_lib.target_score(logits, targets, chosen, score).sum()

    grads = jax.grad(total)(x)
    if not found or found[0] == 0:
        raise ValueError(
            "guided backprop found no ReLU to guide: the model has no max(x, 0) (nn.relu, jax.nn.relu, "
            "jnp.maximum(x, 0), ReLU6 / jnp.clip(x, 0, hi)) outside control flow"
        )
    return grads


@method(formula='input gradients through guided ReLUs, batched (N, H, W, C)', family="guided", output="attribution",
        options=(SCORE,), aliases=("guided", "guided_backpropagation"), paper="Springenberg et al., ICLR-W 2015",
        pgc="GuidedBackpropReLUModel")
def guided_backprop(model, x, targets=None, *, score="logit"):
    """Guided backpropagation: d y / d x with guided ReLUs, for a whole batch at once.

    Args:
      model: a `jaxcam.Model`; its ReLUs must be calls of nn.relu / jax.nn.relu.
      x: float input batch (N, H, W, C).
      targets: None (argmax) | int | ints (N,) | callable on the scores (N, K) -> (N,).
      score: "logit" (default) | "softmax" | "sigmoid".

    Returns:
      (N, H, W, C) float32 raw input gradients (not normalized; see `jaxcam.deprocess_gradients`).

    Example:
      >>> import jax, jaxcam
      >>> model = jaxcam.models.resnet18(num_classes=10)
      >>> jaxcam.guided_backprop(model, jax.numpy.ones((2, 64, 64, 3))).shape
      (2, 64, 64, 3)
    """
    model = as_model(model)
    x = check_input(x)
    out = jax.eval_shape(model, x)
    if len(out.shape) != 2:
        raise ValueError(f"the model returns shape {out.shape}; guided backprop needs class scores (N, num_classes)")
    targets = targets_lib.normalize_targets(targets, x.shape[0], out.shape[-1])
    target_fn = targets if callable(targets) else None
    return _guided_jit(model, x, None if target_fn else targets, target_fn, targets_lib.check_score(score))


@method(formula='guided backprop × Grad-CAM map', family="composite", output="attribution", options=(SCORE,),
        aliases=("guided_gradcam",), paper="Selvaraju et al., ICCV 2017 (Guided Grad-CAM)")
def guided_grad_cam(model, x, layer=None, targets=None, *, score="logit"):
    """Guided Grad-CAM: guided backprop times the Grad-CAM map (N, H, W, C), batched.

    Arguments as `jaxcam.grad_cam`. Returns raw (N, H, W, C) float32 (see `jaxcam.deprocess_gradients`).
    """
    cam = grad_cam(model, x, layer, targets, score=score)
    return guided_backprop(model, x, targets, score=score) * cam[..., None]


def deprocess_gradients(g) -> jnp.ndarray:
    """Input gradients (N, H, W, C) -> displayable [0, 1] images: per image, mean 0.5, std 0.1, clipped.

    The usual visualization of guided backprop (pytorch-grad-cam's deprocess_image, as floats).
    """
    g = jnp.asarray(g, jnp.float32)
    axes = tuple(range(1, g.ndim))
    g = g - g.mean(axis=axes, keepdims=True)
    g = g / (g.std(axis=axes, keepdims=True) + 1e-5)
    return jnp.clip(g * 0.1 + 0.5, 0.0, 1.0)
