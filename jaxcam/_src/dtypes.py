"""Half precision in, float32 compute: every method upcasts float16/bfloat16 inside its jit."""
import jax
import jax.numpy as jnp

HALF = (jnp.float16, jnp.bfloat16)


def upcast_half(tree):
    """float16/bfloat16 leaves -> float32 (inside a compiled function: storage stays half precision).

    Perturbation methods take differences of nearly equal scores (a probability with one location
    ablated); bfloat16's 8-bit mantissa turns those into noise, so the methods compute in float32.
    """
    return jax.tree_util.tree_map(lambda v: v.astype(jnp.float32) if v.dtype in HALF else v, tree)
