"""XLA:CPU tuning, per compiled function (never process-wide): `cpu_options` and `jit`.

jaxcam compiles its own functions with XLA compiler options instead of editing ``XLA_FLAGS``:
importing jaxcam changes nothing in the process, and a user's own jits are left alone.

    CPU_TUNING = {"xla_cpu_experimental_ynn_fusion_type": ""}

XLA:CPU's YNNPACK fusion made a ResNet-18 forward several times slower on the 2-core machine this
was measured on (benchmarks/xla_flags.py), so jaxcam's jits turn it off. Rules:
- a flag the user set in ``XLA_FLAGS`` wins: its option is not passed (the user's value applies);
- ``JAXCAM_CPU_TUNING=0`` in the environment (read at each call) turns the tuning off;
- methods may add their own options (e.g. Ablation-CAM's ``xla_cpu_use_fusion_emitters=False``,
  a core's ``cpu_compiler_options`` attribute), under the same two rules;
- only on the CPU backend; XLA accepts options on a top-level jit only, so inside a user's
  jit/grad `jit` falls back to the plain compiled function (the user's own jit decides then).

The memory-map guard (`guard_memory_maps`, run before each jaxcam jit is called or lowered):
XLA:CPU maps every compiled program as about three regions of its own (code, read-only data,
data), and JAX's caches keep up to 8192 compiled functions in each of two caches (plus the
lowering caches). A long-lived process that compiles many distinct programs (a notebook explaining
many models, layers and shapes; a test run) reaches Linux's ``vm.max_map_count`` (65530 by
default); the next compile then fails ("LLVM compilation error: Cannot allocate memory") and the
C++ exception carrying that error kills the process with a segfault inside libgcc's unwinder.
Reproduced with 3,000 distinct tiny jits under ``vm.max_map_count=12000``. So, at most once every
`GUARD_SECONDS`, jaxcam counts the process's maps; above `GUARD_FRACTION` of the limit it calls
``jax.clear_caches()`` (compiled programs are rebuilt when next called) and warns in one line.
``JAXCAM_MAP_GUARD=0`` turns the guard off.
"""
from __future__ import annotations

import functools
import os
import time
import warnings
from typing import Callable, Dict, Optional

import jax

CPU_TUNING: Dict[str, object] = {"xla_cpu_experimental_ynn_fusion_type": ""}
SWITCH = "JAXCAM_CPU_TUNING"
GUARD_SWITCH = "JAXCAM_MAP_GUARD"
GUARD_SECONDS = 2.0
GUARD_FRACTION = 0.75
_guard = {"last": float("-inf")}


def map_count() -> Optional[int]:
    """How many memory maps this process has (lines of /proc/self/maps); None where there is no /proc."""
    try:
        with open("/proc/self/maps", "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return None


def map_limit() -> Optional[int]:
    """The kernel's per-process limit on memory maps (``vm.max_map_count``); None where it cannot be read."""
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def guard_memory_maps(fraction: float = GUARD_FRACTION, *, every: float = GUARD_SECONDS, warn: bool = True,
                      inputs=()) -> bool:
    """Clear JAX's compilation caches when this process nears ``vm.max_map_count`` (see the module doc).

    Counts at most once per `every` seconds, and never while `inputs` (the call's arguments) are being
    traced by an enclosing transformation; returns True when it cleared the caches.
    """
    now = time.monotonic()
    if now - _guard["last"] < every or not switched_on(GUARD_SWITCH):
        return False
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(inputs)):
        return False
    _guard["last"] = now
    count, limit = map_count(), map_limit()
    if count is None or not limit or count < fraction * limit:
        return False
    jax.clear_caches()
    if warn:
        warnings.warn(
            f"jaxcam: this process holds {count} memory maps, near the kernel's limit of {limit} "
            "(vm.max_map_count; every compiled XLA:CPU program takes about three), so JAX's compilation caches "
            "were cleared to keep the next compile from failing; raise the limit "
            "(sudo sysctl -w vm.max_map_count=262144) to keep them",
            RuntimeWarning, stacklevel=3)
    return True


def switched_on(variable: str) -> bool:
    """False when the environment sets `variable` to 0 (or false/off/no); read at each call."""
    return os.environ.get(variable, "1").strip().lower() not in ("0", "false", "off", "no")


def tuning_enabled() -> bool:
    """False when the environment says ``JAXCAM_CPU_TUNING=0`` (or false/off/no)."""
    return switched_on(SWITCH)


def user_flags() -> set:
    """Names of the XLA flags set in ``XLA_FLAGS`` (without the leading dashes)."""
    names = set()
    for token in os.environ.get("XLA_FLAGS", "").split():
        names.add(token.lstrip("-").split("=", 1)[0])
    return names


def cpu_options(extra: Optional[dict] = None) -> Dict[str, object]:
    """Compiler options for a jaxcam jit on CPU: `CPU_TUNING` plus `extra`, minus flags the user set.

    Returns {} on other backends or when tuning is switched off (``JAXCAM_CPU_TUNING=0``).
    """
    if not tuning_enabled() or jax.default_backend() != "cpu":
        return {}
    options = {**CPU_TUNING, **(extra or {})}
    taken = user_flags()
    return {k: v for k, v in options.items() if k not in taken}


@functools.lru_cache(maxsize=None)
def _tuned(fn, options: tuple, jit_kwargs: tuple):
    return jax.jit(fn, compiler_options=dict(options), **dict(jit_kwargs))


class _Jit:
    """A jitted `fn` that compiles with `cpu_options(extra)` when called at top level."""

    def __init__(self, fn: Callable, extra: Optional[dict], jit_kwargs: dict):
        self.fn, self.extra = fn, extra
        self.jit_kwargs = tuple(sorted(jit_kwargs.items()))
        self.plain = jax.jit(fn, **jit_kwargs)
        functools.update_wrapper(self, fn)

    def options(self, extra: Optional[dict] = None) -> Dict[str, object]:
        return cpu_options({**(self.extra or {}), **(extra or {})})

    def _compiled(self, extra: Optional[dict] = None):
        options = self.options(extra)
        return _tuned(self.fn, tuple(sorted(options.items())), self.jit_kwargs) if options else self.plain

    def lower(self, *args, **kwargs):
        """As `jax.jit(...).lower`, with the CPU options (top level only)."""
        guard_memory_maps(inputs=(args, kwargs))
        return self._compiled().lower(*args, **kwargs)

    def __call__(self, *args, _extra_options: Optional[dict] = None, **kwargs):
        guard_memory_maps(inputs=(args, kwargs))
        options = self.options(_extra_options)
        if not options:
            return self.plain(*args, **kwargs)
        tuned = _tuned(self.fn, tuple(sorted(options.items())), self.jit_kwargs)
        try:
            return tuned(*args, **kwargs)
        except ValueError as err:  # inside a user's transformation: options are refused there
            if "compiler_options" not in str(err):
                raise
            return self.plain(*args, **kwargs)


def jit(fn: Callable = None, *, extra_options: Optional[dict] = None, **jit_kwargs):
    """`jax.jit` with jaxcam's CPU tuning (see the module doc); usable as a decorator.

    ``jit(f, static_argnums=...)(*args, _extra_options={...})`` adds per-call options (e.g. a
    method core's ``cpu_compiler_options``).
    """
    if fn is None:
        return functools.partial(jit, extra_options=extra_options, **jit_kwargs)
    return _Jit(fn, extra_options, jit_kwargs)
