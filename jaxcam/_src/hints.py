"""Bad input, reported the same way everywhere: `ConfigError` (one line that says what to do) and the
closest valid names of a mistyped one."""
from __future__ import annotations

import difflib
from typing import Sequence


class ConfigError(ValueError):
    """A bad option value, flag, config-file key or command-line input; the message is one line and says
    what to do. Commands print it as ``<prog>: error: <message>`` and exit with status 2."""


def closest(name: str, valid: Sequence[str], n: int = 3) -> str:
    """`` (did you mean 'a', 'b'?)`` or ``""``."""
    hits = difflib.get_close_matches(str(name).lower(), [str(v).lower() for v in valid], n=n, cutoff=0.5)
    lookup = {str(v).lower(): str(v) for v in valid}
    return f" (did you mean {', '.join(repr(lookup[h]) for h in hits)}?)" if hits else ""


def unknown_name(kind: str, name: str, valid: Sequence[str]) -> str:
    """``unknown <kind> 'x' (did you mean ...?); choose one of a, b, c``."""
    return f"unknown {kind} {name!r}{closest(name, valid)}; choose one of {', '.join(map(str, valid))}"
