"""bfloat16 against float32, jaxcam against torch, ONE process (issue 25): ResNet-18 forward and train step.

    python benchmarks/bf16.py                    # both rows, best of 3
    python benchmarks/bf16.py --rows forward --rounds 5
    python benchmarks/bf16.py --xla-bf16         # also jaxcam bf16 with XLA's convolutions (the old path)
    python benchmarks/bf16.py --rows train --train-model efficientnet_lite0 --xla-bn

Rows:
- forward: ResNet-18 (random weights, 1000 classes, eval mode) at 224 px, batch 8, logits of a batch.
  jaxcam: parameters and input cast to the dtype, jitted `module.apply`; torch: channels_last under
  no_grad, bfloat16 through `torch.autocast("cpu", dtype=torch.bfloat16)`.
- train: the train step at 128 px, batch 32 (10 classes, SGD with momentum): jaxcam's
  `jaxcam.train.make_train_step(compute_dtype=...)`, torch's loop of benchmarks/train_step.py
  (channels_last; autocast bf16 around the forward and loss).

Sides: jaxcam f32, jaxcam bf16, torch f32 channels_last, torch autocast bf16 channels_last; each side
about one second of calls per round, the rounds alternate and the best round is kept. Ratios: each
side's throughput over torch f32's, and jaxcam bf16 over torch bf16. `uptime` is printed before and
after: figures taken with a 1-minute load at or above 1.5 are not publishable.

Grad-CAM: the map of ResNet-18 (layer4, random weights) on a shipped photo with the parameters and
image in bfloat16 against float32, max-abs difference. jaxcam's methods upcast half-precision inputs
and parameters to float32 inside their jit (jaxcam._src.dtypes.upcast_half), so this difference comes
from bfloat16 storage only, not from bfloat16 arithmetic. Explaining with the layers computing in bfloat16
(`model.with_compute_dtype("bfloat16")`) is measured by benchmarks/bf16_maps.py and
`benchmarks/vs_pytorch_grad_cam.py --bf16`.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load %.2f %.2f %.2f" % os.getloadavg()


from shape_sweep import best_time  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def jax_forward(px, batch, dtype, native_bf16=True):
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxcam
    from jaxcam._src.compile import jit

    model = jaxcam.models.resnet18(num_classes=1000)
    variables = jax.tree_util.tree_map(lambda v: v.astype(dtype), model.variables)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, px, px, 3), np.float32), dtype)
    with jaxcam.nn.native(True if native_bf16 or dtype == jnp.float32 else False):
        lowered = jit(lambda v, x: model.module.apply(v, x)).lower(variables, x)
    text = lowered.as_text()
    fwd = lowered.compile()
    return (lambda: fwd(variables, x).block_until_ready()), ("jaxcam_conv_fwd" in text)


def torch_forward(px, batch, bf16):
    import contextlib

    import numpy as np
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=1000).eval().to(memory_format=torch.channels_last)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, 3, px, px), np.float32))
    x = x.contiguous(memory_format=torch.channels_last)
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def forward():
        with torch.no_grad(), cast:
            model(x)

    return forward


# ------------------------------------------------------------------ train step


def _batch(px, batch):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (batch, px, px, 3), dtype=np.uint8), rng.integers(0, 10, batch).astype(np.int32)


def jax_train(px, batch, dtype, native_bf16=True, model_name="resnet18", bn_onednn=None):
    import jax
    import jax.numpy as jnp
    import optax

    import jaxcam
    from jaxcam import train

    images, labels = _batch(px, batch)
    model = getattr(jaxcam.models, model_name)(num_classes=10)
    tx = train.make_optimizer("sgd", optax.constant_schedule(0.05))
    from jaxcam.nn import ops

    default = ops.BF16_BATCH_NORM_ON_ONEDNN
    ops.BF16_BATCH_NORM_ON_ONEDNN = default if bn_onednn is None else bn_onednn  # read while tracing: this side only
    try:
        with jaxcam.nn.native(True if native_bf16 or dtype == jnp.float32 else False):
            step = train.make_train_step(model, tx, px, compute_dtype=dtype)
            state = train.replicate(train.init_state(model, tx))
            args = train.shard_batch(images, labels)
            lowered = step.lower(state, *args)
    finally:
        ops.BF16_BATCH_NORM_ON_ONEDNN = default
    text = lowered.as_text()
    compiled = lowered.compile()
    box = [state]

    def run():
        box[0], metrics = compiled(box[0], *args)
        jax.block_until_ready(metrics)

    return run, ("jaxcam_conv_bwd_weights" in text)


def torch_train(px, batch, bf16, model_name="resnet18"):
    import contextlib

    import torch

    from train_step import torch_model

    images, labels = _batch(px, batch)
    model = torch_model(model_name, px).to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    images, labels = torch.from_numpy(images), torch.from_numpy(labels).long()
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def step():
        x = ((images.permute(0, 3, 1, 2).float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)
        with cast():
            loss = torch.nn.functional.cross_entropy(model(x).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


# ------------------------------------------------------------------ Grad-CAM in bf16 storage


def grad_cam_difference(photo: str, px: int = 224):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from PIL import Image

    import jaxcam

    model = jaxcam.models.resnet18()
    img = Image.open(photo).convert("RGB").resize((px, px))
    x = (np.asarray(img, np.float32) / 255 - np.asarray(model.info.mean)) / np.asarray(model.info.std)
    x = jnp.asarray(x[None], jnp.float32)
    f32 = jaxcam.grad_cam(model, x, layer="layer4")
    half = model.with_variables(jax.tree_util.tree_map(lambda v: v.astype(jnp.bfloat16), model.variables))
    b16 = jaxcam.grad_cam(half, x.astype(jnp.bfloat16), layer="layer4")
    a, b = np.asarray(f32, np.float64), np.asarray(b16, np.float64)
    peak = lambda m: np.unravel_index(np.argmax(m[0]), m[0].shape)
    return float(np.abs(a - b).max()), peak(a), peak(b), str(b16.dtype)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="forward,train")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--xla-bf16", action="store_true", help="also jaxcam bf16 with XLA's convolutions")
    p.add_argument("--xla-bn", action="store_true", help="train row: also jaxcam bf16 with XLA's BatchNorm "
                   "instead of oneDNN's bf16 primitive (jaxcam.nn.ops.BF16_BATCH_NORM_ON_ONEDNN = False)")
    p.add_argument("--train-model", default="resnet18", help="the train row's model (resnet18, resnet20, "
                   "efficientnet_lite0; torch side from benchmarks/train_step.py)")
    p.add_argument("--train-size", default="128x32", help="the train row's PXxBATCH")
    p.add_argument("--no-gradcam", action="store_true")
    a = p.parse_args(argv)
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:a.threads])
    import jax.numpy as jnp
    import torch

    torch.set_num_threads(a.threads)
    from jaxcam import _native
    from jaxcam._src.host_memory import reuse_host_memory

    reuse_host_memory()  # as jaxcam's commands do (both sides share the allocator settings)
    print(f"before: {uptime()}")
    print(f"torch {torch.__version__} ({a.threads} threads), native oneDNN {_native.available()}, "
          f"bf16 on oneDNN {_native.bf16_available()} (native bf16 ISA {_native.bf16_native_isa()}), "
          f"best of {a.rounds} alternating rounds")
    tpx, tbatch = (int(v) for v in a.train_size.split("x"))
    tm = a.train_model
    rows = {"forward": ("ResNet-18 forward, 224 px, batch 8", 224, 8, jax_forward, torch_forward),
            "train": (f"{tm} train step, {tpx} px, batch {tbatch}", tpx, tbatch,
                      lambda *p, **k: jax_train(*p, model_name=tm, **k),
                      lambda *p: torch_train(*p, model_name=tm))}
    for name in a.rows.split(","):
        title, px, batch, jax_side, torch_side = rows[name]
        sides = {}
        sides["jaxcam f32"], on32 = jax_side(px, batch, jnp.float32)
        sides["jaxcam bf16"], on16 = jax_side(px, batch, jnp.bfloat16)
        if a.xla_bf16:
            sides["jaxcam bf16 (XLA convs)"], _ = jax_side(px, batch, jnp.bfloat16, native_bf16=False)
        if a.xla_bn and name == "train":
            sides["jaxcam bf16 (XLA BatchNorm)"], _ = jax_side(px, batch, jnp.bfloat16, bn_onednn=False)
        sides["torch f32 CL"] = torch_side(px, batch, False)
        sides["torch bf16 CL"] = torch_side(px, batch, True)
        load0 = os.getloadavg()[0]
        t = dict(zip(sides, best_time(list(sides.values()), a.rounds)))
        load1 = os.getloadavg()[0]
        print(f"\n{title} (jaxcam f32 on oneDNN: {on32}, bf16 on oneDNN: {on16}); load {load0:.2f} -> {load1:.2f}")
        print("| side | ms | img/s | x torch f32 |")
        print("|---|---:|---:|---:|")
        for k, v in t.items():
            print(f"| {k} | {v * 1e3:.1f} | {batch / v:.1f} | {t['torch f32 CL'] / v:.2f} |")
        print(f"jaxcam bf16 / torch bf16 (throughput): {t['torch bf16 CL'] / t['jaxcam bf16']:.2f}; "
              f"jaxcam bf16 / jaxcam f32: {t['jaxcam f32'] / t['jaxcam bf16']:.2f}; "
              f"torch bf16 / torch f32: {t['torch f32 CL'] / t['torch bf16 CL']:.2f}")
    if not a.no_gradcam:
        import jaxcam

        photo = os.path.join(os.path.dirname(jaxcam.__file__), "data", "photos", "chelsea.jpg")
        diff, p32, p16, dt = grad_cam_difference(photo)
        print(f"\nGrad-CAM (ResNet-18 layer4, chelsea.jpg, 224 px): bf16-stored params+image vs f32, max-abs "
              f"{diff:.2e} (maps in [0, 1], computed in {dt}); peak f32 {p32}, bf16 {p16}")
    print(f"\nafter: {uptime()}")


if __name__ == "__main__":
    main()
