"""What a training run leaves in its folder: metrics.csv/json, curves.png, confusion.png,
per_class.csv, misclassified.png and cams.png (Grad-CAM of the predicted class per network stage),
and index.html, a page of all of it rebuilt after every epoch (`jaxcam.viz.pages`; the gallery's
pictures in ``page/``).

    reports.write_metrics(out, history)                      # after every epoch
    reports.write_final(out, model, images, labels, logits, class_names)   # at the end (size: the model's)

Works for any data set: class names come from the data, image sizes from the model input.
"""
from __future__ import annotations

import csv
import json
import os
import re
from typing import Optional, Sequence

import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxcam import jobs
from jaxcam._src.split import input_shape, layer_shapes, list_layers
from jaxcam.methods.gradient import grad_cam
from jaxcam.train.steps import input_size, preprocess
from jaxcam.viz import pages
from jaxcam.viz.heatmaps import heatmap


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def write_json(path: str, data) -> None:
    """Atomically (jaxcam.jobs): a kill never leaves a partial file under `path`, nor a temp file it would keep."""
    jobs.write_bytes(path, json.dumps(data, indent=1).encode())


def write_summary(out: str, result: dict) -> None:
    """summary.json of a finished run, and its page (now "finished")."""
    write_json(os.path.join(out, "summary.json"), result)
    pages.train_page(out)


def _savefig(fig, path: str, **kwargs) -> None:
    with jobs.atomic_path(path) as tmp:
        fig.savefig(tmp, format=os.path.splitext(path)[1][1:] or "png", **kwargs)


def write_metrics(out: str, history: Sequence[dict]) -> None:
    """metrics.json, metrics.csv (one row per epoch), curves.png and index.html."""
    write_json(os.path.join(out, "metrics.json"), list(history))
    keys = []
    for h in history:
        keys += [k for k in h if k not in keys]
    with jobs.atomic_path(os.path.join(out, "metrics.csv")) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, keys)
        writer.writeheader()
        writer.writerows(history)
    plot_curves(os.path.join(out, "curves.png"), history)
    pages.train_page(out)


def plot_curves(path: str, history: Sequence[dict]) -> None:
    """Loss and accuracy per epoch, train vs validation, plus the learning rate."""
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key in zip(axes, ("loss", "acc")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label="train")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "o-", label="val")
        ax.set_xlabel("epoch")
        ax.set_title("loss" if key == "loss" else "accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[2].plot(epochs, [h.get("lr", np.nan) for h in history], "o-")
    axes[2].set_xlabel("epoch")
    axes[2].set_title("learning rate (end of epoch)")
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    _savefig(fig, path, dpi=100)
    plt.close(fig)


def confusion_matrix(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(pred)), 1)
    return cm


def per_class(cm: np.ndarray, class_names: Sequence[str]) -> list:
    """Rows {class, images, correct, accuracy} from a confusion matrix."""
    rows = []
    for i, name in enumerate(class_names):
        n = int(cm[i].sum())
        rows.append({"class": name, "images": n, "correct": int(cm[i, i]),
                     "accuracy": float(cm[i, i] / n) if n else float("nan")})
    return rows


def plot_confusion(path: str, cm: np.ndarray, class_names: Sequence[str]) -> None:
    plt = _plt()
    k = len(class_names)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(4 + 0.45 * k, 30)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    short = [n if len(n) <= 18 else n[:17] + "…" for n in class_names]
    ax.set_xticklabels(short, rotation=60, ha="right", fontsize=8)
    ax.set_yticklabels(short, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(f"confusion matrix (accuracy {np.trace(cm) / max(cm.sum(), 1):.4f})")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    _savefig(fig, path, dpi=100)
    plt.close(fig)


def stage_layers(model, image_size: Optional[int] = None) -> list:
    """The network's stages for cams.png: ``layer1..N`` (ResNets), else the blocks that change
    resolution (EfficientNet ``_blocks/i``, VGG/DenseNet ``features/...``), else the default layer."""
    x_shape = input_shape(model, image_size)
    layers = list_layers(model, x_shape)
    stages = [name for name in layers if re.fullmatch(r"(layer|stage)\d+", name)]
    if stages:
        return stages
    shapes = layer_shapes(model, x_shape)
    top = [p for p in layers if p.count("/") == 1 and re.fullmatch(r"[^/]+/\d+", p)]
    last_of_size = {}
    for p in top:
        last_of_size[shapes[p][1:3]] = p  # the last block at each resolution
    picked = list(last_of_size.values())[-4:]
    return picked + [model.info.default_layer] if model.info.default_layer not in picked else picked


def _softmax(logits):
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def write_final(out: str, model, images: np.ndarray, labels: np.ndarray, logits: np.ndarray,
                class_names: Sequence[str], image_size: Optional[int] = None, gallery: int = 10,
                cam_layers: Optional[Sequence[str]] = None, title: str = "") -> dict:
    """confusion.png, per_class.csv (+ .json), misclassified.png and cams.png (and index.html); returns a summary.

    `gallery` is the number of misclassified images shown (most confident mistakes first); 0 = no
    gallery and no CAM figure. `image_size`: the model's own (``model.info.input_size``) unless given.
    """
    image_size = input_size(model, image_size)
    pred = np.argmax(logits, -1)
    k = len(class_names)
    cm = confusion_matrix(labels, pred, k)
    plot_confusion(os.path.join(out, "confusion.png"), cm, class_names)
    rows = per_class(cm, class_names)
    with jobs.atomic_path(os.path.join(out, "per_class.csv")) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["class", "images", "correct", "accuracy"])
        writer.writeheader()
        writer.writerows(rows)
    summary = {"accuracy": float(np.mean(pred == labels)), "images": int(len(labels)), "per_class": rows}
    write_json(os.path.join(out, "per_class.json"), summary)
    wrong = np.flatnonzero(pred != labels)
    if gallery <= 0 or len(wrong) == 0:
        pages.train_page(out)
        return summary
    prob = _softmax(logits[wrong].astype(np.float64))
    chosen = wrong[np.argsort(-prob.max(-1), kind="stable")][:gallery]
    p_all = _softmax(logits[chosen].astype(np.float64))
    titles = [f"true {class_names[labels[i]]}\npred {class_names[pred[i]]} {p_all[j, pred[i]]:.2f}"
              for j, i in enumerate(chosen)]
    shown = images[chosen]
    _gallery(os.path.join(out, "misclassified.png"), shown, titles)
    layers = list(cam_layers) if cam_layers else stage_layers(model, image_size)
    cams = _cams(os.path.join(out, "cams.png"), model, shown, pred[chosen], titles, image_size, layers, title)
    pages.save_gallery(out, shown, titles, layers, [heatmap(c) for c in cams])
    pages.train_page(out)
    return summary


def _gallery(path, images, titles):
    plt = _plt()
    n = len(images)
    cols = min(n, 10)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 2.1 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, t in zip(axes.ravel(), images, titles):
        ax.imshow(image)
        ax.set_title(t, fontsize=7)
    fig.tight_layout()
    _savefig(fig, path, dpi=120)
    plt.close(fig)


def _cams(path, model, images, targets, titles, image_size, layers, title):
    plt = _plt()
    x = preprocess(jnp.asarray(images), model.info.mean, model.info.std, image_size)
    t = jnp.asarray(targets)
    rows = [np.asarray(grad_cam(model, x, layer=layer, targets=t))
            for layer in tqdm(layers, desc="Grad-CAM per stage", unit="layer")]
    n = len(images)
    fig, axes = plt.subplots(len(layers) + 1, n, figsize=(1.6 * n, 1.7 * (len(layers) + 1)), squeeze=False)
    extent = (0, 1, 1, 0)
    for col, (image, t_) in enumerate(zip(images, titles)):
        axes[0, col].imshow(image, extent=extent)
        axes[0, col].set_title(t_, fontsize=6)
        for row, cams in enumerate(rows, start=1):
            axes[row, col].imshow(image, extent=extent)
            axes[row, col].imshow(cams[col], cmap="jet", alpha=0.5, extent=extent, vmin=0, vmax=1)
    for row, name in enumerate(["input"] + list(layers)):
        axes[row, 0].set_ylabel(name, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"Grad-CAM of the predicted class per stage {title}".strip(), fontsize=9)
    fig.tight_layout()
    _savefig(fig, path, dpi=120)
    plt.close(fig)
    return rows
