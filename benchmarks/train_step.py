"""Train-step throughput (images/s): jaxcam.train's jitted step vs torch NCHW and channels_last, ONE process.

A step is forward + backward + SGD update (Nesterov momentum, weight decay) on a uint8 batch: the
JAX step converts/normalizes inside its jit, the torch loop in torch. Same architecture on both
sides (random weights, 10 classes). Rows (default: all three):

    resnet20            CIFAR ResNet-20, 32 px, batch 128   (torch: akamaster layout, written here)
    resnet18            ResNet-18, 128 px, batch 32         (torch: torchvision.models.resnet18)
    efficientnet_lite0  EfficientNet-Lite0, 128 px, batch 32 (torch: efficientnet_lite_pytorch)

    python benchmarks/train_step.py                      # the three rows
    python benchmarks/train_step.py --model resnet18 --image-size 64 --batch-size 16
    python benchmarks/train_step.py --plain              # jaxcam's plain-lax path (jaxcam.nn.plain())
    python benchmarks/train_step.py --xla                # also jaxcam without its native oneDNN convolutions
    python benchmarks/train_step.py --json

jaxcam's step runs its convolutions through oneDNN (`jaxcam._native`) when the native extension
loads (the JSON row says "native"); `--xla` adds a fourth side without it, same process.

The three sides alternate (jax, torch NCHW, torch channels_last, repeated `--rounds` times) and the
best round of each is kept, so a burst of other load hits all sides alike. The 1-minute load
average before and after is printed: figures taken at load >= 1.5 are provisional.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

from rows import emit

ROWS = {  # model -> (image size, batch size)
    "resnet20": (32, 128),
    "resnet18": (128, 32),
    "efficientnet_lite0": (128, 32),
}


def torch_cifar_resnet(depth: int, num_classes: int = 10):
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
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


def torch_model(name: str, image_size: int):
    import torch

    torch.manual_seed(0)
    if name.startswith("resnet") and name[6:].isdigit() and int(name[6:]) in (20, 32, 44, 56, 110):
        return torch_cifar_resnet(int(name[6:]))
    if name == "efficientnet_lite0":
        from efficientnet_lite_pytorch import EfficientNet
        return EfficientNet.from_name("efficientnet-lite0", image_size=image_size, num_classes=10)
    import torchvision
    return getattr(torchvision.models, name)(num_classes=10)


def torch_stepper(name: str, image_size: int, images, labels, channels_last: bool):
    import torch

    model = torch_model(name, image_size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    images, labels = torch.from_numpy(images), torch.from_numpy(labels).long()

    def step():
        x = images.permute(0, 3, 1, 2).float() / 255
        if x.shape[-1] != image_size:
            x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear")
        x = (x - mean) / std
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def jax_stepper(name: str, image_size: int, images, labels, plain: bool, native: bool = True):
    import jax
    import optax

    import jaxcam
    from jaxcam import nn as jnn
    from jaxcam import train

    model = getattr(jaxcam.models, name)(num_classes=10)
    tx = train.make_optimizer("sgd", optax.constant_schedule(0.05))
    with (jnn.plain() if plain else contextlib.nullcontext()), jnn.native(native):
        step = train.make_train_step(model, tx, image_size)
        state = train.replicate(train.init_state(model, tx))
        batch = train.shard_batch(images, labels)
        compiled = step.lower(state, *batch).compile()
    box = [state]

    def run():
        box[0], metrics = compiled(box[0], *batch)
        jax.block_until_ready(metrics)

    return run


def images_per_second(step, batch: int, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def measure_row(name: str, image_size: int, batch: int, steps: int, rounds: int, plain: bool,
                xla: bool = False) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, batch).astype(np.int32)
    sides = {
        "jaxcam": jax_stepper(name, image_size, images, labels, plain),
        "torch_nchw": torch_stepper(name, image_size, images, labels, False),
        "torch_channels_last": torch_stepper(name, image_size, images, labels, True),
    }
    if xla:  # jaxcam without its native convolutions, same process
        sides["jaxcam_xla"] = jax_stepper(name, image_size, images, labels, plain, native=False)
    for step in sides.values():  # warm-up (compiled already; first-touch allocations)
        step()
    best = {k: 0.0 for k in sides}
    for _ in range(rounds):
        for k, step in sides.items():
            best[k] = max(best[k], images_per_second(step, batch, steps))
    from jaxcam import _native
    return {"model": name, "image_size": image_size, "batch_size": batch, "plain": plain,
            "native": bool(_native.available() and not plain),
            **{f"{k}_img_s": round(v, 2) for k, v in best.items()},
            "ratio_vs_nchw": round(best["jaxcam"] / best["torch_nchw"], 3),
            "ratio_vs_channels_last": round(best["jaxcam"] / best["torch_channels_last"], 3)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help=f"one model (default: the rows {', '.join(ROWS)})")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (default: ~3 s of work)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each side is kept")
    p.add_argument("--plain", action="store_true", help="jaxcam's plain lax path (jaxcam.nn.plain())")
    p.add_argument("--xla", action="store_true", help="also time jaxcam without its native oneDNN convolutions")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--json", action="store_true", help="print one JSON object per row")
    p.add_argument("--malloc", choices=("reuse", "default"), default="reuse",
                   help="reuse: jaxcam.train.reuse_host_memory() first, as jaxcam's training commands do "
                        "(glibc keeps freed blocks; both sides run under it); default: glibc's own settings")
    args = p.parse_args()
    if args.malloc == "reuse":
        from jaxcam.train import reuse_host_memory
        if not reuse_host_memory():
            print("note: reuse_host_memory() did not apply (not glibc, or JAXCAM_REUSE_MEMORY=0)", file=sys.stderr)

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [args.model] if args.model else list(ROWS)
    load_before = os.getloadavg()[0]
    results = []
    if not args.json:
        print(f"train step img/s, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
              f"best of {args.rounds} alternating rounds, malloc {args.malloc}; load {load_before:.2f} at start\n")
        print("| model | px | batch | jaxcam | torch NCHW | torch channels_last | vs NCHW | vs channels_last |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        size, batch = ROWS.get(name, (128, 32))
        size, batch = args.image_size or size, args.batch_size or batch
        steps = args.steps or max(2, int(round(3 * {"resnet20": 300, "resnet18": 40, "efficientnet_lite0": 30}.get(name, 20) / batch)))
        row = measure_row(name, size, batch, steps, args.rounds, args.plain, args.xla)
        row["malloc"] = args.malloc
        results.append(emit(row, load_before, args.json, lambda r: (
            f"| {name}{' (plain)' if args.plain else ''} | {size} | {batch} | {r['jaxcam_img_s']:.1f} | "
            f"{r['torch_nchw_img_s']:.1f} | {r['torch_channels_last_img_s']:.1f} | "
            f"{r['ratio_vs_nchw']:.2f} | {r['ratio_vs_channels_last']:.2f} |"
            + (f" jaxcam without native convs: {r['jaxcam_xla_img_s']:.1f}" if args.xla else ""))))
        load_before = os.getloadavg()[0]
    if not args.json:
        load = os.getloadavg()[0]
        print(f"\nload {load:.2f} at end" + ("" if load < 1.5 else " -- PROVISIONAL (load >= 1.5)"))
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
