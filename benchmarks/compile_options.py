"""Per-jit XLA:CPU tuning (jaxcam._src.compile.jit) against a plain jax.jit: ResNet-18 forward, same process.

    PYTHONPATH=$PWD python benchmarks/compile_options.py
"""
import time

import jax

import jaxcam
from jaxcam._src import compile as compile_lib

model = jaxcam.models.resnet18(num_classes=1000)
x = jax.random.normal(jax.random.key(0), (1, 224, 224, 3))
plain = jax.jit(lambda m, x: m(x))
tuned = compile_lib.jit(lambda m, x: m(x))


def best_ms(f, n=10):
    f(model, x).block_until_ready()
    best = float("inf")
    for _ in range(n):
        start = time.perf_counter()
        f(model, x).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


print("jaxcam options:", tuned.options())
for _ in range(2):
    a, b = best_ms(plain), best_ms(tuned)
    print(f"resnet18 224px batch 1 forward: jax.jit {a:.1f} ms, jaxcam jit {b:.1f} ms, ratio {a / b:.2f}")
