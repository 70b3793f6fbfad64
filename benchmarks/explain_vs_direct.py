"""One compiled path: a method through jaxcam.explain runs as fast as the direct call (same process).

    PYTHONPATH=$PWD python benchmarks/explain_vs_direct.py [--size 224] [--batch 4]
"""
import argparse
import os
import time

import jax
import numpy as np

import jaxcam
from jaxcam.cli import common

p = common.ArgumentParser(description=__doc__)
p.add_argument("--size", type=common.positive_int, default=224)
p.add_argument("--batch", type=common.positive_int, default=4)
p.add_argument("--repeats", type=common.positive_int, default=5)
args = p.parse_args()

model = jaxcam.models.resnet18(num_classes=1000)
images = np.random.default_rng(0).integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8)
x = jax.device_put(model.preprocess(images))


def best(fn):
    jax.block_until_ready(fn())
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


print(f"load before: {os.getloadavg()[0]:.2f}")
for name in ("ablation_cam", "grad_cam"):
    method = jaxcam.registry.get(name)
    direct = best(lambda: method(model, x, targets=1))
    via = best(lambda: jaxcam.explain(method, model, x, batch_size=args.batch, targets=1, logits=False).maps)
    print(f"{name} resnet18 {args.size}px batch {args.batch}: direct {direct * 1e3:.1f} ms, "
          f"explain {via * 1e3:.1f} ms, ratio explain/direct {via / direct:.2f}")
print(f"load after: {os.getloadavg()[0]:.2f}")
