"""Many targets per call: Ablation-CAM (and Grad-CAM) with T targets per image vs one target.

    python benchmarks/multi_target.py [--model resnet18] [--size 224] [--targets 10] [--repeats 5]

With targets of shape (N, T) the ablated head passes do not depend on the class, so they run once
for all T targets; only the class gather is per target. Prints the median wall time of T = 1 and
T = `--targets` (same process, after compiling) and their ratio, and the load before and after.
"""
import argparse
import os
import time

import jaxcam  # first: XLA CPU flags

import jax
import numpy as np


def median_seconds(fn, repeats):
    jax.block_until_ready(fn())  # compile + warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="resnet18", choices=("resnet18", "resnet50"))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--targets", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--methods", default="ablation_cam,grad_cam")
    args = p.parse_args()
    if args.targets < 1:
        p.error("--targets must be >= 1")
    load = os.getloadavg()[0]
    model = getattr(jaxcam.models, args.model)()
    x = jax.random.normal(jax.random.key(0), (args.batch, args.size, args.size, 3))
    one = np.zeros((args.batch,), np.int32)
    many = np.tile(np.arange(args.targets, dtype=np.int32), (args.batch, 1))
    for name in args.methods.split(","):
        method = jaxcam.methods.registry.get(name)
        t1 = median_seconds(lambda: method(model, x, "layer4", one), args.repeats)
        tt = median_seconds(lambda: method(model, x, "layer4", many), args.repeats)
        print(f"{args.model} {args.size} px batch {args.batch} {method.name}: T=1 {t1 * 1e3:.1f} ms, "
              f"T={args.targets} {tt * 1e3:.1f} ms, ratio {tt / t1:.2f}x")
    print(f"load (1 min) before {load:.2f}, after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
