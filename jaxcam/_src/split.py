"""The one mechanism: split any model at a named layer.

    features(x)      -> A        activations of `layer` (N, h, w, C), computed once
    head(x, A')      -> scores   the rest of the network with `layer`'s output replaced by A'

`features` uses ``capture_intermediates``; `head` uses ``nn.intercept_methods`` to return A' when
the intercepted module's path is `layer`. Under ``jax.jit`` XLA removes the part of the network
that only fed the layer (dead code), and under ``jax.vmap`` over A' that part is not batched: the
network before the layer runs once, only the head runs per perturbation. Skip connections that
bypass the layer read their own inputs, so they stay correct.

A layer is named by its module path: ``"layer4"``, ``"layer4/1"``, ``"features/28"``. `check_layer`
is the one resolver of layer names (methods, commands and training use it): an abstract run at the
model's own input size (``model.info.input_size``) unless a shape is given, and an unknown name
raises `LayerError` with the closest valid names.

Token models (ViTs) declare a linear tokens -> grid view in ``ModelInfo.reshape_transform``; the
split applies it to every token layer (output (N, T, C) for input (N, H, W, C)), once for every
method: `features` gives the grid (N, h, w, C), `head` takes a grid and writes it back into token
layout, the tokens the view does not read (the class token) kept (`jaxcam._src.tokens.from_grid`).

The mechanism does not depend on Linen. A `Model`'s ``module`` is either a Linen module (handled
here) or any object with the `SplitKind` protocol below: `jaxcam.Model.from_functions` (plain JAX,
equinox, haiku: features and head given as functions) and `jaxcam.nnx` (Flax NNX modules) are the
two shipped kinds. `Split` only dispatches; every method works on every kind.
"""
from __future__ import annotations

import functools
from typing import Optional, Protocol, Tuple, runtime_checkable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcam._src import dtypes
from jaxcam._src.model import Model
from jaxcam._src.hints import closest
from jaxcam._src.tokens import from_grid

LayerPath = Tuple[str, ...]


def parse_layer(layer: str) -> LayerPath:
    """``"layer4/1"`` -> ``("layer4", "1")``; dots (torch style) and brackets (Equinox's ``layers[3]``)
    are accepted as separators too."""
    if not isinstance(layer, str) or not layer.strip("/.[]"):
        raise ValueError(f"layer must be a module path such as 'layer4' or 'layer4/1', got {layer!r}")
    return tuple(p for p in layer.replace("[", "/").replace("]", "").replace(".", "/").split("/") if p)


@runtime_checkable
class SplitKind(Protocol):
    """What a non-Linen model kind implements to get every method (held as ``Model.module``).

    Must be hashable (it is static under jit). ``variables`` is the model's pytree of arrays.

    Two optional methods widen what works on a kind: ``classifier_params(variables, x, layer)`` ->
    ``{"kernel": (C, K), "bias": (K,)}`` of the classifier after the layer (CAM, DFF's concept scores)
    and ``bias_outputs(variables, x, probes)`` -> ``(scores, {path: (output, effective bias)})`` with
    each probe added to its layer's output (FullGrad).
    A kind without them gets a one-line error from those methods.
    """

    def apply(self, variables, x): ...  # scores (N, K)

    def output_shapes(self, variables, x_shape, dtype) -> tuple: ...  # ((path, shape), ...); "" = output

    def features(self, variables, x, layer: "LayerPath"): ...  # the layer's output

    def head(self, variables, x, layer: "LayerPath", activations): ...  # scores with the output replaced


def kind_of(model: Model):
    """The model's `SplitKind`, or None for a Linen module (handled in this file)."""
    return None if isinstance(model.module, nn.Module) else model.module


def layer_shapes(model: Model, x_shape, dtype=jnp.float32) -> dict:
    """Every module path whose ``__call__`` returns one array -> that output's shape (abstract run), in the
    order the calls return (a block after its last sub-layer).

    The model's own output is under the key ``""``. Cached per (module, input shape, dtype). Token
    layers of a model with a ``reshape_transform`` have their grid shape, as `Split.features` gives.
    """
    dtype = dtypes.input_dtype(model.info, dtype)  # the abstract run sees what the layers see
    shapes = dict(_layer_shapes(model.module, tuple(x_shape), dtype, _ByShape(model.variables)))
    transform = model.info.reshape_transform
    if transform is not None:
        for path, shape in shapes.items():
            if path and len(shape) == len(x_shape) - 1:
                shapes[path] = tuple(jax.eval_shape(transform, jax.ShapeDtypeStruct(shape, dtype)).shape)
    return shapes


class _ByShape:
    """Carries the variables into the cached function; the cache key is their tree and shapes only."""

    def __init__(self, value):
        self.value = value
        leaves, treedef = jax.tree_util.tree_flatten(value)
        self.key = (treedef, tuple((tuple(jnp.shape(v)), str(jnp.result_type(v))) for v in leaves))

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _ByShape) and self.key == other.key


@functools.lru_cache(maxsize=64)
def _layer_shapes(module, x_shape, dtype, variables):
    if not isinstance(module, nn.Module):
        return tuple(module.output_shapes(variables.value, x_shape, dtype))

    order = {}  # module path -> when its __call__ returned (Linen's intermediates are sorted by name)

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            order.setdefault("/".join(context.module.path), len(order))
        return out

    def run(v, x):
        with nn.intercept_methods(record):
            return module.apply(v, x, capture_intermediates=True, mutable=["intermediates"])

    # variables as an argument: an abstract model (jax.eval_shape of a constructor) works too
    _, state = jax.eval_shape(run, variables.value, jax.ShapeDtypeStruct(x_shape, dtype))
    shapes = {}

    def walk(tree, path):
        for key, value in tree.items():
            if key == "__call__":
                if len(value) == 1 and hasattr(value[0], "shape"):
                    shapes["/".join(path)] = tuple(value[0].shape)
            elif isinstance(value, dict):
                walk(value, path + (key,))

    walk(state.get("intermediates", {}), ())
    return tuple(sorted(shapes.items(), key=lambda item: order.get(item[0], len(order))))  # in call order


class LayerError(ValueError):
    """An unknown layer name; the one-line message lists the closest and all valid names."""


def input_shape(model: Model, size: Optional[int] = None) -> tuple:
    """The abstract input (1, size, size, 3) at `size`, by default the model's own ``info.input_size``."""
    size = int(size or model.info.input_size)
    return (1, size, size, 3)


def list_layers(model: Model, x_shape=None, spatial_only: bool = True) -> list:
    """Module paths usable as `layer`: those whose output is (N, ..., C) with 1-3 spatial axes
    (or any, with False). `x_shape` defaults to the model's own input size (`input_shape`)."""
    shapes = layer_shapes(model, x_shape or input_shape(model))
    return [p for p, s in shapes.items() if p and (not spatial_only or len(s) in (3, 4, 5))]


def check_layer(model: Model, layer: str, x_shape=None) -> LayerPath:
    """Resolve `layer` to a path (abstract run at `x_shape`, default the model's own input size).

    Raises `LayerError`: ``unknown layer 'layr4' for resnet18 (did you mean 'layer4'?); valid layers
    (...): ...``.
    """
    try:
        path = parse_layer(layer)
    except ValueError as err:
        raise LayerError(str(err)) from None
    shapes = layer_shapes(model, x_shape or input_shape(model))
    if "/".join(path) not in shapes:
        valid = [p for p, s in shapes.items() if p and len(s) in (3, 4, 5)]
        raise LayerError(
            f"unknown layer {layer!r} for {model.info.name}{closest(layer, valid)}; valid layers (module paths "
            f"with a spatial or token output): {', '.join(valid)}"
        )
    return path


class Split:
    """`model` split at `layer` (a resolved `LayerPath`). Pure functions, safe under jit/vmap."""

    def __init__(self, model: Model, layer: LayerPath, reshape: bool = True):
        self.model = model
        self.layer = tuple(layer)
        # token models: the model's linear tokens -> grid view (`ModelInfo.reshape_transform`); False
        # gives the raw layer output (e.g. to train the layers after it on cached activations)
        self.transform = model.info.reshape_transform if reshape else None

    def features(self, x: jnp.ndarray) -> jnp.ndarray:
        """Activations of the layer: (N, h, w, C) for x (N, H, W, 3); token layers seen as a grid."""
        a = dtypes.from_compute(self.model.info, self.layer_output(x))
        return self.transform(a) if self._is_token_layer(a, x) else a

    def _is_token_layer(self, a, x) -> bool:
        """The model declares a tokens -> grid view and `a` has one axis fewer than the input."""
        return self.transform is not None and a.ndim == x.ndim - 1

    def layer_output(self, x: jnp.ndarray) -> jnp.ndarray:
        """The layer's own output (tokens (N, T, C) for a token layer), in the model's compute dtype."""
        x = dtypes.to_compute(self.model.info, x)
        kind = kind_of(self.model)
        if kind is not None:
            return kind.features(self.model.variables, x, self.layer)
        _, state = self.model.module.apply(
            self.model.variables,
            x,
            capture_intermediates=lambda mdl, method: method == "__call__" and mdl.path == self.layer,
            mutable=["intermediates"],
        )
        node = state["intermediates"]
        for name in self.layer:
            node = node[name]
        calls = node["__call__"]
        if len(calls) != 1:
            raise ValueError(f"layer {'/'.join(self.layer)} is called {len(calls)} times; pick a module called once")
        return calls[0]

    def head(self, x: jnp.ndarray, activations: jnp.ndarray, classes: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        """The network's output with the layer's output replaced by `activations`.

        Args:
          x: the input (N, H, W, 3); only the parts of the network that do not feed the layer read it.
          activations: replacement for the layer's output, (N, h, w, C) (the grid of a token layer).
          classes: optional int (N,). If given and the model names its classifier (a Dense whose output
            is the model output), only these classes' logits are computed: returns (N,) instead of
            (N, num_classes). The saving is large when the head is re-run thousands of times.
            Without a named classifier, `classes` is ignored and all logits are returned.
        """
        info = self.model.info
        x, activations = dtypes.to_compute(info, x), dtypes.to_compute(info, activations)
        if self.transform is not None:
            tokens = self.layer_output(x)
            if self._is_token_layer(tokens, x):  # the grid back in token layout, other tokens kept
                activations = from_grid(self.transform, tokens, activations)
        kind = kind_of(self.model)
        if kind is not None:
            return dtypes.from_compute(info, kind.head(self.model.variables, x, self.layer, activations))
        gather = classes is not None and self.can_gather_classes
        classifier = parse_layer(self.model.info.classifier) if gather else None

        def interceptor(next_fun, args, kwargs, context):
            if context.method_name == "__call__":
                path = context.module.path
                if path == self.layer:
                    return activations
                if path == classifier:
                    params = context.module.variables["params"]
                    kernel = params["kernel"][:, classes]  # (D, N)
                    out = (args[0] * kernel.T).sum(axis=-1)  # elementwise: same rounding under vmap
                    return out + params["bias"][classes] if "bias" in params else out
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            return dtypes.from_compute(info, self.model.module.apply(self.model.variables, x))

    def apply_head(self, variables, x: jnp.ndarray, activations: jnp.ndarray, **apply_kwargs):
        """`module.apply(variables, x, **apply_kwargs)` with the layer's output replaced by `activations`.

        The training form of `head`: explicit variables and any apply arguments (``train=True``,
        ``mutable=["batch_stats"]``, ``rngs``), e.g. to train only the layers after a frozen prefix
        whose activations were computed once.
        """

        def interceptor(next_fun, args, kwargs, context):
            if context.method_name == "__call__" and context.module.path == self.layer:
                return activations
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            return self.model.module.apply(variables, x, **apply_kwargs)

    @property
    def can_gather_classes(self) -> bool:
        return self.model.info.classifier is not None and kind_of(self.model) is None
