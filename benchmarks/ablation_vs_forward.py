"""Ablation-CAM cost in jaxcam forwards, and its masking overhead at a deep-head layer.

    python benchmarks/ablation_vs_forward.py                  # ResNet-18/50, 224 px, batch 1 and 8
    python benchmarks/ablation_vs_forward.py --archs resnet18 --batches 1 --json

Rows, per architecture and batch (same process, both sides compiled first, median of repeats):
- layer4: `jaxcam.ablation_cam` (public call) / one jitted forward. Target <= 1.5.
- layer3: `jaxcam.ablation_cam(layer="layer3")` / the same work with plain copies: the features
  once, then the head run on as many unmasked activation copies as there are channels, chunked as
  Ablation-CAM chunks them. Target <= 1.2 (the masking and chunking overhead).
The 1-minute load average is printed with each row; rows at load >= 1.5 are provisional.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxcam
from jaxcam._src.split import Split, parse_layer
from jaxcam.methods.ablation import auto_chunk_size


def median_seconds(fn, repeats):
    jax.block_until_ready(fn())  # compile + warm up
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def plain_copies(model, layer, x):
    """Jitted: features once, then the head on C unmasked copies (chunked like Ablation-CAM)."""
    split = Split(model, parse_layer(layer))

    def run(x):
        a = split.features(x)
        classes = jnp.argmax(split.head(x, a), -1)
        channels = a.shape[-1]
        chunk = auto_chunk_size(channels, a.shape)
        offsets = jnp.zeros((channels,), a.dtype)  # a + 0: a per-copy input XLA cannot hoist out of the loop
        return jax.lax.map(lambda o: split.head(x, a + o, classes), offsets, batch_size=min(chunk, channels))

    return jax.jit(run)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default="resnet18,resnet50")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    rows = []
    if not args.json:
        print("| model | batch | forward ms | ablation_cam layer4 ms | x fwd (<= 1.5) | layer3 ablation ms | "
              "layer3 plain copies ms | masked / plain (<= 1.2) | load |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for arch in args.archs.split(","):
        model = getattr(jaxcam.models, arch)()
        forward = jax.jit(lambda m, x: m(x))
        for batch in (int(b) for b in args.batches.split(",")):
            load = os.getloadavg()[0]
            x = jax.random.normal(jax.random.key(0), (batch, args.size, args.size, 3))
            t_fwd = median_seconds(lambda: forward(model, x), args.repeats)
            t_l4 = median_seconds(lambda: jaxcam.ablation_cam(model, x, layer="layer4"), args.repeats)
            copies = plain_copies(model, "layer3", x)
            t_plain = median_seconds(lambda: copies(x), max(1, args.repeats // 2))
            t_l3 = median_seconds(lambda: jaxcam.ablation_cam(model, x, layer="layer3"), max(1, args.repeats // 2))
            row = {"model": arch, "batch": batch, "size": args.size, "forward_ms": round(t_fwd * 1e3, 2),
                   "ablation_layer4_ms": round(t_l4 * 1e3, 2), "layer4_x_forward": round(t_l4 / t_fwd, 3),
                   "ablation_layer3_ms": round(t_l3 * 1e3, 2), "layer3_plain_copies_ms": round(t_plain * 1e3, 2),
                   "layer3_masked_over_plain": round(t_l3 / t_plain, 3),
                   "load_start": round(load, 2), "load_end": round(os.getloadavg()[0], 2)}
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"| {arch} | {batch} | {row['forward_ms']:.1f} | {row['ablation_layer4_ms']:.1f} | "
                      f"{row['layer4_x_forward']:.2f} | {row['ablation_layer3_ms']:.0f} | {row['layer3_plain_copies_ms']:.0f} | "
                      f"{row['layer3_masked_over_plain']:.2f} | {row['load_start']:.1f}-{row['load_end']:.1f}"
                      + ("" if max(row['load_start'], row['load_end']) < 1.5 else " provisional") + " |", flush=True)
    return rows


if __name__ == "__main__":
    main()
