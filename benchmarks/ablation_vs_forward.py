"""Ablation-CAM cost in jaxcam forwards, and its masking overhead at a deep-head layer.

    python benchmarks/ablation_vs_forward.py                  # ResNet-18/50, 224 px, batch 1 and 8
    python benchmarks/ablation_vs_forward.py --archs resnet18 --batches 1 --json

Rows, per architecture and batch (same process, both sides compiled first, median of repeats):
- layer4: `jaxcam.ablation_cam` (public call) / one jitted jaxcam forward (`jaxcam._src.compile.jit`, the
  CPU options jaxcam compiles its methods with; a bare `jax.jit` forward runs ~2x slower here). Target <= 1.5.
- layer3: `jaxcam.ablation_cam(layer="layer3")` / the same work with plain copies: the features
  once, then the head run on as many unmasked activation copies as there are channels, chunked as
  Ablation-CAM chunks them, compiled with the same jaxcam CPU options. Target <= 1.2 (the masking
  and chunking overhead).
The plain copies are A + o_k with the offsets o_k zeros passed AT RUN TIME: with zeros built inside
the jit (as this script did before), XLA folds A + 0 to A, finds the head loop-invariant and hoists it
out of `lax.map`'s while loop, so the "baseline" ran 2 chunks of heads instead of 25 (ResNet-50
layer3, batch 8) and the ratio read 6.4 where the work is the same. `check_head_in_loop` asserts
on the compiled HLO that the baseline's loop still runs the head.
The 1-minute load average is printed with each row; rows at load >= 1.5 are provisional.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxcam
from jaxcam._src import compile as compile_lib
from jaxcam._src.split import Split, parse_layer
from jaxcam.methods.ablation import auto_chunk_size
from rows import emit


def plain_copies(model, layer, x):
    """Jitted run(x, offsets): features once, then the head on A + o_k for each offset (chunked like
    Ablation-CAM). Call it with zeros (C,) made outside the jit, see the module doc."""
    split = Split(model, parse_layer(layer))

    def run(x, offsets):
        a = split.features(x)
        classes = jnp.argmax(split.head(x, a), -1)
        chunk = auto_chunk_size(offsets.shape[0], a.shape)
        return jax.lax.map(lambda o: split.head(x, a + o, classes), offsets, batch_size=min(chunk, offsets.shape[0]))

    return compile_lib.jit(run)


def check_head_in_loop(fn, *args):
    """Raise if no while-loop body of fn's optimized HLO holds a convolution (the head was hoisted)."""
    text = fn.lower(*args).compile().as_text()
    bodies = set(re.findall(r"body=%?([\w.\-]+)", text))
    blocks = {m.group(1): m.group(2) for m in re.finditer(r"^%?([\w.\-]+) \(.*?\n(.*?)^}", text, re.M | re.S)}
    if bodies and not any("convolution(" in blocks.get(b, "") for b in bodies):  # no loop: one chunk
        raise RuntimeError("the plain-copies baseline's head was hoisted out of its loop: the comparison is unfair")


def interleaved(fns, repeats, warmups=1):
    """Median seconds of each fn, timed in turns (A B A B ...) so load drifts hit both alike."""
    for fn in fns:
        for _ in range(warmups):  # the first compiles
            jax.block_until_ready(fn())
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            t.append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default="resnet18,resnet50")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=9, help="timed calls of the layer4 rows, in turns (layer3 rows: a fifth, >= 1)")
    p.add_argument("--rows", default="layer4,layer3", help="which rows: layer4, layer3 or both")
    p.add_argument("--json", action="store_true")
    p.add_argument("--malloc", choices=("reuse", "default"), default="reuse",
                   help="reuse: jaxcam.train.reuse_host_memory() first, as jaxcam's commands do; default: glibc's own")
    args = p.parse_args()
    if args.malloc == "reuse":
        from jaxcam.train import reuse_host_memory
        reuse_host_memory()
    rows_wanted = set(args.rows.split(","))
    rows = []
    if not args.json:
        print("| model | batch | forward ms | ablation_cam layer4 ms | x fwd (<= 1.5) | layer3 ablation ms | "
              "layer3 plain copies ms | masked / plain (<= 1.2) | load |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    nan = float("nan")
    for arch in args.archs.split(","):
        model = getattr(jaxcam.models, arch)()
        forward = compile_lib.jit(lambda m, x: m(x))  # one jaxcam forward: the same CPU options as its methods
        for batch in (int(b) for b in args.batches.split(",")):
            load = os.getloadavg()[0]
            x = jax.random.normal(jax.random.key(0), (batch, args.size, args.size, 3))
            t_fwd = t_l4 = t_l3 = t_plain = nan
            if "layer4" in rows_wanted:
                t_fwd, t_l4 = interleaved([lambda: forward(model, x), lambda: jaxcam.ablation_cam(model, x, layer="layer4")],
                                          args.repeats, warmups=2)
            if "layer3" in rows_wanted:
                split = Split(model, parse_layer("layer3"))
                offsets = jnp.zeros((jax.eval_shape(split.features, x).shape[-1],), jnp.float32)  # made outside the jit
                copies = plain_copies(model, "layer3", x)
                check_head_in_loop(copies, x, offsets)
                t_plain, t_l3 = interleaved([lambda: copies(x, offsets), lambda: jaxcam.ablation_cam(model, x, layer="layer3")],
                                            max(1, args.repeats // 5))
            row = {"model": arch, "batch": batch, "size": args.size, "forward_ms": round(t_fwd * 1e3, 2),
                   "ablation_layer4_ms": round(t_l4 * 1e3, 2), "layer4_x_forward": round(t_l4 / t_fwd, 3),
                   "ablation_layer3_ms": round(t_l3 * 1e3, 2), "layer3_plain_copies_ms": round(t_plain * 1e3, 2),
                   "layer3_masked_over_plain": round(t_l3 / t_plain, 3), "malloc": args.malloc}
            rows.append(emit(row, load, args.json, lambda r: (
                f"| {arch} | {batch} | {r['forward_ms']:.1f} | {r['ablation_layer4_ms']:.1f} | "
                f"{r['layer4_x_forward']:.2f} | {r['ablation_layer3_ms']:.0f} | {r['layer3_plain_copies_ms']:.0f} | "
                f"{r['layer3_masked_over_plain']:.2f} | {r['load_start']:.1f}-{r['load_end']:.1f}"
                + (" provisional" if r["provisional"] else "") + " |")))
    return rows


if __name__ == "__main__":
    main()
