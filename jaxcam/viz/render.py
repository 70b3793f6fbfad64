"""Explain many images into a folder: one PNG per image and method (original | heatmap | overlay), and
a grid of images x methods. What ``jaxcam render`` runs, callable from Python:

    items, unmatched = render.file_items(["photos/"], model.info.class_names)
    method = jaxcam.registry.get("grad_cam")
    render.render(render.Job(out="/tmp/cams"), model, 224, None, [method], {"grad_cam": {}}, items, unmatched)

Files: ``<out>/<image>_<method>.png``; with several map methods also ``<out>/grid.png``; and the page
``<out>/index.html`` (`jaxcam.viz.pages`, from ``<out>/page/``: each original and each heatmap). Outputs are
written atomically, a rerun skips finished images (``overwrite`` redoes them), and several processes
(`jaxcam.distributed`) each render their share of whole batches; process 0 writes grid.png.
Unreadable files are reported and skipped.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import jax
import numpy as np
from PIL import Image
from tqdm import tqdm

from jaxcam import data, distributed, jobs
from jaxcam import images as images_lib
from jaxcam._src import blank
from jaxcam._src.hints import ConfigError
from jaxcam._src.split import layer_shapes
from jaxcam.batching import explain_batches
from jaxcam.models import classes as classes_lib
from jaxcam.viz import pages
from jaxcam.viz.figures import panels, save_figure, save_grid, title

DEFAULT_MODEL = "efficientnet_lite0"
GRID_MAX = 16  # images in grid.png


@dataclasses.dataclass
class Job:
    """Where and how to render (the command's flags of the same names)."""

    out: str = "outputs/renders"
    batch_size: int = 8
    layer: Optional[str] = None
    colormap: str = "jet"
    alpha: float = 0.5
    overwrite: bool = False
    save_maps: bool = False
    weights: Optional[str] = None  # recorded in the folder's manifest (a resumed run must match)
    checkpoint: Optional[str] = None


@dataclasses.dataclass
class Pick:
    """Which images of a dataset split: a class filter, then given indices or N at random (seeded)."""

    dataset: str
    flag: str = "--data"  # how the dataset was given, for messages
    split: str = "test"
    class_idx: Optional[str] = None
    index: Optional[List[int]] = None
    random: Optional[int] = None
    seed: int = 0


@dataclasses.dataclass
class Item:
    """One input image: a file (`path`) or an in-memory array (`array`), with its true class if known."""

    name: str
    path: Optional[str] = None
    array: Optional[np.ndarray] = None
    label: Optional[str] = None


# ------------------------------------------------------------------------------------- inputs

def label_of(folder: str, class_names) -> Optional[str]:
    """The class a folder name stands for: one of `class_names`, or an ImageNet WordNet id (n01440764)."""
    lowered = {n.lower(): n for n in class_names}
    if folder.lower() in lowered:
        return lowered[folder.lower()]
    if folder.startswith("n") and folder[1:].isdigit():  # a WordNet id: its ImageNet class
        wnids = classes_lib.imagenet_wnids()
        if folder not in wnids:
            return None
        if len(class_names) == 1000:
            return class_names[wnids.index(folder)]
        # a model trained on a few WordNet-id folders carries their human names (as jaxcam.data gives them)
        return lowered.get(classes_lib.imagenet_names()[wnids.index(folder)].lower())
    return None


def file_items(inputs: List[str], class_names) -> tuple:
    """Items from files/folders/globs and the inputs that matched nothing; true class = the parent
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


def dataset_items(args: Pick, class_names) -> List[Item]:
    """The picked images of the dataset's split: a folder tree is listed (read lazily); an archive or
    a tfds name is read with `jaxcam.data`."""
    spec = args.dataset
    if os.path.isdir(spec):
        root = Path(spec) / args.split
        if not root.is_dir():
            splits = sorted(p.name for p in Path(spec).iterdir() if p.is_dir())
            raise ConfigError(f"--split {args.split!r}: no folder {root}; splits there: {', '.join(splits) or 'none'}")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        files = [(path, c) for c in classes for path in images_lib.expand([str(root / c)])[0]]
        labels = np.asarray([classes.index(c) for _, c in files], int)
        chosen = pick(labels, classes, args)
        return [Item(f"{files[i][1]}_{Path(files[i][0]).stem}", path=files[i][0],
                     label=label_of(files[i][1], class_names) or files[i][1]) for i in chosen]
    try:
        ds = data.load_cifar10(None if spec.lower() == "cifar10" else spec, args.split)
    except (data.DataNotFoundError, ValueError) as err:
        raise ConfigError(f"{args.flag} {spec!r}: {err}") from None
    chosen = pick(np.asarray(ds.labels), ds.class_names, args)
    return [Item(f"{args.split}_{i:05d}", array=ds.images[i], label=ds.class_names[int(ds.labels[i])])
            for i in chosen]


def pick(labels: np.ndarray, class_names, args) -> list:
    """Indices into the split: --class-idx filters, then --index picks or --random N samples (seeded)."""
    pool = np.arange(len(labels))
    if args.class_idx is not None:
        c = classes_lib.class_index(args.class_idx, list(class_names), option="--class-idx", owner="the dataset")
        pool = pool[labels == c]
        if not len(pool):
            raise ConfigError(f"--class-idx {args.class_idx}: the split has no images of that class")
    if args.index is not None:
        bad = [i for i in args.index if i >= len(pool)]
        if bad:
            raise ConfigError(f"--index {bad[0]} is out of range: {len(pool)} images to choose from")
        return [int(pool[i]) for i in args.index]
    count = min(args.random or 8, len(pool))
    return sorted(int(i) for i in np.random.default_rng(args.seed).choice(pool, count, replace=False))


def load_item(item: Item, size: int):
    if item.path is not None:
        loaded = images_lib.load(item.path, size)
    else:
        loaded = images_lib.Loaded(item.name, images_lib.fit(Image.fromarray(item.array), size))
    loaded.label = item.label
    return loaded


# ------------------------------------------------------------------------------------- figures

def output_path(out: str, item: Item, method: str) -> str:
    return os.path.join(out, f"{item.name}_{method}.png")


# ----------------------------------------------------------------------------------------- run

def render(args: Job, model, size, target, chosen, options, items, unmatched) -> int:
    """Render `items` with the registry methods `chosen` and their (checked) `options` by name; returns
    the exit status (1 when nothing could be rendered)."""
    for spec in unmatched:
        print(f"warning: {spec!r} matched no file")
    if not items:
        print("error: no input images: pass image files, folders or globs (or --data)", file=sys.stderr)
        return 1
    names = [m.name for m in chosen]
    settings = {"model": model.info.name, "weights": args.checkpoint or args.weights or "pretrained",
                "layer": args.layer, "target": target, "image_size": size, "colormap": args.colormap,
                "alpha": args.alpha, "options": options}
    try:
        resuming = jobs.Manifest(args.out, "render.json").check_or_write(settings, overwrite=args.overwrite)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    # Fixed batches of the whole list (a resumed or multi-process run computes every image in the same
    # batch as one uninterrupted process); this process takes its share of whole batches.
    bs = args.batch_size
    outputs = lambda it: [output_path(args.out, it, m) for m in names] + [  # noqa: E731
        pages.original_path(args.out, it.name)] + [pages.cell_path(args.out, it.name, m) for m in names]
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
    calls = {m.name: m.bound(options[m.name]) for m in chosen}  # options were checked once, by the caller
    failures, rendered, overlays = [], [], {}
    cells = {}  # (image, method) -> what its page cell says (pages.save_cell)

    blank_reported = set()

    def report_blank(name, results):
        """A constant map is never silent: one line per method, naming the cause (jaxcam._src.blank)."""
        count = int(blank.constant(results, 2).sum())
        if not count or name in blank_reported:
            return
        blank_reported.add(name)
        layer = args.layer or model.info.default_layer
        shape = layer_shapes(model, (1, size, size, 3)).get(layer) if layer else None
        why = blank.cause(layer, shape[1:-1], options[name]) if shape is not None and len(shape) == 4 else \
            "see the FAQ (docs/faq.md: why is my map blank?)"
        tqdm.write(f"note: {name} gave {count} blank (constant) map(s) in a batch: {why}.")

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
                with warnings.catch_warnings():  # blank maps: reported below, one line per method
                    warnings.simplefilter("ignore", blank.BlankMapWarning)
                    (out,) = list(explain_batches(calls[m.name], model, pixels, batch_size=bs, layer=args.layer,
                                                  targets=target))
            except (ValueError, TypeError) as err:  # the method's own checks, e.g. a layer it cannot use
                raise ConfigError(f"{m.name} cannot explain {model.info.name} here: {err}") from None
            results = out.maps
            results = {k: np.asarray(v) for k, v in results.items()} if isinstance(results, dict) \
                else np.asarray(results)
            if m.output == "map" and report:
                report_blank(m.name, results)
            probs = np.asarray(jax.nn.softmax(out.logits, axis=-1))
            for i, (it, ld) in enumerate(good):
                one = {k: v[i] for k, v in results.items()} if isinstance(results, dict) else results[i]
                if maps is not None and m.output == "map":
                    maps.setdefault(it.name, {})[m.name] = np.asarray(one, np.float32)
                shown[it.name][2][m.name] = (panels(m.output, ld.image, one, args.colormap, args.alpha),
                                             title(model, m.name, probs[i], target, ld.label))
                explained = int(np.argmax(probs[i])) if target is None else int(target)
                if report:
                    cells[it.name, m.name] = {
                        "explained": model.class_name(explained), "score": float(probs[i, explained]),
                        "predicted": model.class_name(int(np.argmax(probs[i]))), "label": ld.label,
                        "heading": shown[it.name][2][m.name][1]}
        return shown

    bar = tqdm(total=sum(map(len, todo)), unit="img", desc="render", disable=not distributed.is_main())
    raw = {}  # --save-maps: item name -> {method: map}
    for batch in todo:
        for name, (it, ld, per_method) in explain(batch, maps=raw).items():
            if args.overwrite or not os.path.exists(pages.original_path(args.out, name)):
                pages.save_image(pages.original_path(args.out, name), ld.image)
            for m, (panel, heading) in per_method.items():
                info = cells.pop((name, m))
                if args.overwrite or not os.path.exists(pages.cell_path(args.out, name, m)):  # before the PNG
                    pages.save_cell(args.out, name, m, panel[1][1], info)
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
    if distributed.is_main():  # from the files of every process and every earlier (killed) run
        pages.render_page(args.out, [it.name for it in items], names, args.alpha)
    print(f"\nrendered {len(rendered)} images x {len(names)} methods -> {os.path.abspath(args.out)}/"
          + (" (+ grid.png)" if grid_rows else "") + "; open index.html")
    if done_before:
        print(f"already done before: {done_before}")
    if failures:
        print(f"skipped {len(failures)} unreadable inputs:")
        for what, why in failures:
            print(f"  {what}: {why}")
    return 1 if todo and not rendered else 0

