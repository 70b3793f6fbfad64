"""Train-step throughput (images/s): jaxcam.train's jitted step vs an equivalent torch loop, same CPU.

Both train the same CIFAR ResNet (akamaster layout: 3x3 stem, option-A shortcuts) on uint8 32x32
batches with SGD (Nesterov momentum, weight decay) and cross-entropy; the JAX step also does the
uint8 -> normalized float conversion inside the jit, the torch loop does it in torch. Each JAX
variant runs in its own process because XLA_FLAGS are read once, when the backend starts.

    python benchmarks/train_step.py --model resnet20 --batch-sizes 64,128,256 --steps 20
    python benchmarks/train_step.py --only jax --xla-flags "--xla_cpu_experimental_ynn_fusion_type=..."

Prints a markdown table. The machine's other load matters: run it on a quiet machine for numbers
to compare with others'.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.abspath(__file__)

JAX_VARIANTS = {
    "jax (jaxcam default: YNN fusion off)": None,  # jaxcam._xla_flags decides
    "jax (XLA default: YNN fusion on)": "KEEP",
}


def time_jax(model_name: str, batch: int, steps: int, bf16: bool) -> float:
    import jaxcam  # noqa: F401  (XLA flags first)
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jaxcam import train

    model = getattr(jaxcam.models, model_name)(num_classes=10)
    tx = train.make_optimizer("sgd", optax.constant_schedule(0.05))
    step = train.make_train_step(model, tx, 32, compute_dtype=jnp.bfloat16 if bf16 else jnp.float32)
    state = train.replicate(train.init_state(model, tx))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, batch).astype(np.int32)
    state, m = step(state, *train.shard_batch(images, labels))
    jax.block_until_ready(m)
    start = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, *train.shard_batch(images, labels))
    jax.block_until_ready((state, m))
    return steps * batch / (time.perf_counter() - start)


def torch_cifar_resnet(depth: int):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.pad = (cout // 4) if (stride != 1 or cin != cout) else 0

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            short = x
            if self.pad:
                short = nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
            return torch.relu(out + short)

    n = (depth - 2) // 6
    layers, cin = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
    for i, planes in enumerate((16, 32, 64)):
        for j in range(n):
            layers.append(Block(cin, planes, 2 if (i > 0 and j == 0) else 1))
            cin = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def time_torch(model_name: str, batch: int, steps: int, channels_last: bool) -> float:
    import numpy as np
    import torch

    torch.manual_seed(0)
    model = torch_cifar_resnet(int(model_name.replace("resnet", "")))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, 10, batch))

    def step():
        x = (images.permute(0, 3, 1, 2).float() / 255 - mean) / std
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def hlo_summary(model_name: str, batch: int) -> None:
    """Print the convolutions XLA:CPU runs in the compiled JAX train step, grouped by window/dilation.

    The weight gradients show up as convolutions whose window is the whole activation map (e.g.
    32x32) contracting over the batch, each fed by a transpose copy of the activations.
    """
    import collections
    import re

    import jaxcam  # noqa: F401
    import numpy as np
    import optax

    from jaxcam import train

    model = getattr(jaxcam.models, model_name)(num_classes=10)
    tx = train.make_optimizer("sgd", optax.constant_schedule(0.05))
    step = train.make_train_step(model, tx, 32)
    state = train.replicate(train.init_state(model, tx))
    images, labels = np.zeros((batch, 32, 32, 3), np.uint8), np.zeros(batch, np.int32)
    compiled = step.lower(state, *train.shard_batch(images, labels)).compile()
    text = compiled.as_text()
    windows = collections.Counter(re.search(r"window=\{([^}]*)\}", line).group(1)
                                  for line in text.splitlines() if " convolution(" in line)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    print(f"{model_name}, batch {batch}: {sum(windows.values())} convolutions, "
          f"{len(re.findall(r'transpose_copy_fusion[.0-9]* = ', text))} transpose copies, "
          f"{cost.get('flops', 0) / 1e9:.1f} GFLOP per step")
    for window, count in windows.most_common():
        print(f"  {count:3d} x window {{{window}}}")


def child(args) -> None:
    """Run one measurement in this process and print it as JSON."""
    if args.framework == "jax":
        ips = time_jax(args.model, args.batch, args.steps, args.bf16)
    else:
        ips = time_torch(args.model, args.batch, args.steps, args.channels_last)
    print(json.dumps({"images_per_second": ips}))


def measure(extra: list, env: dict) -> float:
    out = subprocess.run([sys.executable, HERE, "--child", *extra], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["images_per_second"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20", help="CIFAR ResNet: resnet20, resnet32, resnet44, resnet56")
    p.add_argument("--batch-sizes", default="128")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--only", choices=("jax", "torch"), default=None)
    p.add_argument("--xla-flags", default=None, help="measure one extra JAX variant with these XLA_FLAGS")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--framework", choices=("jax", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--bf16", action="store_true", help="also measure JAX with bfloat16 compute")
    p.add_argument("--channels-last", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--hlo", action="store_true", help="only summarize the convolutions of the compiled JAX step")
    args = p.parse_args()
    if args.child:
        return child(args)
    if args.hlo:
        return hlo_summary(args.model, int(args.batch_sizes.split(",")[0]))

    variants = []  # (label, child args, env overrides)
    if args.only in (None, "jax"):
        for label, flags in JAX_VARIANTS.items():
            env = {"JAXCAM_KEEP_XLA_FLAGS": "1"} if flags == "KEEP" else {}
            variants.append((label, ["--framework", "jax"], env))
        if args.bf16:
            variants.append(("jax bfloat16 (YNN off)", ["--framework", "jax", "--bf16"], {}))
        if args.xla_flags:
            variants.append((f"jax XLA_FLAGS={args.xla_flags}", ["--framework", "jax"],
                             {"XLA_FLAGS": args.xla_flags, "JAXCAM_KEEP_XLA_FLAGS": "1"}))
    if args.only in (None, "torch"):
        variants.append((f"torch {__import__('torch').__version__} (NCHW)", ["--framework", "torch"], {}))
        variants.append(("torch (channels_last)", ["--framework", "torch", "--channels-last"], {}))

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    print(f"train step, {args.model}, 32x32, images/s ({args.steps} steps after a warm-up step), "
          f"{os.cpu_count()} CPUs\n")
    print("| variant | " + " | ".join(f"batch {b}" for b in batch_sizes) + " |")
    print("|---|" + "---|" * len(batch_sizes))
    for label, extra, env_extra in variants:
        env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXCAM_KEEP_XLA_FLAGS")}
        env.update(env_extra)
        row = [measure([*extra, "--model", args.model, "--batch", str(b), "--steps", str(args.steps)], env)
               for b in batch_sizes]
        print(f"| {label} | " + " | ".join(f"{v:.0f}" for v in row) + " |", flush=True)


if __name__ == "__main__":
    main()
