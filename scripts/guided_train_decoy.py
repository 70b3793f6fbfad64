"""`jaxcam train --guidance-masks` end to end on a tiny decoy image-folder tree (docs/differentiable.md).

Builds FOLDER/data (16 px, 2 classes, 160 + 80 images per class: a weak 5x5 square, brighter for class
1, and a 4x4 corner patch that is the class in train/ (white / black) and random in val/) and
FOLDER/masks (the corner + 2 px, white = avoid), then trains ResNet-20 through the command twice, with
and without guidance (HiResCAM, weight 10), and prints the val accuracy and the share of the raw
HiResCAM energy (true class) on the masked region of the val images.

    python scripts/guided_train_decoy.py /tmp/decoy      # about 4 minutes on 2 loaded cores
"""
import os, sys, time
import numpy as np
from PIL import Image
import jax.numpy as jnp
import jaxcam, jaxcam.train
from jaxcam import losses
from jaxcam.cli import train as cli

root = sys.argv[1] if len(sys.argv) > 1 else "guided_train_decoy"
S, P = 16, 4
rng = np.random.default_rng(0)
val_x, val_y = [], []
for split, n in (("train", 160), ("val", 80)):
    for c in (0, 1):
        os.makedirs(f"{root}/data/{split}/c{c}", exist_ok=True)
        os.makedirs(f"{root}/masks/{split}/c{c}", exist_ok=True)
        for i in range(n):
            img = rng.integers(40, 120, (S, S, 3)).astype(np.int32)
            y0, x0 = rng.integers(5, 10, 2)
            img[y0:y0 + 5, x0:x0 + 5] += 50 if c else -30   # weak true signal
            level = (255 if c else 0) if split == "train" else rng.choice([0, 255])
            img[:P, :P] = level                              # the decoy
            img = np.clip(img, 0, 255).astype(np.uint8)
            Image.fromarray(img).save(f"{root}/data/{split}/c{c}/{i}.png")
            m = np.zeros((S, S), np.uint8); m[:P + 2, :P + 2] = 255
            Image.fromarray(m).save(f"{root}/masks/{split}/c{c}/{i}.png")
            if split == "val":
                val_x.append(img); val_y.append(c)
val_x, val_y = np.stack(val_x), np.asarray(val_y)
region = np.zeros((S, S), np.float32); region[:P + 2, :P + 2] = 1
for name, extra in (("plain", []), ("guided", ["--guidance-masks", f"{root}/masks", "--guidance-method", "hires_cam",
                                              "--guidance-weight", "10"])):
    t = time.time()
    out = f"{root}/run_{name}"
    assert cli.main(["--data", f"{root}/data", "--model", "resnet20", "--epochs", "4", "--batch-size", "32",
                     "--optimizer", "adamw", "--lr", "3e-3", "--augment", "horizontal_flip", "--gallery", "0",
                     "--out", out, *extra]) == 0
    model = jaxcam.train.load_checkpoint(out)
    x = (val_x / 255.0 - np.asarray(model.info.mean)) / np.asarray(model.info.std)
    x = jnp.asarray(x, jnp.float32)
    acc = float((np.argmax(np.asarray(model(x)), -1) == val_y).mean())
    maps = jaxcam.hires_cam(model, x, None, jnp.asarray(val_y), normalize=False)
    share = float(losses.energy_share(maps, jnp.asarray(region)).mean())
    print(f"RESULT {name}: val acc {acc:.3f}, HiResCAM energy share on the patch region {share:.3f} ({time.time() - t:.0f} s)", flush=True)
