"""Cost of the full on-device augmentation pipeline against one CIFAR ResNet-20 train step (32 px, batch 64).

    python benchmarks/augment_cost.py      # prints both times and the ratio (target: under 10%)

Check `uptime` first: the figure counts only on a quiet machine.
"""
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxcam
from jaxcam.data import augmentations as A
from jaxcam import train


def main():
    model = jaxcam.models.resnet20(num_classes=10)
    tx = train.make_optimizer("sgd", train.make_schedule("constant", 0.01, 10))
    step = train.make_train_step(model, tx, 32)
    state = train.replicate(train.init_state(model, tx))
    images, labels = train.shard_batch(np.zeros((64, 32, 32, 3), np.uint8), np.zeros(64, np.int32))
    spec = {"random_crop": {}, "horizontal_flip": {}, "shift_scale_rotate": {}, "coarse_dropout": {},
            "color_jitter": {}}
    aug = jax.jit(lambda k, x: A.pipeline(spec)(k, x.astype(jnp.float32) / 255.0) * 255.0)

    def timed(fn, n=5):
        jax.block_until_ready(fn(0))
        t = time.perf_counter()
        for i in range(n):
            jax.block_until_ready(fn(i))
        return (time.perf_counter() - t) / n

    box = {"state": state}

    def do_step(i):
        box["state"], m = step(box["state"], images, labels)
        return m

    load = os.getloadavg()[0]
    t_aug = timed(lambda i: aug(jax.random.key(i), images))
    t_step = timed(do_step)
    print(f"augment {t_aug * 1e3:.1f} ms vs train step {t_step * 1e3:.1f} ms per 64 images: "
          f"{100 * t_aug / t_step:.1f}% (load {load:.2f} before, {os.getloadavg()[0]:.2f} after)")


if __name__ == "__main__":
    main()
