"""Half precision in, float32 compute: every method upcasts float16/bfloat16 inside its jit.

float64 stays float64 (under ``jax_enable_x64``): maps of float64 inputs and parameters are float64.
"""
import jax
import jax.numpy as jnp

HALF = (jnp.float16, jnp.bfloat16)


def upcast_half(tree):
    """float16/bfloat16 leaves -> float32 (inside a compiled function: storage stays half precision).

    Perturbation methods take differences of nearly equal scores (a probability with one location
    ablated); bfloat16's 8-bit mantissa turns those into noise, so the methods compute in float32.
    """
    return jax.tree_util.tree_map(lambda v: v.astype(jnp.float32) if v.dtype in HALF else v, tree)


def map_dtype(dtype):
    """The float type maps are computed in: float64 stays float64, anything else becomes float32."""
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def as_map_float(values):
    """`values` cast to `map_dtype` of their own dtype (float32 unless they are float64)."""
    return values.astype(map_dtype(values.dtype))
