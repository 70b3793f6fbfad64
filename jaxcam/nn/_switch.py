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
    """False inside `native(False)`: convolutions use the XLA formulation even when jaxcam._native loads."""
    return getattr(_state, "native", True)


@contextlib.contextmanager
def native(enabled: bool = True):
    """Trace models with (default) or without jaxcam's native oneDNN convolutions (`jaxcam._native`)."""
    previous = native_enabled()
    _state.native = enabled
    try:
        yield
    finally:
        _state.native = previous
