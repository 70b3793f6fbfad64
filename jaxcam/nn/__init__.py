"""Building blocks XLA:CPU runs fast, with the plain lax formulation behind a switch.

    with jaxcam.nn.plain():        # trace models with plain lax convolutions / flax BatchNorm
        step = train.make_train_step(model, tx, 32)

    with jaxcam.nn.native(False):  # XLA convolutions instead of oneDNN's (jaxcam._native)
        ...

The switches are read when a function is traced (jit caches what it traced).
"""
from jaxcam.nn._switch import is_plain, native, plain
from jaxcam.nn import ops
from jaxcam.nn.ops import conv_general_dilated
from jaxcam.nn.layers import BatchNorm, Conv, DepthwiseConv, materialize, max_pool, same_pads

# What models and methods may use: the layers, `materialize`, and the switches. `ops` and `jaxcam._native`
# are this package's own business.
__all__ = ["BatchNorm", "Conv", "DepthwiseConv", "conv_general_dilated", "is_plain", "materialize", "max_pool", "native", "ops", "plain",
           "same_pads"]
