"""jaxcam.train.reuse_host_memory: XLA:CPU's per-execution temporary buffer is reused instead of being
mapped and zero-filled by the kernel again for every call (counted as minor page faults per call)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

_CHILD = textwrap.dedent('''
    import json, os, resource, sys, warnings
    from jaxcam.train import reuse_host_memory
    applied = reuse_host_memory()
    import jax, jax.numpy as jnp
    @jax.jit
    def f(x):  # the gradient of a 3-layer MLP on 50,000 rows: ~230 MB of temporaries per call
        def loss(ws):
            h = x
            for w in ws:
                h = jnp.tanh(h @ w)
            return jnp.sum(h)
        return jax.grad(loss)([jnp.full((256, 256), 0.01)] * 3)
    x = jnp.ones((50000, 256))
    calls = []
    for _ in range(12):
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        jax.block_until_ready(f(x))
        calls.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
    faults = sorted(calls[2:])[5]  # median per call after two warm-up calls
    with warnings.catch_warnings(record=True) as late:
        warnings.simplefilter("always")
        if sys.argv[1] == "late":  # switched back on, but XLA has run by now: no effect, one warning
            os.environ.pop("JAXCAM_REUSE_MEMORY", None)
        again = reuse_host_memory() if sys.argv[1] == "late" else None
    print(json.dumps({"applied": applied, "faults": faults, "late": again, "warned": [str(w.message) for w in late]}))
''')


def _run(mode, **env):
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc malloc settings: Linux only")
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_reuse_host_memory_stops_per_call_page_faults_and_warns_when_late():
    # default glibc settings, through the switch: JAXCAM_REUSE_MEMORY=0 makes the call a no-op; the same
    # process then asks again without the switch, after JAX has run: no effect and one warning
    default = _run("late", JAXCAM_REUSE_MEMORY="0")
    reused = _run("reuse")
    assert default["applied"] is False and reused["applied"] is True
    # ~230 MB of fresh pages is ~60,000 faults per call by default; reused, next to none
    assert default["faults"] > 30_000, default
    assert reused["faults"] < 0.05 * default["faults"], (reused, default)
    assert default["late"] is False and any("GLIBC_TUNABLES" in w for w in default["warned"]), default
