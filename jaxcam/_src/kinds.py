"""What the first argument of every method may be, turned into a `jaxcam.Model`.

A `Model`, a ``(linen module, variables)`` pair, a Flax NNX module, an Equinox module or a Keras 3
model. NNX, Equinox and Keras are recognised without importing them (a user who built such a module has imported it
already), and `jaxcam.nnx` / `jaxcam.equinox` / `jaxcam.keras` are imported only for their users.
"""
from __future__ import annotations

import sys

import flax.linen as nn

from jaxcam._src.model import Model


def as_model(model) -> Model:
    """Accept a `Model`, a ``(module, variables)`` pair, a Flax NNX module or an Equinox module."""
    if isinstance(model, Model):
        return model
    if is_nnx(model):
        from jaxcam import nnx as jaxcam_nnx  # only NNX users pay for the import

        return jaxcam_nnx.model(model)
    if is_keras(model):
        from jaxcam import keras as jaxcam_keras  # only Keras users pay for the import

        return jaxcam_keras.model(model)
    if is_equinox(model):
        from jaxcam import equinox as jaxcam_equinox  # only Equinox users pay for the import

        return jaxcam_equinox.model(model)
    if isinstance(model, (tuple, list)) and len(model) == 2 and isinstance(model[0], nn.Module):
        return Model(model[0], model[1])
    raise TypeError(
        "expected a jaxcam.Model (or a (flax module, variables) pair, or a Flax NNX module) as the first "
        f"argument, got {type(model).__name__}; build one with jaxcam.Model(module, variables) or "
        "jaxcam.models.resnet50()"
    )


def is_keras(obj) -> bool:
    """True for a Keras 3 model (checked against an already imported ``keras`` only)."""
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(getattr(keras, "Model", None), type) and isinstance(obj, keras.Model)


def is_equinox(obj) -> bool:
    """True for an Equinox module (checked against an already imported ``equinox`` only)."""
    eqx = sys.modules.get("equinox")
    return eqx is not None and isinstance(obj, eqx.Module)


def is_nnx(obj) -> bool:
    """True for a Flax NNX module (checked against an already imported ``flax.nnx`` only)."""
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(obj, nnx.Module)
