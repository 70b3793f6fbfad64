"""Faithfulness of CAM methods over a folder of images: methods x images x model -> a table (method by
metric), cached per image so a restarted run recomputes nothing. What ``jaxcam evaluate`` runs:

    settings = evaluation.Settings(data="imagenet-samples/", image_size=224)
    rows, failed = evaluation.run(settings, model, files, labels, methods, out="results/eval")

For every map method (plus a random-map baseline row) and every image it computes Average Drop %,
% Increase in Confidence, deletion and insertion AUC and ROAD (MoRF / LeRF / combined) with
`jaxcam.metrics.all_metrics`, batched by `jaxcam.explain_batches`. A method that fails is reported
loudly (a row with its error, a message on stderr); the others still run. Files in `out`:
  table.csv, table.md     mean over the images per method, and seconds per image to compute the
                          maps (batches after the first, so without compilation, when there are any)
  curves.png              mean deletion and insertion curves per method
  index.html              the table (mean and 95 % confidence interval, sortable) and every image's
                          maps with its scores (`jaxcam.viz.pages`)
  cache/<config>/<method>/<image>.npz   per-image results, written atomically (jaxcam.jobs), after
  cache/<config>/<method>/<image>.png   the map's heatmap, and cache/<config>/_images/<image>.jpg.
Several processes (`jaxcam.distributed`) each evaluate their share of whole batches; process 0
gathers the results and writes the tables once.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import itertools
import json
import os
import sys
import time
from typing import List, Optional

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from tqdm import tqdm

from jaxcam import distributed, jobs
from jaxcam import images as images_lib
from jaxcam._src import maps as maps_lib
from jaxcam._src.hints import ConfigError
from jaxcam.batching import Batch, explain_batches
from jaxcam.metrics.suite import all_metrics
from jaxcam.methods import registry
from jaxcam.viz import pages
from jaxcam.viz.heatmaps import heatmap

RANDOM = "random"
# Higher is better (+) or lower is better (-), for the table header.
COLUMNS = [
    ("average_drop", "Avg Drop % (-)"),
    ("increase_in_confidence", "Inc Conf % (+)"),
    ("deletion_auc", "Deletion AUC (-)"),
    ("insertion_auc", "Insertion AUC (+)"),
    ("road_morf", "ROAD MoRF (-)"),
    ("road_lerf", "ROAD LeRF (+)"),
    ("road_combined", "ROAD comb. (+)"),
]


@dataclasses.dataclass
class Settings:
    """What to compute (``jaxcam evaluate``'s flags of the same names); all of it keys the cache."""

    data: str
    weights: Optional[str] = "pretrained"
    image_size: int = 224
    layer: Optional[str] = None
    targets: str = "pred"  # "pred" (the predicted class) or "label" (labels.tsv)
    batch_size: int = 8
    chunk_size: Optional[int] = None
    score: str = "softmax"
    steps: int = 20
    baseline: str = "blur"
    percentiles: List[float] = dataclasses.field(default_factory=lambda: [20, 50, 80])
    road_tol: float = 1e-5
    seed: int = 0
    bf16: bool = False  # explain with model.with_compute_dtype("bfloat16"); the metrics score the float32 model


# ------------------------------------------------------------------ inputs --------------------


def resolve_methods(spec: str, notes: list = None, option: str = "--method") -> list:
    """Registry methods to run (the random baseline is added by `run`). 'all': every map method; the
    others are named on stderr (they return attributions or several maps, which these metrics do not take)."""
    if spec.strip() == "all":
        others = [n for n in registry.names(any_model=True) if registry.get(n).output != "map"]
        note = f"note: not evaluated (not (N, H, W) maps): {', '.join(others)}"
        notes.append(note) if notes is not None else print(note, file=sys.stderr)
        return [registry.get(n) for n in registry.names(output="map", any_model=True)]
    names = [s.strip() for s in spec.split(",") if s.strip() and s.strip() != RANDOM]
    chosen = registry.parse(",".join(names), option) if names else []
    for m in chosen:
        if m.output != "map":
            raise ConfigError(f"{option}: {m.name} returns {m.output}s, not maps; evaluate takes map methods: "
                             f"{', '.join(registry.names(output='map'))}")
    return chosen


def list_images(folder: str, limit) -> list:
    if not os.path.isdir(folder):
        raise ConfigError(f"--data {folder!r} is not a folder of images")
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(images_lib.IMAGE_SUFFIXES))
    if not files:
        raise ConfigError(f"--data {folder!r}: no images ({', '.join(images_lib.IMAGE_SUFFIXES)})")
    if limit and limit < len(files):
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    readable = []
    for f in files:  # unreadable files (truncated, not images, decompression bombs): one line each, skipped
        error = images_lib.load(os.path.join(folder, f)).error
        if error:
            print(f"skipped {os.path.join(folder, f)}: {error}", file=sys.stderr)
        else:
            readable.append(f)
    if not readable:
        raise ConfigError(f"--data {folder!r}: none of the {len(files)} images could be read")
    return readable


def read_labels(folder: str) -> dict:
    path = os.path.join(folder, "labels.tsv")
    if not os.path.exists(path):
        return {}
    labels = {}
    with open(path) as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) >= 2 and row[1].strip().isdigit():
                labels[row[0]] = int(row[1])
    return labels


def predicted_classes(model, paths, size: int, batch_size: int) -> np.ndarray:
    """The model's top-1 class of each image file, `batch_size` images per forward."""
    classes = []
    for i in range(0, len(paths), batch_size):
        pixels = np.stack([load_image(path, size) for path in paths[i : i + batch_size]])
        classes.append(np.asarray(jnp.argmax(model(model.preprocess(pixels)), axis=-1), np.int32))
    return np.concatenate(classes)


def load_image(path: str, size: int) -> np.ndarray:
    """uint8 (size, size, 3) as a person sees the file: short side resized to size * 256 / 224, center crop."""
    loaded = images_lib.load(path, size, crop_fraction=224 / 256)
    if loaded.error:
        raise ValueError(f"{path}: {loaded.error}")
    return loaded.image


# ------------------------------------------------------------------ computing ----------------


def random_maps(key, x, cells: int = 7):
    """Random maps with a CAM's smoothness: uniform noise at cells x cells, upsampled, min-maxed."""
    raw = jax.random.uniform(key, (x.shape[0], cells, cells))
    return maps_lib.finish(raw, x.shape[1:3], "none")


def config_key(args: Settings, model_name: str) -> str:
    cfg = dict(model=model_name, weights=args.weights, size=args.image_size, layer=args.layer, targets=args.targets,
               score=args.score, steps=args.steps, baseline=args.baseline, percentiles=list(args.percentiles),
               road_tol=args.road_tol, seed=args.seed, chunk_size=args.chunk_size)
    if args.bf16:  # only when set: float32 runs keep the keys (and caches) they had before the option existed
        cfg["bf16"] = True
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


def atomic_write(path: str, write) -> None:
    """``write(file)`` into `path` atomically (jaxcam.jobs: temp file beside it, fsync, rename)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with jobs.atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def cache_path(cache: str, method: str, image: str, suffix: str = ".npz") -> str:
    return os.path.join(cache, method, os.path.splitext(image)[0] + suffix)


def picture_path(cache: str, method: Optional[str], image: str) -> str:
    """The page's pictures: a method's heatmap of `image` (PNG), or with `method` None the image itself (JPEG)."""
    return cache_path(cache, "_images", image, ".jpg") if method is None else cache_path(cache, method, image, ".png")


def evaluate(args: Settings, model, files, labels, methods, cache, progress=True) -> dict:
    """Fill the cache with one .npz per (method, image). Returns {method: error message} of the methods
    that failed (they are reported, the others go on). `methods`: {name: bound call (`Method.bind`)}."""
    bs = args.batch_size
    failed = {}
    base_key = jax.random.key(args.seed)
    explained = model.with_compute_dtype("bfloat16") if args.bf16 else model
    names = list(methods) + [RANDOM]
    mine = files[distributed.share(len(files), block=bs)]  # whole batches: a batch is never split
    for name in names:
        # Whole fixed batches with a missing result (a resumed run computes each image in the same batch,
        # with the same random keys, as an uninterrupted one); only the missing files are written.
        todo = [f for i in range(0, len(mine), bs) for f in mine[i : i + bs]
                if jobs.pending(mine[i : i + bs], lambda g: [cache_path(cache, name, g)])]
        if not todo:
            continue
        if args.targets == "label":
            missing = [f for f in todo if f not in labels]
            if missing:
                raise ConfigError(f"--targets label: {missing[0]} has no row in {args.data}/labels.tsv")
        targets = np.asarray([labels[f] for f in todo], np.int32) if args.targets == "label" else None
        if targets is None and args.bf16 and name != RANDOM:  # the float32 model's class, which the metrics score
            targets = predicted_classes(model, [os.path.join(args.data, f) for f in todo], args.image_size, bs)
        images = (load_image(os.path.join(args.data, f), args.image_size) for f in todo)
        bar = tqdm(total=len(todo), desc=name, unit="img", disable=not progress, file=sys.stderr)
        try:
            if name == RANDOM:
                stream = _random_batches(model, images, bs, base_key, files, todo)
            else:
                stream = explain_batches(methods[name], explained, images, batch_size=bs, layer=args.layer,
                                         targets=targets, logits=False)
            compiled = False
            start = time.perf_counter()
            for batch in stream:
                maps = jax.block_until_ready(batch.maps)
                seconds = (time.perf_counter() - start) / batch.count
                batch_files = todo[batch.start : batch.start + batch.count]
                pixels = np.stack([load_image(os.path.join(args.data, f), args.image_size) for f in batch_files])
                x = model.preprocess(pixels)
                t = None if targets is None else jnp.asarray(targets[batch.start : batch.start + batch.count])
                index = files.index(batch_files[0])
                # the last, partial batch is padded as explain_batches pads it: the metrics compile once
                results = all_metrics(
                    model, _padded(x, bs), _padded(maps, bs), _padded(t, bs), score=args.score, steps=args.steps,
                    baseline=args.baseline, percentiles=args.percentiles,
                    key=jax.random.fold_in(base_key, 1_000_000 + index), tol=args.road_tol,
                )
                results = {k: np.asarray(v)[: batch.count] for k, v in results.items()}
                for i, f in enumerate(batch_files):
                    row = {k: v[i] for k, v in results.items()}
                    row["seconds"] = np.float32(seconds)
                    row["warm"] = np.bool_(compiled)
                    if not os.path.exists(cache_path(cache, name, f)):  # never written twice
                        for method, picture in ((None, pixels[i]), (name, heatmap(np.asarray(maps[i])))):
                            if not os.path.exists(picture_path(cache, method, f)):  # before the .npz
                                pages.save_image(picture_path(cache, method, f), picture)
                        atomic_write(cache_path(cache, name, f), lambda fh, row=row: np.savez(fh, **row))
                compiled = True
                bar.update(batch.count)
                start = time.perf_counter()
        except ConfigError:
            raise
        except Exception as err:  # a method that cannot run here: loud, in the table, exit status 1
            message = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
            failed[name] = message
            print(f"FAILED {name}: {message}", file=sys.stderr)
        finally:
            bar.close()
    return failed


def _padded(a, size: int):
    """`a` with copies of its last row appended up to `size` rows (None stays None)."""
    if a is None or len(a) >= size:
        return a
    return jnp.concatenate([a, jnp.repeat(a[-1:], size - len(a), axis=0)])


def _random_batches(model, images, bs, base_key, files, todo):
    """Batches of random maps (the baseline row), in the Batch format of explain_batches."""
    it = iter(images)
    start = 0
    while True:
        chunk = list(itertools.islice(it, bs))
        if not chunk:
            return
        index = files.index(todo[start])
        x = np.zeros((len(chunk), *chunk[0].shape), np.float32)
        yield Batch(start, len(chunk), random_maps(jax.random.fold_in(base_key, index), x), None)
        start += len(chunk)


def _merge(tables: list, names, failed) -> dict:
    """The tables of the processes' shares (in file order) -> one table, as `collect` over all files."""
    merged = {}
    for m in names:
        if m in failed:
            merged[m] = {"error": failed[m]}
            continue
        parts = [t[m] for t in tables if m in t and "error" not in t[m]]
        if parts:
            merged[m] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return merged


def collect(names, files, cache, failed=None) -> dict:
    """method -> {metric: per-image values stacked (I, ...)} from the cached images; failed methods
    -> {"error": message}. Methods with nothing cached and no error are left out."""
    table = {}
    for m in names:
        if failed and m in failed:
            table[m] = {"error": failed[m]}
            continue
        rows = [dict(np.load(p)) for p in (cache_path(cache, m, f) for f in files) if os.path.exists(p)]
        if rows:
            table[m] = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    return table


# ------------------------------------------------------------------ reporting ---------------


def summary_rows(table: dict) -> list:
    """One row per method: mean over the images of each metric (ROAD: also over percentiles)."""
    rows = []
    for method, values in table.items():
        if "error" in values:
            rows.append({"method": method, "images": 0, **{k: float("nan") for k, _ in COLUMNS},
                         "seconds_per_image": float("nan"), "error": values["error"]})
            continue
        row = {"method": method, "images": len(values["average_drop"]), "error": ""}
        for key, _ in COLUMNS:
            row[key] = float(np.mean(values[key])) if key in values else float("nan")
        warm = values["warm"]  # batches timed after compilation; the first batch's time includes it
        row["seconds_per_image"] = float(np.mean(values["seconds"][warm] if warm.any() else values["seconds"]))
        rows.append(row)
    return rows


def markdown(rows: list) -> str:
    columns = [(k, t) for k, t in COLUMNS if any(not np.isnan(r[k]) for r in rows)]  # skipped metrics: no column
    head = ["method", "images"] + [title for _, title in columns] + ["s/img (map)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], str(r["images"])] + [f"{r[k]:.4f}" if "auc" in k or "road" in k else f"{r[k]:.2f}" for k, _ in columns]
        if r.get("error"):
            cells = [r["method"], "FAILED: " + r["error"].replace("|", "/")] + [""] * len(columns)
        lines.append("| " + " | ".join(cells + [f"{r['seconds_per_image']:.3f}"]) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(out: str, rows: list, table: dict, steps: int) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fields = ["method", "images"] + [k for k, _ in COLUMNS] + ["seconds_per_image", "error"]

    def write_csv(f):
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        f.write(text.getvalue().encode())

    atomic_write(os.path.join(out, "table.csv"), write_csv)
    atomic_write(os.path.join(out, "table.md"), lambda f: f.write(markdown(rows).encode()))

    table = {m: v for m, v in table.items() if "error" not in v}
    if not table or "deletion" not in next(iter(table.values())):
        return  # --steps 0 (or every method failed): no curves
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    frac = np.linspace(0, 1, steps + 1)
    for method, values in table.items():
        style = dict(color="k", linestyle="--") if method == RANDOM else {}
        for ax, name in zip(axes, ("deletion", "insertion")):
            mean = values[name].mean(axis=0)
            ax.plot(frac, mean, label=f"{method} ({np.mean(values[name + '_auc']):.3f})", **style)
    for ax, name in zip(axes, ("Deletion (lower AUC is better)", "Insertion (higher AUC is better)")):
        ax.set_title(name)
        ax.set_xlabel("fraction of pixels removed" if "Deletion" in name else "fraction of pixels inserted")
        ax.set_ylabel("mean score of the explained class")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(os.path.join(out, "curves.png"), lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def run(args: Settings, model, files, labels, methods, out: str, progress: bool = True, report_only: bool = False,
        model_key: Optional[str] = None) -> tuple:
    """Compute what the cache lacks, gather the processes' shares, write the tables: (rows, failed).

    `methods`: {name: bound call} (`Method.bind`: options checked once); `model_key` names the model
    in the cache key (default its name). Non-main processes return ``([], failed)``."""
    started = time.perf_counter()
    name = model.info.name
    cache = os.path.join(out, "cache", config_key(args, model_key or name))
    names = list(methods) + [RANDOM]
    print(f"{name}: {len(files)} images x {len(names)} methods ({', '.join(names)}) on "
          f"{len(jax.local_devices())} device(s); cache {cache}", file=sys.stderr)
    if distributed.is_main():
        jobs.clean_temp(out)  # temp files of a killed run
    distributed.barrier("evaluate-start")
    failed = {} if report_only else evaluate(args, model, files, labels, methods, cache, progress)
    # Every process reads its own share's results; process 0 gathers them (jax.distributed) and writes.
    shares = distributed.gather_objects((failed, collect(names, files[distributed.share(len(files),
                                                                                        block=args.batch_size)],
                                                         cache, failed)))
    failed = {k: v for f, _ in shares for k, v in f.items()}
    table = _merge([t for _, t in shares], names, failed)
    if not distributed.is_main():
        return [], failed
    if not table:
        raise ConfigError(f"nothing cached yet in {cache}")
    rows = summary_rows(table)
    write_outputs(out, rows, table, args.steps)
    pages.evaluate_page(out, cache, files, rows, table, COLUMNS,
                        lambda m, f: picture_path(cache, m, f) if os.path.exists(picture_path(cache, m, f)) else None)
    print(markdown(rows))
    for method, message in failed.items():
        print(f"error: {method} failed: {message}", file=sys.stderr)
    print(f"wall time {time.perf_counter() - started:.1f} s; tables, curves.png and index.html in {out}",
          file=sys.stderr)
    return rows, failed
