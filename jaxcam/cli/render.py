"""Render CAM overlays: one PNG per image and method (original | heatmap | overlay), and a grid.

    jaxcam render --method fast_ablation                  # offline: shipped photos, EfficientNet-Lite0
    jaxcam render --method grad_cam,ablation,score photos/ "more/*.jpg" --out /tmp/cams
    jaxcam render --method all --model resnet20 --weights none --image-size 32   # every registry method
    jaxcam render --checkpoint runs/cifar10 --dataset data/cifar10 --split test --random 8 --seed 1
    jaxcam render --checkpoint runs/cifar10 --dataset cifar10 --index 3 17 42 --class-idx 5
    jaxcam render --method ablation --target "tiger cat" --layer layer4 --model resnet50

--method takes any name of the method registry (`jaxcam.methods.registry.names()`), an alias
(``ablation``, ``spatial``) or a pytorch-grad-cam class name (``GradCAMPlusPlus``); ``all`` runs
every method. Map methods give original | heatmap | overlay; attribution methods (guided backprop)
original | attribution | its magnitude over the image; several-maps methods one overlay per map.

Several processes (jaxcam.distributed): ``--processes N`` on this machine, or ``--coordinator
HOST:PORT --num-processes N --process-id I`` on a cluster; each renders its share of whole batches,
process 0 writes grid.png. ``--max-memory 4G`` (or ``auto``) picks the chunk and batch sizes.
A killed run rerun with the same command ends with the files of an uninterrupted run.

Files: ``<out>/<image>_<method>.png``; with several map methods also ``<out>/grid.png``. Outputs
are written atomically and a rerun skips finished images (``--overwrite`` redoes them). Unreadable
files are reported and skipped; the exit status is 1 if nothing could be rendered, 2 for a bad
command line (one line on stderr, nothing computed).
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

from jaxcam import distributed
from jaxcam._src import memory
from jaxcam.cli import common
from jaxcam.cli.common import UsageError

DEFAULT_MODEL = "efficientnet_lite0"
GRID_MAX = 16  # images in grid.png


@dataclasses.dataclass
class Item:
    """One input image: a file (`path`) or an in-memory array (`array`), with its true class if known."""

    name: str
    path: Optional[str] = None
    array: Optional[np.ndarray] = None
    label: Optional[str] = None


def parser():
    p = common.ArgumentParser(prog="jaxcam render", description=__doc__,
                              formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="image files, folders or globs (default: the photos shipped with jaxcam)")
    p.add_argument("--method", default="fast_ablation_cam",
                   help="registry method name(s), comma-separated, or 'all' (default fast_ablation_cam)")
    p.add_argument("--model", default=None, help=f"model name for jaxcam.models.load (default: {DEFAULT_MODEL})")
    p.add_argument("--weights", default=None,
                   help="'pretrained' (default), 'none' (random), a .pth/.th/.safetensors file, or a checkpoint dir")
    p.add_argument("--checkpoint", default=None, help="a training run or checkpoint folder (carries model and classes)")
    p.add_argument("--layer", default=None, help="module path to explain (default: the model's usual layer)")
    p.add_argument("--target", default=None, help="class index or class name to explain (default: predicted class)")
    p.add_argument("--dataset", default=None,
                   help="explain images of a dataset instead of files: a folder tree <split>/<class>/<image>, "
                        "a .tar.gz of one, or the name cifar10 (tfds' prepared copy)")
    p.add_argument("--split", default="test", help="dataset split folder (default test; e.g. val)")
    p.add_argument("--random", type=common.positive_int, default=None,
                   help="pick this many dataset images at random (default 8 when no --index)")
    p.add_argument("--seed", type=int, default=0, help="seed of --random (default 0)")
    p.add_argument("--index", type=common.non_negative_int, nargs="+", default=None,
                   help="dataset image indices (within --class-idx when given)")
    p.add_argument("--class-idx", default=None, help="only dataset images of this class (the dataset's class index, or its name)")
    p.add_argument("--image-size", type=common.positive_int, default=None, help="square input size (default: the model's)")
    p.add_argument("--batch-size", type=common.positive_int, default=8, help="images per compiled batch (default 8)")
    p.add_argument("--colormap", type=common.colormap, default="jet", help="matplotlib colormap (default jet)")
    p.add_argument("--alpha", type=common.fraction, default=0.5, help="heatmap weight in the overlay, in [0, 1]")
    p.add_argument("--score", choices=["logit", "softmax", "sigmoid"], default=None,
                   help="score space of the explained class (default: the method's)")
    p.add_argument("--final-activation", choices=["relu", "softmax", "none"], default=None)
    p.add_argument("--window", type=common.positive_int, default=None, help="ablation window side, in layer cells")
    p.add_argument("--stride", type=common.positive_int, default=None, help="ablation window stride, in layer cells")
    p.add_argument("--chunk-size", type=common.positive_int, default=None,
                   help="ablated/masked copies per vmapped chunk (ablation and score families)")
    p.add_argument("--save-maps", action="store_true",
                   help="also write each map as <image>_<method>.npy (float32 (H, W) in [0, 1])")
    p.add_argument("--max-memory", type=memory.limit_argument, default=None, metavar="SIZE",
                   help="keep each method's run under SIZE (e.g. 4G): picks --chunk-size and lowers --batch-size "
                        "from XLA's memory analysis; 'auto': from the free memory")
    p.add_argument("--out", default="outputs/renders", help="output folder (default ./outputs/renders)")
    p.add_argument("--overwrite", action="store_true", help="redo images already rendered in --out")
    distributed.add_arguments(p)
    return p


# ------------------------------------------------------------------------------------- inputs

def label_of(folder: str, class_names) -> Optional[str]:
    """The class a folder name stands for: one of `class_names`, or an ImageNet WordNet id (n01440764)."""
    lowered = {n.lower(): n for n in class_names}
    if folder.lower() in lowered:
        return lowered[folder.lower()]
    if folder.startswith("n") and folder[1:].isdigit():  # a WordNet id: its ImageNet class
        from jaxcam.models import classes

        wnids = classes.imagenet_wnids()
        if folder not in wnids:
            return None
        if len(class_names) == 1000:
            return class_names[wnids.index(folder)]
        # a model trained on a few WordNet-id folders carries their human names (as jaxcam.data gives them)
        return lowered.get(classes.imagenet_names()[wnids.index(folder)].lower())
    return None


def file_items(inputs: List[str], class_names) -> tuple:
    """Items from files/folders/globs and the inputs that matched nothing; true class = the parent
    folder's name when it is one of the model's classes."""
    from jaxcam import images as images_lib

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
    """The picked images of --dataset's --split: a folder tree is listed (read lazily); an archive or
    a tfds name is read with `jaxcam.data`."""
    from jaxcam import images as images_lib

    spec = args.dataset
    if os.path.isdir(spec):
        root = Path(spec) / args.split
        if not root.is_dir():
            splits = sorted(p.name for p in Path(spec).iterdir() if p.is_dir())
            raise UsageError(f"--split {args.split!r}: no folder {root}; splits there: {', '.join(splits) or 'none'}")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        files = [(path, c) for c in classes for path in images_lib.expand([str(root / c)])[0]]
        labels = np.asarray([classes.index(c) for _, c in files], int)
        chosen = pick(labels, classes, args)
        return [Item(f"{files[i][1]}_{Path(files[i][0]).stem}", path=files[i][0],
                     label=label_of(files[i][1], class_names) or files[i][1]) for i in chosen]
    from jaxcam import data

    try:
        ds = data.load_cifar10(None if spec.lower() == "cifar10" else spec, args.split)
    except (data.DataNotFoundError, ValueError) as err:
        raise UsageError(f"--dataset {spec!r}: {err}") from None
    chosen = pick(np.asarray(ds.labels), ds.class_names, args)
    return [Item(f"{args.split}_{i:05d}", array=ds.images[i], label=ds.class_names[int(ds.labels[i])])
            for i in chosen]


def pick(labels: np.ndarray, class_names, args) -> list:
    """Indices into the split: --class-idx filters, then --index picks or --random N samples (seeded)."""
    pool = np.arange(len(labels))
    if args.class_idx is not None:
        c = common.class_index(args.class_idx, list(class_names), option="--class-idx", owner="the dataset")
        pool = pool[labels == c]
        if not len(pool):
            raise UsageError(f"--class-idx {args.class_idx}: the split has no images of that class")
    if args.index is not None:
        bad = [i for i in args.index if i >= len(pool)]
        if bad:
            raise UsageError(f"--index {bad[0]} is out of range: {len(pool)} images to choose from")
        return [int(pool[i]) for i in args.index]
    count = min(args.random or 8, len(pool))
    return sorted(int(i) for i in np.random.default_rng(args.seed).choice(pool, count, replace=False))


def load_item(item: Item, size: int):
    from PIL import Image

    from jaxcam import images as images_lib

    if item.path is not None:
        loaded = images_lib.load(item.path, size)
    else:
        loaded = images_lib.Loaded(item.name, images_lib.fit(Image.fromarray(item.array), size))
    loaded.label = item.label
    return loaded


# ------------------------------------------------------------------------------------- figures

def output_path(out: str, item: Item, method: str) -> str:
    return os.path.join(out, f"{item.name}_{method}.png")


def title(model, method: str, probs: np.ndarray, target: Optional[int], label: Optional[str]) -> str:
    """'<method>: true <label> | predicted <class> (p) | explained <class> (p)'."""
    pred = int(np.argmax(probs))
    parts = [f"true {label}"] if label is not None else []
    parts.append(f"predicted {model.class_name(pred)} ({probs[pred]:.2f})")
    if label is not None:
        names = [n.lower() for n in model.info.class_names]
        if label.lower() in names:
            parts[0] += f" ({probs[names.index(label.lower())]:.2f})"
    if target is not None:
        parts.append(f"explained {model.class_name(target)} ({probs[target]:.2f})")
    return f"{method}: " + " | ".join(parts)


def panels(output: str, image: np.ndarray, result, colormap: str, alpha: float) -> list:
    """[(panel title, RGB image)] for one image's result of a method with the given output kind."""
    import jaxcam

    if output == "map":
        return [("original", image), ("heatmap", jaxcam.heatmap(result, colormap)),
                ("overlay", jaxcam.overlay(image, result, colormap, alpha))]
    if output == "attribution":
        shown = np.asarray(jaxcam.deprocess_gradients(result[None])[0])
        magnitude = np.abs(np.asarray(result)).sum(axis=-1)
        magnitude = (magnitude - magnitude.min()) / (np.ptp(magnitude) or 1.0)
        return [("original", image), ("attribution", (shown * 255).round().astype(np.uint8)),
                ("|attribution|", jaxcam.overlay(image, magnitude, colormap, alpha))]
    return [("original", image)] + [(name, jaxcam.overlay(image, m, colormap, alpha)) for name, m in result.items()]


def save_figure(path: str, shown: list, heading: str) -> None:
    """Write panels side by side to `path` (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxcam import jobs

    fig, axes = plt.subplots(1, len(shown), figsize=(3.5 * len(shown), 3.9), squeeze=False)
    for ax, (name, panel) in zip(axes[0], shown):
        ax.imshow(panel)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(heading, fontsize=10)
    fig.tight_layout()
    with jobs.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def save_grid(path: str, rows: list, methods: List[str]) -> None:
    """rows: (name, image, {method: overlay}) -> one figure, images x (original + methods)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxcam import jobs

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


# ----------------------------------------------------------------------------------------- run

def validate(args):
    """Every check that needs no model: methods and their options, dataset path, output folder."""
    if args.dataset is None and (args.random or args.index or args.class_idx is not None):
        raise UsageError("--random/--index/--class-idx pick images of a --dataset; pass --dataset too")
    if args.dataset is not None and args.inputs:
        raise UsageError("pass image files or --dataset, not both")
    if args.dataset is not None and args.random and args.index:
        raise UsageError("pass --random N or --index I ..., not both")
    if args.dataset is not None and args.dataset.lower() != "cifar10" and not os.path.exists(args.dataset):
        raise UsageError(f"--dataset {args.dataset!r}: no such folder or archive (or the name cifar10)")
    chosen = common.methods(args.method)
    notes = []
    options = common.method_options(chosen, {"score": args.score, "final_activation": args.final_activation,
                                             "window": args.window, "stride": args.stride,
                                             "chunk_size": args.chunk_size}, notes)
    common.writable(args.out)
    try:
        distributed.check_arguments(args)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return chosen, options, notes


def main(argv=None) -> int:
    return common.run(_main, argv)


def _main(argv) -> int:
    args = parser().parse_args(argv)
    chosen, options, notes = validate(args)
    status = distributed.launch(args, argv, entry="jaxcam.cli.render")  # --processes N: run N of us
    if status is not None:
        return status
    distributed.initialize(args)
    model = common.load_model(args.model, args.weights, args.checkpoint, DEFAULT_MODEL)
    size = args.image_size or model.info.input_size
    common.check_layer(model, args.layer, size)
    target = common.class_index(args.target, model.info.class_names)
    if args.dataset:
        items, unmatched = dataset_items(args, model.info.class_names), []
    else:
        items, unmatched = file_items(args.inputs, model.info.class_names)
    for note in notes:
        print(note)
    if args.max_memory is not None:
        args.batch_size = memory.fit(chosen, options, model, size, args.batch_size, args.layer, args.max_memory)
    return render(args, model, size, target, chosen, options, items, unmatched)


def render(args, model, size, target, chosen, options, items, unmatched) -> int:
    import jax
    from tqdm import tqdm

    from jaxcam import jobs
    from jaxcam.batching import explain_batches

    for spec in unmatched:
        print(f"warning: {spec!r} matched no file")
    if not items:
        print("error: no input images: pass image files, folders or globs (or --dataset)", file=sys.stderr)
        return 1
    names = [m.name for m in chosen]
    settings = {"model": model.info.name, "weights": args.checkpoint or args.weights or "pretrained",
                "layer": args.layer, "target": target, "image_size": size, "colormap": args.colormap,
                "alpha": args.alpha, "options": options}
    try:
        resuming = jobs.Manifest(args.out, "render.json").check_or_write(settings, overwrite=args.overwrite)
    except ValueError as err:
        raise UsageError(str(err)) from None
    # Fixed batches of the whole list (a resumed or multi-process run computes every image in the same
    # batch as one uninterrupted process); this process takes its share of whole batches.
    bs = args.batch_size
    outputs = lambda it: [output_path(args.out, it, m) for m in names]  # noqa: E731
    done = lambda it: not args.overwrite and all(os.path.exists(p) for p in outputs(it))  # noqa: E731
    mine = distributed.share(len(items), block=bs)
    batches = [items[i : i + bs] for i in range(mine.start, mine.stop, bs)]
    todo = [b for b in batches if not all(done(it) for it in b)]
    done_before = sum(done(it) for it in items[mine])
    if distributed.is_main():
        jobs.clean_temp(args.out)  # temp files of a killed run
    distributed.barrier("render-start")
    if resuming and done_before:
        print(f"resuming: {done_before} of {len(items[mine])} images already rendered in {args.out}")
    print(f"{model.info.name} ({len(model.info.class_names) or '?'} classes), layer "
          f"{args.layer or model.info.default_layer}, {size}px, methods: {', '.join(names)}; "
          f"{len(items[mine]) - done_before} images to render" + (
              f" (process {distributed.process_index()} of {distributed.process_count()})"
              if distributed.process_count() > 1 else ""))

    map_methods = [m.name for m in chosen if m.output == "map"]
    failures, rendered, overlays = [], [], {}

    def explain(batch, report=True, maps=None):
        """Load and explain one batch; {item name: (item, loaded, {method: shown panels})} of the good ones."""
        loaded = [(it, load_item(it, size)) for it in batch]
        for it, ld in loaded:
            if ld.error and report:
                failures.append((it.path or it.name, ld.error))
                tqdm.write(f"skipped {it.path or it.name}: {ld.error}")
        good = [(it, ld) for it, ld in loaded if not ld.error]
        shown = {it.name: (it, ld, {}) for it, ld in good}
        if not good:
            return shown
        pixels = np.stack([ld.image for _, ld in good])
        for m in chosen:
            try:
                (out,) = list(explain_batches(m, model, pixels, batch_size=bs, layer=args.layer,
                                              targets=target, **options[m.name]))
            except (ValueError, TypeError) as err:  # the method's own checks, e.g. a layer it cannot use
                raise UsageError(f"{m.name} cannot explain {model.info.name} here: {err}") from None
            results = out.maps
            results = {k: np.asarray(v) for k, v in results.items()} if isinstance(results, dict) \
                else np.asarray(results)
            probs = np.asarray(jax.nn.softmax(out.logits, axis=-1))
            for i, (it, ld) in enumerate(good):
                one = {k: v[i] for k, v in results.items()} if isinstance(results, dict) else results[i]
                if maps is not None and m.output == "map":
                    maps.setdefault(it.name, {})[m.name] = np.asarray(one, np.float32)
                shown[it.name][2][m.name] = (panels(m.output, ld.image, one, args.colormap, args.alpha),
                                             title(model, m.name, probs[i], target, ld.label))
        return shown

    bar = tqdm(total=sum(map(len, todo)), unit="img", desc="render", disable=not distributed.is_main())
    raw = {}  # --save-maps: item name -> {method: map}
    for batch in todo:
        for name, (it, ld, per_method) in explain(batch, maps=raw).items():
            for m, (panel, heading) in per_method.items():
                if args.overwrite or not os.path.exists(output_path(args.out, it, m)):  # never write twice
                    npy = output_path(args.out, it, m)[:-4] + ".npy"
                    if args.save_maps and m in raw.get(name, {}) and (args.overwrite or not os.path.exists(npy)):
                        with jobs.atomic_path(npy) as tmp:  # before the PNG, which marks the item done
                            np.save(tmp, raw[name][m])
                    save_figure(output_path(args.out, it, m), panel, heading)
            raw.pop(name, None)
            rendered.append(it)
            if distributed.is_main() and len(overlays) < GRID_MAX:  # kept for grid.png only: bounded memory
                overlays[name] = (it, ld, {m: p[-1][1] for m, (p, _) in per_method.items() if m in map_methods})
        bar.update(len(batch))
    bar.close()

    # grid.png (process 0): the first GRID_MAX readable images in input order, whoever rendered them;
    # images not explained in this process are explained again in their original batch.
    grid_rows = []
    distributed.barrier("render-done")
    if len(map_methods) > 1 and distributed.is_main():
        for i in range(0, len(items), bs):
            if len(grid_rows) >= GRID_MAX:
                break
            batch = items[i : i + bs]
            if any(it.name not in overlays for it in batch):
                overlays.update({n: (it, ld, {m: p[-1][1] for m, (p, _) in pm.items() if m in map_methods})
                                 for n, (it, ld, pm) in explain(batch, False).items()})
            grid_rows += [(it.name, overlays[it.name][1].image, overlays[it.name][2]) for it in batch
                          if it.name in overlays][: GRID_MAX - len(grid_rows)]
    if grid_rows:
        save_grid(os.path.join(args.out, "grid.png"), grid_rows, map_methods)
    print(f"\nrendered {len(rendered)} images x {len(names)} methods -> {os.path.abspath(args.out)}/"
          + (" (+ grid.png)" if grid_rows else ""))
    if done_before:
        print(f"already done before: {done_before}")
    if failures:
        print(f"skipped {len(failures)} unreadable inputs:")
        for what, why in failures:
            print(f"  {what}: {why}")
    return 1 if todo and not rendered else 0


if __name__ == "__main__":
    sys.exit(main())
