"""Keep freed host memory for reuse (glibc malloc settings for long XLA:CPU runs).

XLA:CPU allocates one temporary buffer per execution of a compiled step (every activation the
backward pass needs: ~200 MB for a CIFAR ResNet-20 step at batch 128) and frees it when the step
ends. glibc serves an allocation that large from a fresh `mmap` (always, from the worker threads'
arenas) and returns it with `munmap`, so every step the kernel maps and zero-fills ~50,000 new
pages: about a fifth of the step's CPU time on this project's 2-core machine
(benchmarks/train_step.py --malloc default shows it; measured on a CIFAR ResNet-20 step at batch 128:
49,600 minor page faults and 0.107 s of kernel time per step by default, 0 and 0.004 s reused).

`reuse_host_memory()` asks glibc for one arena, no `mmap` for large blocks and no trimming below
2 GiB, so the buffer freed by one step is reused by the next. It changes the whole process's
allocator and only works before XLA's worker threads have their own arenas, i.e. before the first
JAX computation; so jaxcam never calls it on import, only the training entry points call it at
their start (`JAXCAM_REUSE_MEMORY=0` turns that off). The same settings from outside:
    GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import warnings

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_TRIM = 2**31 - 1
_state = {"applied": False}


def xla_started() -> bool:
    """Whether XLA:CPU's worker threads exist in this process (they are named tf_XLAEigen)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return False
    for t in tasks:
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                if f.read().startswith("tf_XLA"):
                    return True
        except OSError:
            continue
    return False


def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only (musl has no such settings)
        return libc
    except (OSError, AttributeError):
        return None


def reuse_host_memory(warn: bool = True) -> bool:
    """Make glibc keep large freed blocks for reuse; True if the settings are in force.

    Call it before the first JAX computation of the process (jaxcam's training commands do). It is
    a no-op returning False when the process is not on glibc, when `JAXCAM_REUSE_MEMORY=0`, or when
    XLA has already started (then, with `warn`, one RuntimeWarning says how to set it from outside).
    """
    if _state["applied"]:
        return True
    if os.environ.get("JAXCAM_REUSE_MEMORY", "1") == "0":
        return False
    libc = _glibc()
    if libc is None:
        return False
    if xla_started():
        if warn:
            warnings.warn("jaxcam.train.reuse_host_memory() has no effect once JAX has run a computation; "
                          "call it first or start the process with GLIBC_TUNABLES=glibc.malloc.arena_max=1:"
                          "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647", RuntimeWarning,
                          stacklevel=2)
        return False
    ok = all(libc.mallopt(opt, value) == 1
             for opt, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM)))
    _state["applied"] = ok
    return ok
