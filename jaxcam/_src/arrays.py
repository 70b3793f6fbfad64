"""Host (numpy) arrays onto the device without compiling anything.

Outside a trace, ``jnp.asarray(numpy_array)`` compiles a small XLA program (``jit(stage)``) for each new
shape and dtype: about 10 ms each on a 2-core CPU (jax 0.10). A checkpoint has dozens of differently
shaped weights (DenseNet-121: 81), so converting one cost a second of compiling. ``jax.device_put``
copies without compiling and gives the same arrays: a copy (``may_alias=False``: changing the numpy
array afterwards changes nothing), dtypes canonicalized the same way (float64 and int64 become float32
and int32 unless ``jax_enable_x64``).
"""
import jax
import jax.numpy as jnp
import numpy as np


def on_device(tree):
    """`tree` with numpy leaves as jax arrays (`jax.device_put`), other leaves through `jnp.asarray`."""
    return jax.tree_util.tree_map(
        lambda v: jax.device_put(v, may_alias=False) if isinstance(v, (np.ndarray, np.generic)) else jnp.asarray(v), tree)
