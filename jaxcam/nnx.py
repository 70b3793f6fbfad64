"""Flax NNX modules as `jaxcam.Model`s: every method accepts an ``nnx.Module`` directly.

The split mechanism for NNX (a `jaxcam._src.split.SplitKind`), on a merged copy of the module made
inside the traced function (the user's module is never touched):

    features(x)   ``nnx.capture(copy, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)``, read
                  at the layer's attribute path (under jit only the part feeding the layer survives)
    head(x, A')   the copy with the layer replaced by a module that returns A'; calling the copy then
                  runs only what lies after the layer (the rest is dead code under jit)

Layers are NNX attribute paths: ``"layer4"``, ``"layer4/1"``, ``"blocks/11/norm1"``.

    >>> from flax import nnx
    >>> import jax, jaxcam
    >>> from jaxcam.models.nnx_resnet import ResNet18
    >>> net = ResNet18(num_classes=10, rngs=nnx.Rngs(0))
    >>> x = jax.random.normal(jax.random.key(0), (1, 64, 64, 3))
    >>> jaxcam.grad_cam(net, x, layer="layer4").shape
    (1, 64, 64)
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
from flax import nnx

from jaxcam.model import Model, ModelInfo


@dataclasses.dataclass(frozen=True)
class NNXKind:
    """`SplitKind` of an NNX module; the module's state is the `Model`'s variables."""

    graphdef: Any

    def apply(self, state, x):
        return nnx.merge(self.graphdef, state)(x)

    def output_shapes(self, state, x_shape, dtype) -> tuple:
        def run(state, x):
            return _capture_all(nnx.merge(self.graphdef, state), x)

        out, inter = jax.eval_shape(run, state, jax.ShapeDtypeStruct(x_shape, dtype))
        shapes = [("", tuple(out.shape))] if hasattr(out, "shape") else []
        for path, value in nnx.to_flat_state(inter):
            if path and path[-1] == "__call__" and len(path) > 1:
                outputs = value.get_value() if hasattr(value, "get_value") else value
                if isinstance(outputs, tuple) and len(outputs) == 1 and hasattr(outputs[0], "shape"):
                    shapes.append(("/".join(str(p) for p in path[:-1]), tuple(outputs[0].shape)))
        return tuple(shapes)

    def features(self, state, x, layer):
        _, inter = _capture_all(nnx.merge(self.graphdef, state), x)
        node = inter
        for p in _keys(nnx.merge(self.graphdef, state), layer):
            node = node[p]
        outputs = node["__call__"].get_value()
        if len(outputs) != 1:
            raise ValueError(f"layer {'/'.join(layer)} is called {len(outputs)} times; pick a module called once")
        return outputs[0]

    def head(self, state, x, layer, activations):
        copy = nnx.merge(self.graphdef, state)
        keys = _keys(copy, layer)
        parent = copy
        for p in keys[:-1]:
            parent = _child(parent, p)
        if isinstance(keys[-1], int):
            parent[keys[-1]] = _Constant(activations)
        else:
            setattr(parent, keys[-1], _Constant(activations))
        return copy(x)


class _Constant(nnx.Module):
    """Stands in for the layer inside the head: returns the given activations, whatever its input."""

    def __init__(self, value):
        self.value = nnx.Variable(value)

    def __call__(self, *args, **kwargs):
        return self.value.get_value()


def _capture_all(module, x):
    return nnx.capture(module, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)


def _child(node, key):
    return node[key] if isinstance(key, int) else getattr(node, key)


def _keys(module, layer) -> tuple:
    """String path ("layer4", "1") -> attribute names / list indices as the module holds them."""
    keys, node = [], module
    for p in layer:
        key = int(p) if isinstance(node, (nnx.List, list, tuple)) and p.lstrip("-").isdigit() else p
        node = _child(node, key)
        keys.append(key)
    return tuple(keys)


def model(module: nnx.Module, info: ModelInfo = None, *, default_layer: str = None) -> Model:
    """An NNX module as a `jaxcam.Model` in eval mode (a copy; the module itself is not changed)."""
    if not isinstance(module, nnx.Module):
        raise TypeError(f"jaxcam.nnx.model expects an nnx.Module, got {type(module).__name__}")
    copy = nnx.clone(module)
    if hasattr(copy, "eval"):
        copy.eval()  # BatchNorm running statistics, no dropout
    graphdef, state = nnx.split(copy)
    info = info or ModelInfo(name=type(module).__name__, default_layer=default_layer)
    return Model(NNXKind(graphdef), state, info)
