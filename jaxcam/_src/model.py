"""`Model`: a model bound to its variables, plus what CAM methods need to know.

Every method takes a `Model` as its first argument (`jaxcam.grad_cam(model, x, ...)`). It is a
pytree: the variables are its leaves, the module and `ModelInfo` are static, so a `Model` can be
passed straight into `jax.jit` / `jax.vmap`.

Any user-written Linen module works: ``jaxcam.Model(MyNet(), variables)``. The module must accept
``module.apply(variables, x)`` with NHWC float input and return class scores ``(N, num_classes)``.

Other kinds of models (see `jaxcam._src.split.SplitKind`):
  ``jaxcam.Model.from_functions(features, head, params)``  plain JAX / equinox / haiku
  ``jaxcam.nnx.model(nnx_module)`` or any ``nnx.Module`` passed to a method directly  Flax NNX
Inputs may have 1, 2 or 3 spatial axes: (N, L, C), (N, H, W, C), (N, D, H, W, C).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._src import dtypes
from jaxcam._src.arrays import on_device

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Static facts about a model.

    Attributes:
      name: short model name, e.g. ``"resnet50"``.
      default_layer: the module path CAM methods use when ``layer`` is not given (e.g. ``"layer4"``).
      classifier: path of the final Dense layer whose output IS the model's output, or None. When
        set, ablation methods compute only the target logit(s) in the head instead of all classes.
      mean, std: per-channel input normalization (applied by `Model.preprocess`).
      class_names: class names in label order, or ().
      input_size: the usual square input size in pixels.
      reshape_transform: token models (ViTs): a LINEAR function from a token layer's output
        (N, tokens, C) to the grid (N, h, w, C) CAM methods work on, e.g. `jaxcam.tokens_to_grid`.
        The split applies it to every layer whose output has one axis fewer than the input, for
        every method; the head gets the grid back in token layout (other tokens kept).
      compute_dtype: None (float32, the default) or ``"bfloat16"``: the floating type the model's layers
        run in while methods explain it. Set it with `Model.with_compute_dtype`.
    """

    name: str = "custom"
    default_layer: Optional[str] = None
    classifier: Optional[str] = None
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    class_names: tuple = dataclasses.field(default=(), repr=False)
    input_size: int = 224
    reshape_transform: Optional[Callable] = None
    compute_dtype: Optional[str] = None

    def __post_init__(self):
        object.__setattr__(self, "compute_dtype", dtypes.check_compute_dtype(self.compute_dtype))


@flax.struct.dataclass
class Model:
    """A Linen module with its variables (``{'params': ..., 'batch_stats': ...}``) and `ModelInfo`."""

    module: nn.Module = flax.struct.field(pytree_node=False)
    variables: Any
    info: ModelInfo = flax.struct.field(pytree_node=False, default=ModelInfo())

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Class scores (N, num_classes) of NHWC input (N, H, W, C) in eval mode (float32 scores from a
        model with a bfloat16 `compute_dtype`)."""
        return dtypes.from_compute(self.info, self.module.apply(self.variables, dtypes.to_compute(self.info, x)))

    def with_compute_dtype(self, dtype) -> "Model":
        """This model computing in `dtype` ("bfloat16" or jnp.bfloat16; "float32" or None: the default)
        while methods explain it.

        In bfloat16 the floating parameters are stored in bfloat16 (a Linen model's ``batch_stats``, BatchNorm's
        running statistics, stay float32; other kinds cast every floating leaf), the input is cast where it
        enters the network, and the layers run bfloat16 convolutions (oneDNN's bfloat16 kernels on CPUs with
        AVX512-BF16 or AMX); the layer's activations, their gradients and the scores come back to the method
        in float32, so the method's own arithmetic (weights, sums, normalization) is float32. Maps differ
        from float32 ones by bfloat16's rounding: little for gradient methods, more for perturbation methods
        (Score-CAM, ablation), which compare nearly equal scores (BENCHMARKS.md measures both).
        ``with_compute_dtype("float32")`` computes in float32 again from the bfloat16-rounded parameters.
        Keras models keep their own dtype policy: build them under ``keras.config.set_dtype_policy(
        "mixed_bfloat16")`` instead (a ValueError says so).

        Example:
          >>> fast = model.with_compute_dtype("bfloat16")
          >>> maps = jaxcam.score_cam(fast, x)   # doctest: +SKIP
        """
        name = dtypes.check_compute_dtype(dtype)
        if name == self.info.compute_dtype:
            return self
        if name is not None and getattr(self.module, "own_dtype_policy", False):
            raise ValueError("a Keras model computes in its own dtype policy: build it under keras.config."
                             "set_dtype_policy('mixed_bfloat16') instead of with_compute_dtype")
        store = jnp.dtype(name or "float32")

        def cast(path, v):
            keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
            if "batch_stats" in keys or not hasattr(v, "dtype") or not jnp.issubdtype(v.dtype, jnp.floating):
                return v
            return v.astype(store)

        variables = jax.tree_util.tree_map_with_path(cast, self.variables)
        return self.replace(variables=variables, info=dataclasses.replace(self.info, compute_dtype=name))

    def preprocess(self, images) -> jnp.ndarray:
        """uint8 or [0, 1] float images (N, H, W, 3) -> normalized float32 model input."""
        images = np.asarray(images)
        scale = 255.0 if images.dtype == np.uint8 else 1.0
        x = images.astype(np.float32) / scale
        return on_device((x - np.asarray(self.info.mean, np.float32)) / np.asarray(self.info.std, np.float32))

    @classmethod
    def from_functions(
        cls, features: Callable, head: Callable, params: Any, *, layer: str = "features",
        info: Optional[ModelInfo] = None,
    ) -> "Model":
        """A model given as two pure functions; every method then works on it.

        Args:
          features: ``features(params, x) -> A``, the activations CAM methods explain (N, ..., C).
          head: ``head(params, A) -> scores`` (N, num_classes): the rest of the network.
          params: any pytree of arrays (an equinox module's arrays, haiku params, a dict).
          layer: the name the methods' ``layer`` argument accepts for A (the default layer too).

        Example:
          >>> import jax, jax.numpy as jnp, jaxcam
          >>> params = {"w": jnp.ones((3, 8)), "fc": jnp.ones((8, 5))}
          >>> model = jaxcam.Model.from_functions(
          ...     lambda p, x: jax.nn.relu(x @ p["w"]), lambda p, a: a.mean(axis=(1, 2)) @ p["fc"], params)
          >>> jaxcam.grad_cam(model, jnp.ones((1, 8, 8, 3)), targets=0).shape
          (1, 8, 8)
        """
        if not callable(features) or not callable(head):
            raise TypeError("from_functions(features, head, params): features and head must be functions")
        info = info or ModelInfo(name=getattr(features, "__name__", "functions"), default_layer=layer)
        return cls(Functions(features, head, layer), params, info)

    def with_variables(self, variables) -> "Model":
        return self.replace(variables=variables)

    def class_name(self, index: int) -> str:
        names = self.info.class_names
        return names[index] if 0 <= index < len(names) else str(index)


@dataclasses.dataclass(frozen=True)
class Functions:
    """The `SplitKind` of `Model.from_functions`: one layer, ``layer``, between `features` and `head`."""

    features_fn: Callable
    head_fn: Callable
    layer: str = "features"

    def apply(self, params, x):
        return self.head_fn(params, self.features_fn(params, x))

    def output_shapes(self, params, x_shape, dtype) -> tuple:
        x = jax.ShapeDtypeStruct(x_shape, dtype)
        a = jax.eval_shape(self.features_fn, params, x)
        out = jax.eval_shape(self.head_fn, params, a)
        return ((self.layer, tuple(a.shape)), ("", tuple(out.shape)))

    def features(self, params, x, layer):
        return self.features_fn(params, x)

    def head(self, params, x, layer, activations):
        return self.head_fn(params, activations)


def names_tuple(names: Optional[Sequence[str]]) -> tuple:
    return tuple(names) if names is not None else ()
