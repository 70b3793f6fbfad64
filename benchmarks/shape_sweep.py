"""jaxcam's forward and forward+backward against torch channels_last at every shape a user meets.

    python benchmarks/shape_sweep.py                       # 3 models x 6 shapes, float32 (~10 min)
    python benchmarks/shape_sweep.py --models resnet18 --rows 64x64,32x128 --xla
    python benchmarks/shape_sweep.py --dtype bfloat16      # torch autocast bf16 vs jaxcam in bf16

One process, both libraries pinned to the same `--threads` cores. Each model is built on each side
with its own random weights (ResNet-18: torchvision; CIFAR ResNet-20 and EfficientNet-Lite0: the
torch code of benchmarks/train_step.py), eval mode (running BatchNorm statistics), inputs NHWC on
jaxcam's side and channels_last on torch's.

- forward: logits of a batch (torch under no_grad; jaxcam jitted with its CPU options).
- forward+backward: gradients of sum(logits) with respect to the input and every parameter (what
  input-gradient CAM methods and FullGrad run; the training step has its own benchmark). As on torch's
  side, BatchNorm's running statistics are not differentiated (torch keeps them as buffers).
- Each cell: `--rounds` alternating rounds of about one second of calls per side; the best round's
  time per call is kept. "x torch" = torch time / jaxcam time (> 1: jaxcam faster).
- `--xla` adds jaxcam with its oneDNN kernels switched off (`jaxcam.nn.native(False)`): XLA:CPU's
  own convolutions.
- `--dtype bfloat16`: torch under `torch.autocast("cpu", dtype=torch.bfloat16)`; jaxcam with
  parameters and inputs cast to bfloat16.
The 1-minute load average before and after each model is printed beside its rows.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROWS = ((224, 1), (224, 16), (128, 32), (64, 64), (32, 128), (32, 512))
MODELS = ("resnet18", "resnet20", "efficientnet_lite0")


def _rows(text):
    rows = []
    for part in text.split(","):
        px, _, batch = part.partition("x")
        rows.append((int(px), int(batch)))
    return rows


def best_time(fns, rounds: int, budget: float = 1.0):
    """Per-call seconds of each fn in `fns`: alternating rounds, about `budget` s of calls each, best round."""
    calls = []
    for fn in fns:
        fn()  # warm-up (compiles)
        t = time.perf_counter()
        fn()
        calls.append(max(1, int(budget / max(time.perf_counter() - t, 1e-6))))
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            for _ in range(calls[i]):
                fn()
            best[i] = min(best[i], (time.perf_counter() - t) / calls[i])
    return best


def torch_side(name, px, batch, dtype):
    import contextlib

    import numpy as np
    import torch

    from train_step import torch_model

    model = torch_model(name, px).eval().to(memory_format=torch.channels_last)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, 3, px, px), np.float32))
    x = x.contiguous(memory_format=torch.channels_last)
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16" else contextlib.nullcontext()

    def forward():
        with torch.no_grad(), cast:
            model(x)

    xg = x.clone().requires_grad_(True)

    def backward():
        model.zero_grad(set_to_none=True)
        xg.grad = None
        with cast:
            out = model(xg).float().sum()
        out.backward()

    return forward, backward


def jax_side(name, px, batch, dtype, native: bool):
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxcam
    from jaxcam._src.compile import jit

    model = getattr(jaxcam.models, name)(num_classes=10)
    dt = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    variables = jax.tree_util.tree_map(lambda v: v.astype(dt), model.variables)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, px, px, 3), np.float32), dt)
    apply = model.module.apply
    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}  # BatchNorm's running statistics: not differentiated

    def loss(params, x):
        return apply(dict(rest, params=params), x).astype(jnp.float32).sum()

    with jaxcam.nn.native(native):
        fwd = jit(lambda v, x: apply(v, x)).lower(variables, x).compile()
        grad = jit(jax.grad(loss, (0, 1))).lower(params, x).compile()
    return (lambda: fwd(variables, x).block_until_ready()), (lambda: jax.block_until_ready(grad(params, x)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--rows", type=_rows, default=list(ROWS), help="comma-separated PXxBATCH (default: the sweep)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--xla", action="store_true", help="also time jaxcam with XLA's own convolutions")
    a = p.parse_args(argv)
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:a.threads])
    import torch

    torch.set_num_threads(a.threads)
    from jaxcam._src.host_memory import reuse_host_memory

    reuse_host_memory()  # as jaxcam's commands do (both sides share the allocator settings)
    cols = "| model | px | batch | pass | torch ms | jaxcam ms | x torch |" + (" XLA-only ms | XLA x torch |" if a.xla else "")
    print(f"dtype {a.dtype}, {a.threads} threads, best of {a.rounds} alternating rounds\n")
    print(cols)
    print("|---|---:|---:|---|---:|---:|---:|" + ("---:|---:|" if a.xla else ""))
    worst = float("inf")
    for name in a.models.split(","):
        load0 = os.getloadavg()[0]
        for px, batch in a.rows:
            sides = [torch_side(name, px, batch, a.dtype), jax_side(name, px, batch, a.dtype, True)]
            if a.xla:
                sides.append(jax_side(name, px, batch, a.dtype, False))
            for k, label in enumerate(("forward", "forward+backward")):
                t = best_time([s[k] for s in sides], a.rounds)
                ratio = t[0] / t[1]
                worst = min(worst, ratio)
                extra = f" {t[2] * 1e3:.1f} | {t[0] / t[2]:.2f} |" if a.xla else ""
                print(f"| {name} | {px} | {batch} | {label} | {t[0] * 1e3:.1f} | {t[1] * 1e3:.1f} | {ratio:.2f} |{extra}",
                      flush=True)
        print(f"<!-- {name}: load {load0:.2f} before, {os.getloadavg()[0]:.2f} after -->", flush=True)
    print(f"\nlowest x torch: {worst:.2f}")


if __name__ == "__main__":
    sys.exit(main())
