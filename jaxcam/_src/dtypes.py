"""Which floating type a model computes in while a method explains it.

By default every method computes in float32: float16/bfloat16 inputs and parameters are upcast inside
its jit (`upcast_half`; storage stays half precision). float64 stays float64 (under ``jax_enable_x64``):
maps of float64 inputs and parameters are float64.

A model made with ``model.with_compute_dtype("bfloat16")`` (`Model.with_compute_dtype`) instead runs
its layers in bfloat16 -- on oneDNN's bfloat16 kernels where the CPU has them (AVX512-BF16, AMX) --
while the method's own arithmetic stays float32: the model's input is cast to bfloat16 where it
enters the network (`to_compute`), and what leaves it for the method (the layer's activations, the
scores) is cast back to float32 (`from_compute`); gradients flow through both casts.
"""
import jax
import jax.numpy as jnp

HALF = (jnp.float16, jnp.bfloat16)
COMPUTE_DTYPES = ("float32", "bfloat16")


def upcast_half(tree):
    """float16/bfloat16 leaves -> float32 (inside a compiled function: storage stays half precision).

    Perturbation methods take differences of nearly equal scores (a probability with one location
    ablated); bfloat16's 8-bit mantissa turns those into noise, so the methods compute in float32
    unless the model was made to compute in bfloat16 (`Model.with_compute_dtype`).
    """
    return jax.tree_util.tree_map(lambda v: v.astype(jnp.float32) if v.dtype in HALF else v, tree)


def for_method(model, x):
    """The model and input a method computes with: upcast to float32 (`upcast_half`), except the
    parameters of a model with a compute dtype, which stay in it."""
    return (model if model.info.compute_dtype else upcast_half(model)), upcast_half(x)


def check_compute_dtype(dtype):
    """None / "float32" -> None (float32, the default); "bfloat16" (or jnp.bfloat16) -> "bfloat16"; else a
    ValueError naming the choices."""
    if dtype is None:
        return None
    try:
        name = jnp.dtype(dtype).name
    except TypeError:
        name = None
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}; got {dtype!r}")
    return None if name == "float32" else name


def input_dtype(info, dtype):
    """The dtype a floating input of `dtype` has inside the network (the model's compute dtype, if any)."""
    if info.compute_dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        return jnp.dtype(dtype)
    return jnp.dtype(info.compute_dtype)


def to_compute(info, x):
    """A floating input entering the network, in the model's compute dtype (unchanged without one)."""
    dtype = input_dtype(info, jnp.result_type(x))
    return x if dtype == jnp.result_type(x) else x.astype(dtype)


def from_compute(info, tree):
    """What leaves the network for a method (activations, scores), back in float32 (unchanged without a
    compute dtype)."""
    return tree if info.compute_dtype is None else upcast_half(tree)


def map_dtype(dtype):
    """The float type maps are computed in: float64 stays float64, anything else becomes float32."""
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def as_map_float(values):
    """`values` cast to `map_dtype` of their own dtype (float32 unless they are float64)."""
    return values.astype(map_dtype(values.dtype))
