"""Render CAM overlays: one triptych PNG per image (original | heatmap | overlay), and a grid.

    python scripts/render.py --method fast_ablation                 # offline: shipped photos, EfficientNet-Lite0
    python scripts/render.py --method grad_cam,ablation,score photos/ "more/*.jpg" --out /tmp/cams
    python scripts/render.py --model resnet20 --dataset cifar10 --num 16 --method grad_cam
    python scripts/render.py --checkpoint runs/cifar10/checkpoints/best --dataset cifar10 --num 8
    python scripts/render.py --method ablation --target "tiger cat" --layer layer4 --model resnet50

Files: ``<out>/<image>_<method>.png``; with several methods also ``<out>/grid.png`` (images x
methods). Outputs are written atomically and a rerun skips finished images (``--overwrite`` redoes
them). Unreadable files are reported and skipped; the exit status is non-zero only if nothing
could be rendered.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import os
import sys
from pathlib import Path
from typing import List, Optional

import jaxcam  # first: sets XLA CPU flags before jax starts its backend

import jax  # noqa: E402
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from jaxcam import images as images_lib  # noqa: E402
from jaxcam import jobs  # noqa: E402
from jaxcam.explain import explain_batches, methods as exported_methods  # noqa: E402

DEFAULT_MODEL = "efficientnet_lite0"
GRID_MAX = 16  # images in grid.png
DATASETS = {"cifar10": ("cifar10", "test"), "imagenette": ("imagenette/320px-v2", "validation")}


class UsageError(Exception):
    """A mistake in the command line: printed without a traceback, exit status 2."""


@dataclasses.dataclass
class Item:
    """One input image: a file (`path`) or an in-memory array (`array`), with its true class if known."""

    name: str
    path: Optional[str] = None
    array: Optional[np.ndarray] = None
    label: Optional[str] = None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="image files, folders or globs (default: the photos shipped with jaxcam)")
    p.add_argument("--method", default="fast_ablation_cam",
                   help="a jaxcam method (grad_cam, ablation_cam, fast_ablation, ...; the _cam suffix is optional); "
                        "comma-separated for several")
    p.add_argument("--model", default=None, help=f"model name for jaxcam.models.load (default: {DEFAULT_MODEL})")
    p.add_argument("--weights", default=None,
                   help="'pretrained' (default), 'none' (random), a .pth/.th/.safetensors file, or a checkpoint dir")
    p.add_argument("--checkpoint", default=None, help="a finetune_cifar.py checkpoint (carries model name and classes)")
    p.add_argument("--layer", default=None, help="module path to explain (default: the model's usual layer)")
    p.add_argument("--target", default=None, help="class index or class name to explain (default: predicted class)")
    p.add_argument("--dataset", choices=sorted(DATASETS), default=None,
                   help="explain images of a dataset split instead of files (tfds if prepared, else --data-dir)")
    p.add_argument("--data-dir", default=None,
                   help="for --dataset: a local folder <split>/<class>/*.jpg or <class>/*.jpg (cifar10: also the "
                        ".tar.gz of such a tree or cifar-10-python.tar.gz); default: tfds' prepared copy")
    p.add_argument("--split", default=None, help="dataset split (default: test / validation)")
    p.add_argument("--num", type=int, default=8, help="images taken from --dataset (default 8)")
    p.add_argument("--image-size", type=int, default=None, help="square input size (default: the model's)")
    p.add_argument("--batch-size", type=int, default=8, help="images per compiled batch (default 8)")
    p.add_argument("--colormap", default="jet", help="matplotlib colormap (default jet)")
    p.add_argument("--alpha", type=float, default=0.5, help="heatmap weight in the overlay (default 0.5)")
    p.add_argument("--score", choices=["logit", "softmax", "sigmoid"], default=None,
                   help="score space of the explained class (default: the method's)")
    p.add_argument("--final-activation", choices=["relu", "softmax", "none"], default=None)
    p.add_argument("--window", type=int, default=None, help="ablation window side, in layer cells")
    p.add_argument("--stride", type=int, default=None, help="ablation window stride, in layer cells")
    p.add_argument("--chunk", type=int, default=None,
                   help="ablations (or Score-CAM channels) per vmapped chunk: the methods' batch_size option")
    p.add_argument("--out", default="outputs/renders", help="output folder (default ./outputs/renders)")
    p.add_argument("--overwrite", action="store_true", help="redo images already rendered in --out")
    return p.parse_args(argv)


def resolve_methods(spec: str) -> dict:
    known = exported_methods()
    chosen = {}
    for raw in [s.strip() for s in spec.split(",") if s.strip()]:
        name = raw.replace("-", "_").lower()
        name = name if name in known else f"{name}_cam" if f"{name}_cam" in known else name
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise UsageError(f"unknown method {raw!r}.{hint} Valid methods: {', '.join(sorted(known))}")
        chosen[name] = known[name]
    if not chosen:
        raise UsageError("--method is empty; valid methods: " + ", ".join(sorted(known)))
    return chosen


def method_options(args, methods: dict) -> dict:
    """Per method, the options the user set that it accepts; notes the ones it ignores."""
    given = {"score": args.score, "final_activation": args.final_activation, "window": args.window,
             "stride": args.stride, "chunk_size": args.chunk}
    given = {k: v for k, v in given.items() if v is not None}
    per_method = {}
    for name, fn in methods.items():
        accepted = inspect.signature(fn).parameters
        per_method[name] = {k: v for k, v in given.items() if k in accepted}
        ignored = sorted(set(given) - set(per_method[name]))
        if ignored:
            print(f"note: {name} has no option {', '.join(ignored)}; ignored for it")
    return per_method


def load_model(args):
    if args.checkpoint:
        from jaxcam import train

        if not hasattr(train, "load_checkpoint"):
            raise UsageError("this jaxcam has no jaxcam.train.load_checkpoint; pass --model and --weights instead")
        return train.load_checkpoint(args.checkpoint)
    weights = args.weights or "pretrained"
    weights = None if str(weights).lower() in ("none", "random") else weights
    if weights not in (None, "pretrained", "torchvision") and not os.path.exists(weights):
        raise UsageError(f"--weights {weights!r}: no such file or folder")
    try:
        return jaxcam.models.load(args.model or DEFAULT_MODEL, weights=weights)
    except ValueError as err:
        raise UsageError(str(err)) from None


def resolve_target(target: Optional[str], class_names) -> Optional[int]:
    """--target as an index, or a class name (case-insensitive); unknown names list the closest ones."""
    if target is None:
        return None
    if target.strip().lstrip("-").isdigit():
        index = int(target)
        if class_names and not 0 <= index < len(class_names):
            raise UsageError(f"--target {index} is out of range: the model has {len(class_names)} classes")
        return index
    lowered = [n.lower() for n in class_names]
    if target.lower() in lowered:
        return lowered.index(target.lower())
    if not class_names:
        raise UsageError(f"--target {target!r}: this model has no class names; pass a class index")
    close = difflib.get_close_matches(target.lower(), lowered, n=5, cutoff=0.5)
    hint = ("closest: " + ", ".join(repr(class_names[lowered.index(c)]) for c in close)) if close else \
        "pass a class index instead"
    raise UsageError(f"unknown class name {target!r}; {hint}")


def check_layer(model, layer: Optional[str], size: int) -> None:
    if layer is None:
        return
    valid = jaxcam.list_layers(model, (1, size, size, 3))
    if layer.replace(".", "/") not in valid:
        close = difflib.get_close_matches(layer, valid, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown layer {layer!r} for {model.info.name}.{hint} Valid layers: {', '.join(valid)}")


# ---------------------------------------------------------------------------------------------- inputs

def label_of(folder: str, class_names) -> Optional[str]:
    """The class a folder name stands for: one of `class_names`, or an ImageNet WordNet id (n01440764)."""
    lowered = {n.lower(): n for n in class_names}
    if folder.lower() in lowered:
        return lowered[folder.lower()]
    if len(class_names) == 1000 and folder.startswith("n") and folder[1:].isdigit():
        from jaxcam.models import classes

        wnids = classes.imagenet_wnids()
        return class_names[wnids.index(folder)] if folder in wnids else None
    return None


def file_items(inputs: List[str], class_names) -> tuple:
    """Items from files/folders/globs, and the inputs that matched nothing. True class = parent
    folder's name when it is one of the model's classes."""
    paths, unmatched = images_lib.expand(inputs or images_lib.sample_photos())
    items, seen = [], set()
    for path in paths:
        p = Path(path)
        name = p.stem if p.stem not in seen else f"{p.parent.name}_{p.stem}"
        while name in seen:
            name += "_"
        seen.add(name)
        items.append(Item(name, path=path, label=label_of(p.parent.name, class_names)))
    return items, unmatched


def dataset_items(args, class_names) -> List[Item]:
    """--num images of a dataset split: tfds (prepared, no download) or a local class-folder tree."""
    tfds_name, default_split = DATASETS[args.dataset]
    split = args.split or default_split
    if args.dataset == "cifar10":
        return cifar10_items(args, split)
    try:
        import tensorflow_datasets as tfds

        source = tfds.data_source(tfds_name, split=split, data_dir=args.data_dir, download=False)
        names = source.dataset_info.features["label"].names
        return [Item(f"{args.dataset}_{split}_{i:05d}", array=np.asarray(source[i]["image"]),
                     label=names[int(source[i]["label"])]) for i in range(min(args.num, len(source)))]
    except Exception as err:  # not prepared, not installed: try a local folder
        tfds_error = err
    if not args.data_dir or not os.path.isdir(args.data_dir):
        raise UsageError(
            f"--dataset {args.dataset}: tensorflow-datasets has no prepared {tfds_name} ({type(tfds_error).__name__}) "
            f"and no --data-dir folder was given. Extract the images to a folder <split>/<class>/*.jpg (e.g. "
            f"tar xzf cifar10_jpg_tree.tar.gz -C data/) and pass --data-dir data/cifar10")
    root = Path(args.data_dir) / split if (Path(args.data_dir) / split).is_dir() else Path(args.data_dir)
    paths, _ = images_lib.expand([str(root)])
    # Spread --num images over the classes: take them round-robin across class folders.
    by_class = {}
    for path in paths:
        by_class.setdefault(Path(path).parent.name, []).append(path)
    picked = [lst[i] for i in range(max(map(len, by_class.values()), default=0)) for lst in by_class.values()
              if i < len(lst)][: args.num]
    return [Item(f"{Path(p).parent.name}_{Path(p).stem}", path=p,
                 label=label_of(Path(p).parent.name, class_names) or Path(p).parent.name) for p in picked]


def cifar10_items(args, split: str) -> List[Item]:
    """--num CIFAR-10 images spread evenly over the split, via jaxcam.data (tfds, folder tree or archive)."""
    from jaxcam import data

    try:
        ds = data.load_cifar10(args.data_dir, split)
    except (data.DataNotFoundError, ValueError) as err:
        raise UsageError(f"--dataset cifar10: {err}") from None
    picks = np.linspace(0, len(ds) - 1, min(args.num, len(ds))).round().astype(int)
    return [Item(f"cifar10_{split}_{i:05d}", array=ds.images[i], label=ds.class_names[int(ds.labels[i])])
            for i in picks]


def load_item(item: Item, size: int) -> images_lib.Loaded:
    if item.path is not None:
        loaded = images_lib.load(item.path, size)
    else:
        loaded = images_lib.Loaded(item.name, images_lib.fit(Image.fromarray(item.array), size))
    loaded.label = item.label
    return loaded


# --------------------------------------------------------------------------------------------- figures

def output_path(out: str, item: Item, method: str) -> str:
    return os.path.join(out, f"{item.name}_{method}.png")


def title(model, method: str, probs: np.ndarray, target: Optional[int], label: Optional[str]) -> str:
    pred = int(np.argmax(probs))
    text = f"{method}: predicted {model.class_name(pred)} ({probs[pred]:.2f})"
    if target is not None:
        text += f" | explained {model.class_name(target)} ({probs[target]:.2f})"
    if label is not None:
        text += f" | true {label}"
    return text


def save_triptych(path: str, image: np.ndarray, cam: np.ndarray, args, heading: str) -> np.ndarray:
    """Write original | heatmap | overlay to `path` (atomically); returns the overlay."""
    panels = [image, jaxcam.heatmap(cam, args.colormap), jaxcam.overlay(image, cam, args.colormap, args.alpha)]
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.9))
    for ax, panel, name in zip(axes, panels, ("original", "heatmap", "overlay")):
        ax.imshow(panel)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(heading, fontsize=10)
    fig.tight_layout()
    with jobs.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return panels[2]


def save_grid(path: str, rows: list, methods: List[str]) -> None:
    """rows: (name, image, {method: overlay}) -> one figure, images x (original + methods)."""
    cols = 1 + len(methods)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.2 * cols, 2.3 * len(rows)), squeeze=False)
    for r, (name, image, overlays) in enumerate(rows):
        for c, panel in enumerate([image] + [overlays[m] for m in methods]):
            axes[r, c].imshow(panel)
            axes[r, c].axis("off")
            if r == 0:
                axes[r, c].set_title((["original"] + methods)[c], fontsize=8)
        axes[r, 0].text(-0.05, 0.5, name, transform=axes[r, 0].transAxes, rotation=90, ha="right", va="center",
                        fontsize=7)
    fig.tight_layout()
    with jobs.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------- run

def render(args) -> int:
    methods = resolve_methods(args.method)
    for flag in ("batch_size", "num", "image_size", "chunk", "window", "stride"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if not 0.0 <= args.alpha <= 1.0:
        raise UsageError(f"--alpha must be in [0, 1], got {args.alpha}")
    jaxcam.heatmap(np.zeros((1, 1)), args.colormap)  # unknown colormap: fail now
    try:
        jobs.check_writable(args.out)
    except PermissionError as err:
        raise UsageError(str(err)) from None
    options = method_options(args, methods)

    model = load_model(args)
    size = args.image_size or model.info.input_size
    check_layer(model, args.layer, size)
    target = resolve_target(args.target, model.info.class_names)
    if args.dataset:
        items, unmatched = dataset_items(args, model.info.class_names), []
    else:
        items, unmatched = file_items(args.inputs, model.info.class_names)
    for spec in unmatched:
        print(f"warning: {spec!r} matched no file")
    if not items:
        print("error: no input images: pass image files, folders or globs (or --dataset)", file=sys.stderr)
        return 1

    settings = {"model": model.info.name, "weights": args.checkpoint or args.weights or "pretrained",
                "layer": args.layer, "target": target, "image_size": size, "colormap": args.colormap,
                "alpha": args.alpha, "score": args.score, "final_activation": args.final_activation,
                "window": args.window, "stride": args.stride}
    try:
        resuming = jobs.Manifest(args.out, "render.json").check_or_write(settings, overwrite=args.overwrite)
    except ValueError as err:
        raise UsageError(str(err)) from None
    todo = items if args.overwrite else jobs.pending(items, lambda it: [output_path(args.out, it, m) for m in methods])
    done_before = len(items) - len(todo)
    if resuming and done_before:
        print(f"resuming: {done_before} of {len(items)} images already rendered in {args.out}")
    print(f"{model.info.name} ({len(model.info.class_names) or '?'} classes), layer {args.layer or model.info.default_layer}, "
          f"{size}px, methods: {', '.join(methods)}; {len(todo)} images to render")

    failures, rendered, grid_rows = [], [], []
    bar = tqdm(total=len(todo), unit="img", desc="render")
    for start in range(0, len(todo), args.batch_size):
        chunk = todo[start : start + args.batch_size]
        loaded = [(it, load_item(it, size)) for it in chunk]
        for it, ld in loaded:
            if ld.error:
                failures.append((it.path or it.name, ld.error))
                tqdm.write(f"skipped {it.path or it.name}: {ld.error}")
        good = [(it, ld) for it, ld in loaded if not ld.error]
        if good:
            pixels = np.stack([ld.image for _, ld in good])
            overlays = {}
            for name, fn in methods.items():
                try:
                    (batch,) = list(explain_batches(fn, model, pixels, batch_size=args.batch_size, layer=args.layer,
                                                    targets=target, **options[name]))
                except (ValueError, TypeError) as err:  # the method's own checks, e.g. a layer it cannot use
                    bar.close()
                    raise UsageError(f"{name} cannot explain {model.info.name} here: {err}") from None
                cams, probs = np.asarray(batch.maps), np.asarray(jax.nn.softmax(batch.logits, axis=-1))
                for i, (it, ld) in enumerate(good):
                    heading = title(model, name, probs[i], target, ld.label)
                    overlays.setdefault(it.name, {})[name] = save_triptych(
                        output_path(args.out, it, name), ld.image, cams[i], args, heading)
            for it, ld in good:
                rendered.append(it)
                if len(methods) > 1 and len(grid_rows) < GRID_MAX:
                    grid_rows.append((it.name, ld.image, overlays[it.name]))
        bar.update(len(chunk))
    bar.close()

    if grid_rows:
        save_grid(os.path.join(args.out, "grid.png"), grid_rows, list(methods))
    print(f"\nrendered {len(rendered)} images x {len(methods)} methods -> {os.path.abspath(args.out)}/"
          + (" (+ grid.png)" if grid_rows else ""))
    if done_before:
        print(f"already done before: {done_before}")
    if failures:
        print(f"skipped {len(failures)} unreadable inputs:")
        for what, why in failures:
            print(f"  {what}: {why}")
    return 1 if todo and not rendered else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return render(args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
