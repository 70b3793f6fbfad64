"""Keras 3 models (JAX backend) as `jaxcam.Model`s: every method accepts a ``keras.Model`` directly.

    jaxcam.grad_cam(keras_model, x, layer="conv5_block3_out")   # layer names as model.summary() prints them

Keras must run on JAX: set ``KERAS_BACKEND=jax`` (or ``~/.keras/keras.json``) before keras is first
imported. jaxcam never imports keras itself and never changes the environment; a keras imported with
another backend gets one clear error.

The split mechanism (a `jaxcam._src.split.SplitKind`) on the model's functional graph, stateless:
the `Model`'s variables are the values of ``model.variables``, mapped onto them inside
``keras.StatelessScope`` for each call (no Keras variable is assigned; jittable).

    features(x)   ``keras.Model(model.inputs, layer.output)``
    head(x, A')   ``keras.Model([*model.inputs, layer.output], model.outputs)``: the graph from the
                  layer's output on, with A' in its place (a skip connection that bypasses the layer
                  still reads the input)

Functional and Sequential models whose layers are each called once are supported (e.g.
``keras.applications``); a subclassed model has no graph to split: wrap it with
`jaxcam.Model.from_functions`. CAM reads the final ``Dense`` (``ModelInfo.classifier`` or the model's
last layer): build keras.applications models with ``classifier_activation=None`` for logits.
"""
from __future__ import annotations

import keras

from jaxcam._src.model import Model, ModelInfo

if keras.backend.backend() != "jax":
    raise ImportError(
        f"keras runs on the {keras.backend.backend()!r} backend; jaxcam needs Keras on JAX: set KERAS_BACKEND=jax "
        "before keras is first imported (jaxcam does not change it for you)"
    )


class KerasKind:
    """`SplitKind` of a functional Keras model; the values of ``model.variables`` are the `Model`'s variables."""

    own_dtype_policy = True  # Keras layers cast to their dtype policy: `Model.with_compute_dtype` refuses them

    def __init__(self, model):
        self.model = model
        self._graphs = {}

    def __hash__(self):
        return id(self.model)

    def __eq__(self, other):
        return isinstance(other, KerasKind) and other.model is self.model

    @property
    def _input(self):
        """The model's input tensor (a one-input model is called with the array itself, not a list)."""
        inputs = self.model.inputs
        return inputs[0] if len(inputs) == 1 else inputs

    def _scope(self, values):
        return keras.StatelessScope(state_mapping=list(zip(self.model.variables, values)))

    def _graph(self, key, build):
        if key not in self._graphs:
            self._graphs[key] = build()
        return self._graphs[key]

    def _layer(self, layer):
        name = "/".join(layer)
        try:
            return self.model.get_layer(name)
        except ValueError:
            raise ValueError(f"no layer {name!r} in keras model {self.model.name}") from None

    def apply(self, values, x):
        with self._scope(values):
            return self.model(x, training=False)

    def _own_nodes(self):
        """ids of the nodes (layer calls) of the model's own graph, or None when Keras does not expose them.

        A layer's ``_inbound_nodes`` also holds its calls in other graphs: every head graph below (a
        `keras.Model` whose input is an inner tensor) re-calls the layers after it, so counting all of
        them made every layer after an explained one look "called twice" (gone from the layers)."""
        graph = self.model if hasattr(self.model, "_nodes_by_depth") else getattr(self.model, "_functional", None)
        by_depth = getattr(graph, "_nodes_by_depth", None)
        if not isinstance(by_depth, dict):
            return None
        return {id(node) for nodes in by_depth.values() for node in nodes}

    def _layers(self):
        """The model's layers called once in its own graph (one output each), in the model's order:
        [(name, output KerasTensor)]."""
        own = self._own_nodes()
        out = []
        for layer in self.model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            nodes = list(getattr(layer, "_inbound_nodes", ()))
            if own is not None:
                nodes = [node for node in nodes if id(node) in own]
            if len(nodes) != 1:
                continue
            outputs = getattr(nodes[0], "outputs", None)
            if outputs is None:
                try:
                    outputs = [layer.output]
                except (AttributeError, ValueError):
                    continue
            if len(outputs) == 1 and isinstance(outputs[0], keras.KerasTensor):
                out.append((layer.name, outputs[0]))
        return out

    def _output(self, layer):
        """The output tensor of `layer` (path) in the model's own graph."""
        name = "/".join(layer)
        for key, tensor in self._layers():
            if key == name:
                return tensor
        return self._layer(layer).output  # not called once: Keras' own error or its first call

    def output_shapes(self, values, x_shape, dtype) -> tuple:
        import jax

        layers = self._layers()
        every = self._graph("every", lambda: keras.Model(self._input, [t for _, t in layers]))

        def run(values, x):
            with self._scope(values):
                return self.model(x, training=False), every(x, training=False)

        out, outputs = jax.eval_shape(run, values, jax.ShapeDtypeStruct(x_shape, dtype))
        shapes = [("", tuple(out.shape))] if hasattr(out, "shape") else []
        return tuple(shapes + [(name, tuple(a.shape)) for (name, _), a in zip(layers, outputs)])

    def features(self, values, x, layer):
        key = ("features", layer)
        graph = self._graph(key, lambda: keras.Model(self._input, self._output(layer)))
        with self._scope(values):
            return graph(x, training=False)

    def head(self, values, x, layer, activations):
        key = ("head", layer)
        graph = self._graph(key, lambda: keras.Model([*self.model.inputs, self._output(layer)],
                                                     self.model.outputs))
        with self._scope(values):
            out = graph([x, activations], training=False)
        return out[0] if isinstance(out, (list, tuple)) and len(out) == 1 else out

    def classifier_params(self, values, x, layer=None) -> dict:
        """{'kernel': (C, K), 'bias'?: (K,)} of the Dense at `layer` (default: the model's last layer)."""
        dense = self._layer(layer) if layer is not None else self.model.layers[-1]
        if not isinstance(dense, keras.layers.Dense):
            raise ValueError(f"cam needs the final Dense: {dense.name} is a {type(dense).__name__}; pass "
                             "jaxcam.ModelInfo(classifier=<its name>) or use jaxcam.grad_cam")
        with self._scope(values):
            out = {"kernel": dense.kernel.value}
            if dense.bias is not None:
                out["bias"] = dense.bias.value
        return out


def model(keras_model, info: ModelInfo = None, *, default_layer: str = None) -> Model:
    """A functional Keras 3 model as a `jaxcam.Model` (the model and its variables are not changed)."""
    if not isinstance(keras_model, keras.Model):
        raise TypeError(f"jaxcam.keras.model expects a keras.Model, got {type(keras_model).__name__}")
    if not getattr(keras_model, "inputs", None) or not getattr(keras_model, "outputs", None):  # no layer graph
        raise TypeError(f"{type(keras_model).__name__} is a subclassed keras.Model (no layer graph to split): "
                            "use a functional or Sequential model, or jaxcam.Model.from_functions")
    if info is None:
        shape = tuple(keras_model.inputs[0].shape) if keras_model.inputs else ()
        size = shape[1] if len(shape) == 4 and shape[1] is not None and shape[1] == shape[2] else 224
        info = ModelInfo(name=keras_model.name, default_layer=default_layer, input_size=int(size))
    values = [v.value for v in keras_model.variables]
    return Model(KerasKind(keras_model), values, info)
