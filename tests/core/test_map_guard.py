"""The memory-map guard: a process nearing vm.max_map_count has JAX's caches cleared before it crashes.

The crash itself (a compile past the limit: "LLVM compilation error: Cannot allocate memory", then a
segfault in libgcc's unwinder) was reproduced by hand under ``sysctl vm.max_map_count=12000`` with 3,000
distinct jits; these tests lower the limit the guard sees instead of the kernel's.
"""
import warnings

import jax
import jax.numpy as jnp
import pytest

from jaxcam._src import compile as compile_lib


def _compile_distinct(n: int):
    fns = [jax.jit(lambda x, i=i: jnp.sin(x) * i + i) for i in range(n)]
    for f in fns:
        f(jnp.ones(3)).block_until_ready()
    return fns


def test_map_count_reads_the_process_maps():
    with open("/proc/self/maps") as f:
        lines = len(f.read().splitlines())
    assert abs(compile_lib.map_count() - lines) < 50  # the count itself may map a page or two
    assert compile_lib.map_limit() >= 1000


def test_guard_clears_compiled_programs_near_the_limit(monkeypatch):
    keep = _compile_distinct(100)  # 100 live executables: ~300 maps of their own
    before = compile_lib.map_count()
    monkeypatch.setattr(compile_lib, "map_limit", lambda: before + 10)
    with pytest.warns(RuntimeWarning, match=r"vm\.max_map_count.*caches were cleared.*sysctl") as record:
        assert compile_lib.guard_memory_maps(every=0.0)
    assert len(record) == 1
    after = compile_lib.map_count()
    assert after < before - 200, (before, after)  # the executables' maps were released
    assert float(keep[0](jnp.ones(3))[0]) == pytest.approx(0.0)  # a cleared function still runs (recompiled)


def test_guard_is_quiet_below_the_limit_and_throttled(monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not compile_lib.guard_memory_maps(every=0.0)  # far below 75% of the real limit
        monkeypatch.setattr(compile_lib, "map_limit", lambda: 1)
        assert not compile_lib.guard_memory_maps(every=3600.0)  # counted a moment ago: not again yet
        monkeypatch.setenv("JAXCAM_MAP_GUARD", "0")
        assert not compile_lib.guard_memory_maps(every=0.0)  # switched off


def test_guard_never_clears_while_a_transformation_traces(monkeypatch):
    monkeypatch.setattr(compile_lib, "map_limit", lambda: 1)
    seen = []

    def f(x):
        seen.append(compile_lib.guard_memory_maps(every=0.0, inputs=(x,)))
        return x * 2

    jax.jit(f)(jnp.ones(2))
    assert seen == [False]


def test_jaxcam_jits_run_the_guard(monkeypatch):
    calls = []
    monkeypatch.setattr(compile_lib, "guard_memory_maps", lambda *a, **k: calls.append(k) or False)
    f = compile_lib.jit(lambda x: x + 1)
    f(jnp.ones(2))
    f.lower(jnp.ones(2))
    assert len(calls) == 2 and all("inputs" in k for k in calls)
