"""Equinox modules as `jaxcam.Model`s: every method accepts an ``eqx.Module`` directly.

An Equinox network is called per example and, with ``eqx.nn.Conv``, channels first: ``net(x)`` with
x (C, H, W) (or (C, L), (C, D, H, W)). jaxcam's inputs are batched and channels last; the adapter
vmaps the module over the batch and moves the channel axis (``channels_first=True``, the default), so
``jaxcam.grad_cam(net, x_nhwc, layer="layers[3]")`` works on any rank. A module written for
batched channels-last input: ``jaxcam.equinox.model(net, batched=True, channels_first=False)``.

The split mechanism (a `jaxcam._src.split.SplitKind`), on copies of the module made inside the traced
function (the user's module is never touched; its arrays are the `Model`'s variables):

    features(x)   the module with the layer wrapped by a tap that hands its output out of the call
    head(x, A')   the module with the layer replaced by a constant returning A' (per example): what
                  feeds only the layer is dead code under jit

Layers are attribute paths as Equinox prints them: ``"layers[3]"``, ``"features.3"``, ``"blocks/1/conv"``
(brackets, dots and slashes alike); `jaxcam.list_layers` names them ``layers/3``. Every submodule
called once with one array output is a layer. Stateful layers (``eqx.nn.BatchNorm`` with an
``eqx.nn.State``) are not supported: pass an inference-mode module without state.

    >>> import equinox as eqx, jax, jaxcam
    >>> k1, k2 = jax.random.split(jax.random.key(0))
    >>> net = eqx.nn.Sequential([eqx.nn.Conv2d(3, 8, 3, padding=1, key=k1), eqx.nn.Lambda(jax.nn.relu),
    ...                          eqx.nn.Lambda(lambda a: a.mean(axis=(1, 2))), eqx.nn.Linear(8, 5, key=k2)])
    >>> jaxcam.grad_cam(net, jax.numpy.ones((2, 16, 16, 3)), layer="layers[1]").shape
    (2, 16, 16)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from jaxcam._src.model import Model, ModelInfo


class _Tap(eqx.Module):
    """Stands in for a layer: calls it and records its output under `name` (during tracing)."""

    inner: Any
    name: str = eqx.field(static=True)
    sink: Any = eqx.field(static=True)

    def __call__(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        self.sink.append((self.name, out))
        return out

    def __getattr__(self, item):  # a parent reading the layer's attributes still finds them
        return getattr(self.inner, item)


class _Constant(eqx.Module):
    """Stands in for the layer inside the head: returns the given activations, whatever its input."""

    value: Any

    def __call__(self, *args, **kwargs):
        return self.value


@dataclasses.dataclass(frozen=True, eq=False)
class EquinoxKind:
    """`SplitKind` of an Equinox module; its arrays are the `Model`'s variables, the rest is `static`."""

    static: Any
    batched: bool = False
    channels_first: bool = True

    def __hash__(self):  # static under jit: the static part's structure and values (functions, ints, ...)
        return hash(_static_key(self.static)) ^ hash((self.batched, self.channels_first))

    def __eq__(self, other):
        return (isinstance(other, EquinoxKind) and (self.batched, self.channels_first) ==
                (other.batched, other.channels_first) and _static_key(self.static) == _static_key(other.static))

    # the module's own layout <-> jaxcam's (N, ..., C)
    def _to_module(self, x):
        return jnp.moveaxis(x, -1, 1) if self.channels_first else x

    def _from_module(self, a):
        return jnp.moveaxis(a, 1, -1) if self.channels_first and a.ndim > 2 else a

    def apply(self, params, x):
        module = eqx.combine(params, self.static)
        v = self._to_module(x)
        return module(v) if self.batched else jax.vmap(module)(v)

    def output_shapes(self, params, x_shape, dtype) -> tuple:
        names = []  # the taps' names, in call order (fixed while tracing)

        def run(params, x):
            sink = []
            module = _tap_all(eqx.combine(params, self.static), (), sink)

            def one(v):
                del sink[:]
                out = module(v)
                names[:] = [name for name, _ in sink]
                return out, [a for _, a in sink]

            v = self._to_module(x)
            return one(v) if self.batched else jax.vmap(one)(v)

        out, outputs = jax.eval_shape(run, params, jax.ShapeDtypeStruct(x_shape, dtype))
        shapes = [("", tuple(out.shape))] if hasattr(out, "shape") else []
        for name, a in zip(names, outputs):
            if names.count(name) == 1 and hasattr(a, "shape"):
                shape = tuple(a.shape)
                if self.channels_first and len(shape) > 2:
                    shape = (shape[0],) + shape[2:] + shape[1:2]
                shapes.append((name, shape))
        return tuple(shapes)

    def features(self, params, x, layer):
        module = eqx.combine(params, self.static)
        name = "/".join(layer)

        def run(v):
            sink = []
            tapped = _replace(module, layer, lambda inner: _Tap(inner, name, sink))
            tapped(v)
            outputs = [a for n, a in sink if n == name]
            if len(outputs) != 1:
                raise ValueError(f"layer {name} is called {len(outputs)} times; pick a module called once")
            return outputs[0]

        v = self._to_module(x)
        a = run(v) if self.batched else jax.vmap(run)(v)
        return self._from_module(a)

    def head(self, params, x, layer, activations):
        module = eqx.combine(params, self.static)
        a = self._to_module(activations) if activations.ndim > 2 else activations

        def run(v, a):
            return _replace(module, layer, lambda inner: _Constant(a))(v)

        v = self._to_module(x)
        return run(v, a) if self.batched else jax.vmap(run)(v, a)


    def classifier_params(self, params, x, layer=None) -> dict:
        """{'kernel': (C, K), 'bias'?: (K,)} of the ``eqx.nn.Linear`` at `layer` (``ModelInfo.classifier``)."""
        if layer is None:
            raise ValueError("cam needs the classifier: pass jaxcam.equinox.model(net, jaxcam.ModelInfo(classifier="
                             "'layers[5]', ...)) with the path of the final eqx.nn.Linear, or use jaxcam.grad_cam")
        node = eqx.combine(params, self.static)
        for key in layer:
            node = dict(_children(node))[key]
        if not isinstance(node, eqx.nn.Linear):
            raise ValueError(f"classifier {'/'.join(layer)} is a {type(node).__name__}, not an eqx.nn.Linear")
        out = {"kernel": node.weight.T}
        if node.bias is not None:
            out["bias"] = node.bias
        return out


def _static_key(static):
    leaves, treedef = jax.tree_util.tree_flatten(static)
    return treedef, tuple(leaves)


def _children(node):
    """(key, child) pairs of a module's fields / a list's or tuple's items / a dict's values."""
    if isinstance(node, eqx.Module) and not isinstance(node, (_Tap, _Constant)):
        return [(f.name, getattr(node, f.name)) for f in dataclasses.fields(node) if hasattr(node, f.name)]
    if isinstance(node, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(node)]
    if isinstance(node, dict):
        return [(str(k), v) for k, v in node.items()]
    return []


def _rebuild(node, new_children: dict):
    """A copy of `node` with some children replaced (modules are rebuilt field by field, as Equinox does)."""
    if isinstance(node, eqx.Module):
        copy = object.__new__(type(node))
        for f in dataclasses.fields(node):
            if hasattr(node, f.name):
                object.__setattr__(copy, f.name, new_children.get(f.name, getattr(node, f.name)))
        return copy
    if isinstance(node, (list, tuple)):
        items = [new_children.get(str(i), v) for i, v in enumerate(node)]
        return type(node)(items)
    return {k: new_children.get(str(k), v) for k, v in node.items()}


def _tap_all(node, path, sink):
    """Every submodule (and `node` itself unless it is the root) wrapped in a `_Tap` named by its path."""
    old = dict(_children(node))
    new = {key: _tap_all(child, path + (key,), sink) for key, child in old.items()}
    changed = {key: child for key, child in new.items() if child is not old[key]}
    rebuilt = _rebuild(node, changed) if changed else node
    if path and isinstance(node, eqx.Module) and callable(node):
        return _Tap(rebuilt, "/".join(path), sink)
    return rebuilt


def _replace(module, layer, make: Callable):
    """`module` with the submodule at path `layer` (strings) replaced by ``make(submodule)``."""
    def go(node, keys):
        if not keys:
            return make(node)
        children = dict(_children(node))
        if keys[0] not in children:
            raise ValueError(f"no submodule {keys[0]!r} in {type(node).__name__} (layer {'/'.join(layer)})")
        return _rebuild(node, {keys[0]: go(children[keys[0]], keys[1:])})

    return go(module, tuple(layer))


def model(module, info: ModelInfo = None, *, default_layer: str = None, batched: bool = False,
          channels_first: bool = True) -> Model:
    """An Equinox module as a `jaxcam.Model` (the module is not changed).

    Args:
      module: an ``eqx.Module`` in inference mode (``eqx.nn.inference_mode(net)`` for dropout).
      info, default_layer: the model's `jaxcam.ModelInfo` or just its default layer.
      batched: the module takes a batch (N, ...) itself (default False: it is vmapped over the batch).
      channels_first: the module reads (C, H, W) (Equinox's convolutions; default) rather than (H, W, C).
    """
    if not isinstance(module, eqx.Module):
        raise TypeError(f"jaxcam.equinox.model expects an eqx.Module, got {type(module).__name__}")
    params, static = eqx.partition(module, eqx.is_array)
    info = info or ModelInfo(name=type(module).__name__, default_layer=default_layer)
    return Model(EquinoxKind(static, bool(batched), bool(channels_first)), params, info)
