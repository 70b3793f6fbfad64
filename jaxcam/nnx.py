"""Flax NNX modules as `jaxcam.Model`s: every method accepts an ``nnx.Module`` directly.

The split mechanism for NNX (a `jaxcam._src.split.SplitKind`), on a merged copy of the module made
inside the traced function (the user's module is never touched):

    features(x)   ``nnx.capture(copy, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)``, read
                  at the layer's attribute path (under jit only the part feeding the layer survives)
    head(x, A')   the copy with the layer replaced by a module that returns A'; calling the copy then
                  runs only what lies after the layer (the rest is dead code under jit)

Methods that read more than one layer use two optional parts of the protocol, answered here:
``classifier_params`` (CAM: the ``nnx.Linear`` at ``ModelInfo.classifier``, or else the one whose
output is the model's output) and ``bias_outputs`` (FullGrad: every ``nnx.Conv`` with a bias and
``nnx.BatchNorm``, each swapped for a probe-adding wrapper in the merged copy). Guided backprop needs
nothing: it reads the ReLUs of the traced forward, whatever the kind.

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
import jax.numpy as jnp
from flax import nnx

from jaxcam._src.model import Model, ModelInfo


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
        _replace(copy, _keys(copy, layer), _Constant(activations))
        return copy(x)


    # Optional parts of the protocol (methods that read more than one layer):

    def classifier_params(self, state, x, layer=None) -> dict:
        """{'kernel': (C, K), 'bias'?: (K,)} of the ``nnx.Linear`` at `layer` (CAM's weights).

        With ``layer=None``, the Linear whose output IS the model's output on `x` (found by tracing).
        """
        if layer is None:
            layer = self._output_linear(state, x) if x is not None else None
            if layer is None:
                raise ValueError(
                    "cam needs the classifier: no nnx.Linear's output is the model's output; pass "
                    "jaxcam.ModelInfo(classifier=<its attribute path>) or use jaxcam.grad_cam / hires_cam"
                )
        node = _at(nnx.merge(self.graphdef, state), layer)
        if not isinstance(node, nnx.Linear):
            raise ValueError(f"classifier {'/'.join(layer)} is a {type(node).__name__}, not an nnx.Linear")
        params = {"kernel": node.kernel.get_value()}
        if node.bias is not None:
            params["bias"] = node.bias.get_value()
        return params

    def _output_linear(self, state, x):
        """Attribute path of the nnx.Linear whose output is the module's output on x, or None."""
        found = []

        def run(state, x):
            module = nnx.merge(self.graphdef, state)
            out, inter = _capture_all(module, x)
            for path, value in nnx.to_flat_state(inter):
                if len(path) > 1 and path[-1] == "__call__":
                    outputs = value.get_value() if hasattr(value, "get_value") else value
                    if len(outputs) == 1 and outputs[0] is out:
                        layer = tuple(str(p) for p in path[:-1])
                        if isinstance(_at(module, layer), nnx.Linear):
                            found.append(layer)
            return out

        jax.eval_shape(run, state, jax.ShapeDtypeStruct(x.shape, x.dtype))
        return found[0] if len(found) == 1 else None

    def bias_outputs(self, state, x, probes=None):
        """FullGrad's layers: ``(scores, {path: (output, effective bias)})`` for every ``nnx.Conv`` with
        a bias and every ``nnx.BatchNorm`` (bias - mean * scale / sqrt(var + eps)), with ``probes[path]``
        added to that layer's output when given (differentiate the scores by the probes)."""
        copy = nnx.merge(self.graphdef, state)
        found = {}
        for path, module in list(nnx.iter_modules(copy)):
            bias = _effective_bias(module)
            if path and bias is not None:
                name = "/".join(str(p) for p in path)
                _replace(copy, path, _Probed(module, name, bias, found, probes))
        return copy(x), found


def _effective_bias(module):
    """The bias added to the output of a Conv with a bias or a BatchNorm (running statistics), else None."""
    if isinstance(module, nnx.BatchNorm):
        mean, var = module.mean.get_value(), module.var.get_value()
        scale = module.scale.get_value() if module.scale is not None else 1.0
        bias = module.bias.get_value() if module.bias is not None else 0.0
        return bias - mean * scale / jnp.sqrt(var + module.epsilon)
    if isinstance(module, nnx.Conv) and module.bias is not None:
        return module.bias.get_value()
    return None


class _Probed:
    """Stands in for a bias layer in FullGrad's copy: records its output, adds the probe if any."""

    def __init__(self, inner, name, bias, found, probes):
        self.inner, self.name, self.bias, self.found, self.probes = inner, name, bias, found, probes

    def __call__(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        self.found[self.name] = (out, self.bias.astype(out.dtype))
        if self.probes is not None and self.name in self.probes:
            return out + self.probes[self.name].astype(out.dtype)
        return out


def _at(module, layer):
    node = module
    for key in _keys(module, layer):
        node = _child(node, key)
    return node


def _replace(module, keys, value):
    """Set the submodule at `keys` (attribute names / list indices) of `module` to `value`."""
    parent = module
    for p in keys[:-1]:
        parent = _child(parent, p)
    if isinstance(keys[-1], int):
        parent[keys[-1]] = value
    else:
        setattr(parent, keys[-1], value)


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
