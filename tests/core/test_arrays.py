"""Host arrays onto the device without compiling (jaxcam._src.arrays.on_device, used by weight loading)."""
import logging

import jax
import jax.numpy as jnp
import numpy as np

from jaxcam._src.arrays import on_device


def test_on_device_copies_numpy_leaves_without_compiling(caplog):
    x = np.arange(7 * 13, dtype=np.float64).reshape(7, 13)  # a shape nothing else in the process has used
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        y = on_device({"w": x, "n": np.int64(3)})
        jax.block_until_ready(y)
    assert not [r for r in caplog.records if "Compiling" in r.getMessage()], [r.getMessage() for r in caplog.records]
    # the values and dtypes jnp.asarray gives (x64 off: float64 -> float32, int64 -> int32)
    np.testing.assert_array_equal(np.asarray(y["w"]), x.astype(np.float32))
    assert y["w"].dtype == jnp.float32 and y["n"].dtype == jnp.int32 and int(y["n"]) == 3
    other = on_device({"a": jnp.ones(2), "s": 1.5})  # other leaves: through jnp.asarray
    assert isinstance(other["a"], jax.Array) and float(other["s"]) == 1.5
    x[:] = -1  # a copy: the numpy array changing afterwards changes nothing
    assert float(y["w"][0, 1]) == 1.0
