"""One ResNet-50 224-px Ablation-CAM (all 2048 layer4 channels) vs one forward pass, jaxcam only.

    python benchmarks/ablation_vs_forward.py [--batch 1] [--repeats 7]

Prints the median wall time of each (after compiling), their ratio, and XLA's FLOP ratio.
"""
import argparse
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
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    model = jaxcam.models.resnet50()
    x = jax.random.normal(jax.random.key(0), (args.batch, 224, 224, 3))
    forward = jax.jit(lambda m, x: m(x))
    t_fwd = median_seconds(lambda: forward(model, x), args.repeats)
    t_abl = median_seconds(lambda: jaxcam.ablation_cam(model, x, layer="layer4"), args.repeats)
    flops = lambda f: jax.jit(f).lower(model, x).compile().cost_analysis()["flops"]  # noqa: E731
    ratio = flops(lambda m, x: jaxcam.ablation_cam(m, x, layer="layer4", chunk_size=2048)) / flops(lambda m, x: m(x))
    print(f"ResNet-50, batch {args.batch}, 224 px: forward {t_fwd * 1e3:.1f} ms, ablation_cam (2048 channels) "
          f"{t_abl * 1e3:.1f} ms, ratio {t_abl / t_fwd:.2f}x; XLA FLOP ratio {ratio:.2f}x")


if __name__ == "__main__":
    main()
