"""The fast/plain switch, read at trace time."""
from __future__ import annotations

import contextlib
import threading

_state = threading.local()


def is_plain() -> bool:
    """True inside `plain()`: models trace the plain lax / flax formulation."""
    return getattr(_state, "plain", False)


@contextlib.contextmanager
def _setting(name: str, value, default):
    """Set one thread-local switch for the duration of a `with` block, then restore it."""
    previous = getattr(_state, name, default)
    setattr(_state, name, value)
    try:
        yield
    finally:
        setattr(_state, name, previous)


def plain(enabled: bool = True):
    """Trace models with plain `lax.conv_general_dilated` / flax BatchNorm (the reference path)."""
    return _setting("plain", enabled, False)


def native_enabled() -> bool:
    """False inside `native(False)`: convolutions use XLA's even when jaxcam._native loads."""
    return getattr(_state, "native", None) is not False


def native_for_layers() -> bool:
    """Whether training-mode BatchNorm runs oneDNN's primitive: inside `native(True)`, or by default
    while its batch statistics are being updated (its "batch_stats" collection mutable). Convolutions
    and pooling do not ask: they run oneDNN whenever `native_enabled()`."""
    explicit = getattr(_state, "native", None)
    return getattr(_state, "training", False) if explicit is None else explicit


def native(enabled: bool = True):
    """Trace with (`native(True)`, the default) or without (`native(False)`: XLA's convolutions and
    pooling) jaxcam's oneDNN kernels (`jaxcam._native`). `native(True)` also runs training-mode
    BatchNorm on oneDNN outside training steps."""
    return _setting("native", enabled, None)


def training(enabled: bool):
    """Set by `jaxcam.nn.BatchNorm` around its statistics (enabled = batch statistics are being updated)."""
    return _setting("training", enabled, False)
