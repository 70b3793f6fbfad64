"""Train or fine-tune a jaxcam model on CIFAR-10, then show where it fails and where it looks.

    python scripts/finetune_cifar.py --data ../shared/data/cifar10/cifar10_jpg_tree.tar.gz \
        --model resnet20 --epochs 30 --out /tmp/cifar-run

Writes to --out: metrics.json / metrics.csv (per epoch), curves.png (loss and accuracy, train vs
test), misclassified.png (true vs predicted), cams.png (Grad-CAM of the predicted class on those
images, one row per network stage), checkpoints/{last,best} (orbax). Re-running the same command
resumes from checkpoints/last (at most the interrupted epoch is lost).
"""
from __future__ import annotations

import argparse
import csv
import itertools
import os
import re
import sys
import time

import jaxcam  # first: sets XLA CPU flags before jax starts its backend

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxcam import data as data_lib
from jaxcam import train as train_lib

DEFAULT_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10", "cifar10_jpg_tree.tar.gz")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DEFAULT_DATA if os.path.exists(DEFAULT_DATA) else None,
                   help="image-folder tree (dir or .tar.gz, train|test/<class>/*.jpg) or cifar-10-python.tar.gz; "
                        "default: ../shared copy if present, else tensorflow-datasets' prepared cifar10")
    p.add_argument("--tfds-data-dir", default=None, help="tensorflow-datasets data_dir when --data is not given")
    p.add_argument("--model", default="resnet20", help="jaxcam.models name: resnet20, resnet56, resnet18, resnet34, "
                                                       "resnet50, vgg16, densenet121, efficientnet_lite0")
    p.add_argument("--pretrained", default=None, help="weights for jaxcam.models.load (a path or a weights name); "
                                                       "the classifier gets a new 10-class head when needed")
    p.add_argument("--freeze-backbone", action="store_true", help="train only the classifier (BatchNorm frozen)")
    p.add_argument("--image-size", type=int, default=32, help="input size; images are resized on the device")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 0.1 sgd, 1e-3 adamw)")
    p.add_argument("--schedule", choices=("cosine", "onecycle", "step", "constant"), default="cosine")
    p.add_argument("--warmup-epochs", type=float, default=1.0, help="linear warmup (cosine schedule)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--crop-pad", type=int, default=4, help="random crop after zero padding by this many pixels (0: off)")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    p.add_argument("--bf16", action="store_true", help="bfloat16 forward/backward (params and updates stay float32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-limit", type=int, default=None, help="use only the first N training images (quick runs)")
    p.add_argument("--test-limit", type=int, default=None, help="evaluate on N test images (quick runs)")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="shorter epochs: this many batches of a fresh random part of the training set each")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="training-time budget: stop (evaluate, checkpoint, report) once it is used up")
    p.add_argument("--gallery", type=int, default=10, help="misclassified images in the gallery and CAM figure")
    p.add_argument("--cam-layers", default=None, help="comma-separated layers for cams.png (default: the stages)")
    p.add_argument("--out", default="runs/cifar10")
    return p.parse_args(argv)


def load_data(args):
    try:
        train = data_lib.load_cifar10(args.data, "train", args.tfds_data_dir)
        test = data_lib.load_cifar10(args.data, "test", args.tfds_data_dir)
    except data_lib.DataNotFoundError as e:
        sys.exit(f"error: {e}")
    if args.train_limit:
        train = _subset(train, args.train_limit, args.seed)
    if args.test_limit:
        test = _subset(test, args.test_limit, args.seed)
    return train, test


def _subset(ds, n, seed):
    idx = np.sort(np.random.default_rng(seed).permutation(len(ds))[:n])
    return data_lib.Dataset(ds.images[idx], ds.labels[idx], ds.class_names)


def config_of(args) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("out",)}


def main(argv=None):
    args = parse_args(argv)
    lr = args.lr if args.lr is not None else (0.1 if args.optimizer == "sgd" else 1e-3)
    os.makedirs(args.out, exist_ok=True)
    n_dev = jax.local_device_count()
    if args.batch_size % n_dev:
        sys.exit(f"error: --batch-size {args.batch_size} must be divisible by the {n_dev} local devices")

    train, test = load_data(args)
    print(f"data: {len(train)} train / {len(test)} test images {train.images.shape[1:]}, "
          f"{len(train.class_names)} classes; devices: {n_dev} x {jax.devices()[0].platform}")
    model = train_lib.build_model(args.model, len(train.class_names), train.class_names, args.seed,
                                  args.pretrained, args.image_size)
    steps_per_epoch = len(train) // args.batch_size
    if args.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, args.steps_per_epoch)
    schedule = train_lib.make_schedule(args.schedule, lr, steps_per_epoch * args.epochs,
                                       int(args.warmup_epochs * steps_per_epoch))
    head = tuple((model.info.classifier or "").split("/"))
    trainable = (lambda path: path[:len(head)] == head) if args.freeze_backbone else None
    tx = train_lib.make_optimizer(args.optimizer, schedule, args.weight_decay, trainable=trainable)
    dtype = jnp.bfloat16 if args.bf16 else jnp.float32

    checkpoints = train_lib.Checkpoints(os.path.join(args.out, "checkpoints"))
    expect = {"model": args.model, "num_classes": len(train.class_names), "image_size": args.image_size}
    state = train_lib.init_state(model, tx)
    history, start_epoch, best_acc = [], 0, -1.0
    try:
        resumed = checkpoints.restore_last(state, expect)
    except train_lib.CheckpointMismatchError as e:
        sys.exit(f"error: {e}")
    if resumed:
        state, meta = resumed
        history, start_epoch = meta["history"], meta["epoch"] + 1
        best_acc = max(h["test_acc"] for h in history)
        print(f"resumed from {checkpoints.directory}/last after epoch {start_epoch} (best test acc {best_acc:.4f})")

    mesh = train_lib.mesh()
    state = train_lib.replicate(state, mesh)
    step = train_lib.make_train_step(model, tx, args.image_size, args.label_smoothing, dtype,
                                     train_batch_norm=not args.freeze_backbone, device_mesh=mesh, seed=args.seed)
    eval_step = train_lib.make_eval_step(model, args.image_size, dtype, mesh)
    meta_base = {**expect, "class_names": list(train.class_names), "config": config_of(args)}
    trained_seconds = sum(h["seconds"] for h in history)
    logits = None  # test logits of the current state

    for epoch in range(start_epoch, args.epochs):
        if args.max_minutes is not None and trained_seconds >= 60 * args.max_minutes:
            print(f"time budget of {args.max_minutes} min used; stopping before epoch {epoch + 1}")
            break
        budget = None if args.max_minutes is None else 60 * args.max_minutes - trained_seconds
        record = run_epoch(args, epoch, state, step, train, steps_per_epoch, budget)
        state = record.pop("state")
        logits = train_lib.predict(eval_step, state.variables(), test.images, args.batch_size)
        record.update(epoch=epoch + 1, lr=float(schedule(int(state.step))), **evaluate(logits, test.labels))
        trained_seconds += record["seconds"]
        record["trained_minutes"] = trained_seconds / 60
        history.append(record)
        is_best = record["test_acc"] > best_acc
        best_acc = max(best_acc, record["test_acc"])
        checkpoints.save(epoch, state, {**meta_base, "epoch": epoch, "test_acc": record["test_acc"],
                                        "history": history}, best=is_best)
        write_metrics(args.out, history)
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f} | "
              f"test loss {record['test_loss']:.4f} acc {record['test_acc']:.4f} | "
              f"{record['images_per_second']:.0f} img/s, {record['seconds']:.0f} s")
    checkpoints.wait()

    if not history:
        sys.exit("error: no epoch was trained")
    final = model.with_variables(jax.device_get(state.variables()))
    if logits is None:  # nothing trained in this process (resumed a finished run)
        logits = train_lib.predict(eval_step, state.variables(), test.images, args.batch_size)
    report(args, final, test, logits, history)
    acc = float(np.mean(np.argmax(logits, -1) == test.labels))
    print(f"test accuracy: {acc:.4f} ({len(test)} images; best epoch {best_acc:.4f}); outputs in {args.out}")
    return acc


def run_epoch(args, epoch, state, step, train, steps_per_epoch, budget_seconds=None) -> dict:
    """One pass over the training set (or `steps_per_epoch` batches of it, or until `budget_seconds`
    of training time are used); returns the metrics and the new state."""
    batches = data_lib.batches(train, args.batch_size, shuffle=True, augment_images=True,
                               seed=args.seed * 100_003 + epoch, drop_last=True, pad=args.crop_pad,
                               flip=not args.no_flip)
    it = data_lib.prefetch(itertools.islice(batches, steps_per_epoch), size=3)
    loss_sum, correct, seen = 0.0, 0, 0
    pending = []
    bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch", leave=False)
    start = None
    for i, (images, labels) in enumerate(it):
        state, metrics = step(state, *train_lib.shard_batch(images, labels))
        pending.append(metrics)
        if i == 0:
            jax.block_until_ready(metrics)
            start = time.perf_counter()  # excludes compilation of the first step
        out_of_time = budget_seconds is not None and time.perf_counter() - start >= budget_seconds
        if len(pending) == 10 or i == steps_per_epoch - 1 or out_of_time:
            for m in jax.device_get(pending):  # waits for these steps: the bar shows finished steps
                loss_sum += float(m["loss"]) * args.batch_size
                correct += int(m["correct"])
                seen += args.batch_size
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
            bar.update(len(pending))
            pending = []
        if out_of_time:
            print(f"\ntraining-time budget used up after {i + 1} of {steps_per_epoch} steps of epoch {epoch + 1}")
            break
    bar.close()
    it.close()
    seconds = time.perf_counter() - start
    return {"state": state, "train_loss": loss_sum / seen, "train_acc": correct / seen, "seconds": seconds,
            "steps": i + 1, "images_per_second": i * args.batch_size / max(seconds, 1e-9)}


def evaluate(logits: np.ndarray, labels: np.ndarray) -> dict:
    logp = jax.nn.log_softmax(jnp.asarray(logits), -1)
    loss = -float(jnp.mean(jnp.take_along_axis(logp, jnp.asarray(labels)[:, None], -1)))
    return {"test_loss": loss, "test_acc": float(np.mean(np.argmax(logits, -1) == labels))}


def write_metrics(out: str, history: list) -> None:
    train_lib.write_json(os.path.join(out, "metrics.json"), history)
    keys = list(history[0])
    with open(os.path.join(out, "metrics.csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, keys)
        writer.writeheader()
        writer.writerows(history)
    plot_curves(out, history)


def plot_curves(out: str, history: list) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "acc")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
        ax.plot(epochs, [h[f"test_{key}"] for h in history], "o-", label="test")
        ax.set_xlabel("epoch")
        ax.set_title("loss" if key == "loss" else "accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "curves.png"), dpi=100)
    plt.close(fig)


def stage_layers(model, image_size: int) -> list:
    """Top-level stages (``layer1``, ``layer2``, ... or ``stage*``/``features*`` blocks) for cams.png."""
    layers = jaxcam.list_layers(model, (1, image_size, image_size, 3))
    stages = [name for name in layers if re.fullmatch(r"(layer|stage)\d+", name)]
    return stages or [model.info.default_layer]


def report(args, model, test, logits, history) -> None:
    """misclassified.png (true vs predicted) and cams.png (one row per stage) for the most confident mistakes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = np.argmax(logits, -1)
    wrong = np.flatnonzero(pred != test.labels)
    if len(wrong) == 0:
        print("no misclassified test images: no gallery")
        return
    confidence = np.asarray(jax.nn.softmax(jnp.asarray(logits[wrong]), -1)).max(-1)
    chosen = wrong[np.argsort(-confidence)][:args.gallery]
    names = test.class_names
    titles = [f"true {names[test.labels[i]]}\npred {names[pred[i]]}" for i in chosen]
    images = test.images[chosen]

    fig, axes = plt.subplots(1, len(chosen), figsize=(1.6 * len(chosen), 2.2), squeeze=False)
    for ax, image, title in zip(axes[0], images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "misclassified.png"), dpi=120)
    plt.close(fig)

    layers = args.cam_layers.split(",") if args.cam_layers else stage_layers(model, args.image_size)
    x = train_lib.preprocess(jnp.asarray(images), model.info.mean, model.info.std, args.image_size)
    targets = jnp.asarray(pred[chosen])
    rows = [np.asarray(jaxcam.grad_cam(model, x, layer=layer, targets=targets)) for layer in tqdm(layers, desc="Grad-CAM")]
    fig, axes = plt.subplots(len(layers) + 1, len(chosen), figsize=(1.6 * len(chosen), 1.7 * (len(layers) + 1)),
                             squeeze=False)
    extent = (0, 1, 1, 0)
    for col, (image, title) in enumerate(zip(images, titles)):
        axes[0, col].imshow(image, extent=extent)
        axes[0, col].set_title(title, fontsize=7)
        for row, cams in enumerate(rows, start=1):
            axes[row, col].imshow(image, extent=extent)
            axes[row, col].imshow(cams[col], cmap="jet", alpha=0.5, extent=extent, vmin=0, vmax=1)
    for row, label in enumerate(["input"] + layers):
        axes[row, 0].set_ylabel(label, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Grad-CAM of the predicted class, {args.model}", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "cams.png"), dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
