"""Which XLA_FLAGS make conv nets fastest on this CPU? Times one configuration per process.

    python benchmarks/xla_flags.py --all            # every configuration, each in a fresh process
    python benchmarks/xla_flags.py --flags "..."    # one configuration (used by --all)

Times (median of repeats, warm-up excluded) a jitted ResNet forward, a forward+backward
(gradient of the summed logits w.r.t. the input and all parameters), jaxcam.grad_cam and
jaxcam.ablation_cam (layer4) at batch 1 and 8, and torch's forward / forward+backward on the same
thread count for comparison.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CONFIGS = {
    "xla default": "",
    "ynn off (jaxcam default)": "--xla_cpu_experimental_ynn_fusion_type=",
    "ynn off, fusion emitters off": "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_fusion_emitters=false",
    "ynn off, xnnpack off": "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_xnnpack=false",
    "ynn off, onednn": "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_onednn=true",
    "ynn off, fast math": "--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_enable_fast_math=true",
}


def median_time(fn, repeats):
    fn()  # warm-up (compile)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def run_jax(arch, size, batches, repeats):
    os.environ["JAXCAM_KEEP_XLA_FLAGS"] = "1"
    import jax
    import jax.numpy as jnp
    import jaxcam

    model = getattr(jaxcam.models, arch)()
    out = {}
    for b in batches:
        x = jax.random.normal(jax.random.key(0), (b, size, size, 3))
        fwd = jax.jit(lambda v, x: model.module.apply(v, x))
        grad = jax.jit(jax.grad(lambda v, x: model.module.apply(v, x).sum(), argnums=(0, 1)))
        out[f"fwd b{b}"] = median_time(lambda: fwd(model.variables, x).block_until_ready(), repeats)
        out[f"fwd+bwd b{b}"] = median_time(lambda: jax.block_until_ready(grad(model.variables, x)), repeats)
        t = jnp.zeros((b,), jnp.int32)
        for name in ("grad_cam", "ablation_cam"):
            cam = getattr(jaxcam, name)  # the public call, with jaxcam's own per-method compiler options
            out[f"{name} b{b}"] = median_time(lambda: cam(model, x, layer="layer4", targets=t).block_until_ready(), repeats)
    return out


def run_torch(arch, size, batches, repeats, threads):
    import torch
    import torchvision

    torch.set_num_threads(threads)
    model = getattr(torchvision.models, arch)().eval()
    out = {}
    for b in batches:
        x = torch.randn(b, 3, size, size)
        with torch.no_grad():
            out[f"fwd b{b}"] = median_time(lambda: model(x), repeats)

        def fb():
            model.zero_grad()
            xr = x.clone().requires_grad_(True)
            model(xr).sum().backward()

        out[f"fwd+bwd b{b}"] = median_time(fb, repeats)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--flags", help="run jax with these XLA_FLAGS in this process and print JSON")
    p.add_argument("--torch", action="store_true", help="run torch in this process and print JSON")
    p.add_argument("--all", action="store_true", help="every configuration, each in its own process")
    a = p.parse_args()
    batches = [int(b) for b in a.batches.split(",")]
    if a.torch:
        print(json.dumps(run_torch(a.arch, a.size, batches, a.repeats, a.threads)))
        return
    if a.flags is not None:
        print(json.dumps(run_jax(a.arch, a.size, batches, a.repeats)))
        return
    common = [sys.executable, __file__, "--arch", a.arch, "--size", str(a.size), "--batches", a.batches,
              "--repeats", str(a.repeats)]
    rows = {}
    for name, flags in list(CONFIGS.items()) + [("torch", None)]:
        env = dict(os.environ)
        if flags is None:
            cmd = common + ["--torch", "--threads", str(a.threads)]
        else:
            env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=1".strip()
            cmd = common + [f"--flags={flags}"]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode:
            print(f"{name}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
            continue
        rows[name] = json.loads(res.stdout.strip().splitlines()[-1])
        print(name, {k: round(v * 1000, 1) for k, v in rows[name].items()}, flush=True)
    keys = list(next(iter(rows.values())).keys())
    print(f"\n{a.arch} {a.size}px, {a.threads} threads, median of {a.repeats}, ms")
    print("| configuration | " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[k] * 1000:.1f}" if k in r else "-" for k in keys) + " |")


if __name__ == "__main__":
    main()
