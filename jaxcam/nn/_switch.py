"""The fast/plain switch, read at trace time."""
from __future__ import annotations

import contextlib
import threading

_state = threading.local()


def is_plain() -> bool:
    """True inside `plain()`: models trace the plain lax / flax formulation."""
    return getattr(_state, "plain", False)


@contextlib.contextmanager
def plain(enabled: bool = True):
    """Trace models with plain `lax.conv_general_dilated` / flax BatchNorm (the reference path)."""
    previous = is_plain()
    _state.plain = enabled
    try:
        yield
    finally:
        _state.plain = previous



def native_enabled() -> bool:
    """False inside `native(False)`: convolutions use XLA's even when jaxcam._native loads."""
    return getattr(_state, "native", None) is not False


def native_for_layers() -> bool:
    """Whether `jaxcam.nn.Conv` layers run the native convolutions: inside `native(True)`, or by default
    while training (the layer's "batch_stats" collection is mutable). The native convolutions have
    reverse-mode derivatives only, so inference (where methods may take forward-mode derivatives,
    e.g. ShapleyCAM's Hessian-vector product) keeps lax's."""
    explicit = getattr(_state, "native", None)
    return getattr(_state, "training", False) if explicit is None else explicit


@contextlib.contextmanager
def native(enabled: bool = True):
    """Trace with (`native(True)`, also outside training) or without (`native(False)`) jaxcam's native
    oneDNN convolutions (`jaxcam._native`). Default: on in training steps, off elsewhere."""
    previous = getattr(_state, "native", None)
    _state.native = enabled
    try:
        yield
    finally:
        _state.native = previous


@contextlib.contextmanager
def training(enabled: bool):
    """Set by `jaxcam.nn.Conv` around its convolution (enabled = batch statistics are being updated)."""
    previous = getattr(_state, "training", False)
    _state.training = enabled
    try:
        yield
    finally:
        _state.training = previous
