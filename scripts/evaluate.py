"""Faithfulness of CAM methods: methods x images x model -> a table of metrics (method by metric).

    python scripts/evaluate.py --model efficientnet_lite0 --data ../shared/data/imagenet-samples \
        --limit 200 --methods all --out results/eval-lite0

For every method (plus a random-map baseline row) and every image it computes Average Drop %,
% Increase in Confidence, deletion and insertion AUC and ROAD (MoRF / LeRF / combined) with
`jaxcam.metrics.all_metrics`, batched and jitted, sharded over the local devices when there are
several. It prints the table and writes into --out:
  table.csv, table.md     mean over the images per method, and seconds per image to compute the
                          maps (batches after the first, so without compilation, when there are any)
  curves.png              mean deletion and insertion curves per method
  cache/<config>/<method>/<image>.npz   per-image results, written atomically: a restarted run
                          skips the images already done with the same configuration.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time

import numpy as np

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

import jaxcam
import jaxcam.metrics
from jaxcam import images as images_lib, jobs
from jaxcam.methods import registry
from jaxcam.sharding import batch_mesh


def exported_methods():
    return {n: registry.get(n).fn for n in registry.names(output="map")}
from jaxcam._src import maps as maps_lib

RANDOM = "random"
EXTS = (".jpg", ".jpeg", ".png", ".bmp")
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet_lite0", help="a jaxcam.models.load name")
    p.add_argument("--weights", default="pretrained", help="'pretrained', a checkpoint path, or 'random'")
    p.add_argument("--data", required=True, help="a folder of images (optionally labels.tsv: file, class_index)")
    p.add_argument("--limit", type=int, default=None, help="evaluate a fixed, evenly spaced subset of this many images")
    p.add_argument("--size", type=int, default=224, help="input size: resize the short side, center crop")
    p.add_argument("--methods", default="all", help="comma-separated jaxcam method names, or 'all'")
    p.add_argument("--layer", default=None, help="layer to explain (default: the model's)")
    p.add_argument("--targets", choices=("pred", "label"), default="pred",
                   help="explain the predicted class (default) or the labels.tsv class")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--score", default="softmax", choices=("softmax", "logit", "sigmoid"))
    p.add_argument("--steps", type=int, default=20, help="deletion/insertion steps (0: skip the curves)")
    p.add_argument("--baseline", default="blur", choices=jaxcam.metrics.BASELINES)
    p.add_argument("--percentiles", type=float, nargs="*", default=[20, 50, 80],
                   help="ROAD percentiles (none: skip ROAD)")
    p.add_argument("--road-tol", type=float, default=1e-5, help="conjugate-gradient tolerance of the imputer")
    p.add_argument("--seed", type=int, default=0, help="seeds the random maps and the ROAD noise")
    p.add_argument("--out", default="results/evaluate")
    p.add_argument("--report-only", action="store_true",
                   help="compute nothing: tabulate what the cache holds (e.g. while a run is going on)")
    return p.parse_args(argv)


# ------------------------------------------------------------------ inputs --------------------


def available_methods() -> list:
    """Every CAM method exported by jaxcam (by signature), sorted."""
    return sorted(exported_methods())


def returns_maps(name: str, model, size: int, layer) -> bool:
    """Whether the method returns (N, H, W) maps for this model (abstract evaluation, no compute)."""
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    try:
        out = jax.eval_shape(lambda x: getattr(jaxcam, name)(model, x, layer=layer), x)
    except Exception as err:  # a method that does not apply to this model (e.g. CAM without a GAP+FC head)
        print(f"skipping {name}: {str(err).splitlines()[0][:160]}", file=sys.stderr)
        return False
    return getattr(out, "shape", None) == (1, size, size)


def resolve_methods(spec: str, model, size: int, layer) -> list:
    """Method names to run (+ the random baseline). 'all': every exported method that returns maps."""
    known = available_methods()
    if spec == "all":
        names = [n for n in known if returns_maps(n, model, size, layer)]
    else:
        names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n != RANDOM and n not in known]
    if bad:
        raise SystemExit(f"unknown method(s) {', '.join(bad)}; available: {', '.join(known)} (and '{RANDOM}')")
    return [n for n in names if n != RANDOM] + [RANDOM]


def list_images(folder: str, limit) -> list:
    if not os.path.isdir(folder):
        raise SystemExit(f"--data {folder!r} is not a folder of images")
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith(EXTS))
    if not files:
        raise SystemExit(f"no images ({', '.join(EXTS)}) in {folder!r}")
    if limit and limit < len(files):
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    return files


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


def load_image(path: str, size: int) -> np.ndarray:
    """uint8 (size, size, 3): short side resized to size * 256 / 224, then center crop."""
    from PIL import Image

    with Image.open(path) as img:
        return images_lib.fit(img, size, crop_fraction=224 / 256)


def load_model(name: str, weights: str):
    return jaxcam.models.load(name, weights=None if weights == "random" else weights)


# ------------------------------------------------------------------ computing ----------------


def random_maps(key, x, cells: int = 7):
    """Random maps with a CAM's smoothness: uniform noise at cells x cells, upsampled, min-maxed."""
    raw = jax.random.uniform(key, (x.shape[0], cells, cells))
    return maps_lib.finish(raw, x.shape[1:3], "none")


def make_sharding(batch_size: int):
    """Shard the batch axis over the local devices (None with one device)."""
    devices = jax.local_devices()
    if len(devices) == 1:
        return None
    if batch_size % len(devices):
        raise SystemExit(f"--batch-size {batch_size} must be a multiple of the {len(devices)} local devices")
    return NamedSharding(batch_mesh(devices), PartitionSpec("batch"))


def config_key(args, model_name: str) -> str:
    cfg = dict(model=model_name, weights=args.weights, size=args.size, layer=args.layer, targets=args.targets,
               score=args.score, steps=args.steps, baseline=args.baseline, percentiles=list(args.percentiles),
               road_tol=args.road_tol, seed=args.seed)
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


def atomic_write(path: str, write) -> None:
    """``write(file)`` into `path` atomically (jaxcam.jobs: temp file beside it, fsync, rename)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with jobs.atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def cache_path(cache: str, method: str, image: str) -> str:
    return os.path.join(cache, method, os.path.splitext(image)[0] + ".npz")


def evaluate(args, model, files, labels, methods, cache, progress=True):
    """Fill the cache with one .npz per (method, image); returns the seconds spent computing maps."""
    from tqdm import tqdm

    sharding = make_sharding(args.batch_size)
    bs = args.batch_size
    batches = [files[i : i + bs] for i in range(0, len(files), bs)]
    todo = [(m, b) for m in methods for b in batches if any(not os.path.exists(cache_path(cache, m, f)) for f in b)]
    skipped = len(methods) * len(batches) - len(todo)
    bar = tqdm(todo, desc="evaluate", unit="batch", disable=not progress, file=sys.stderr)
    if skipped:
        bar.write(f"{skipped} of {len(methods) * len(batches)} (method, batch) pairs already cached in {cache}")
    base_key = jax.random.key(args.seed)
    compiled = set()  # methods already run once in this process: later batches are timed without compiling
    for method, batch in bar:
        bar.set_postfix(method=method)
        padded = batch + [batch[-1]] * (bs - len(batch))  # one compiled shape for every batch
        images = np.stack([load_image(os.path.join(args.data, f), args.size) for f in padded])
        x = model.preprocess(images)
        if sharding is not None:
            x = jax.device_put(x, sharding)
        index = files.index(batch[0])
        if args.targets == "label":
            missing = [f for f in padded if f not in labels]
            if missing:
                raise SystemExit(f"--targets label: {missing[0]} has no row in {args.data}/labels.tsv")
            targets = jnp.asarray([labels[f] for f in padded], jnp.int32)
        else:
            targets = None  # the predicted class: methods and metrics take the argmax themselves

        start = time.perf_counter()
        if method == RANDOM:
            maps = random_maps(jax.random.fold_in(base_key, index), x)
        else:
            maps = getattr(jaxcam, method)(model, x, layer=args.layer, targets=targets)
        maps = jax.block_until_ready(maps)
        seconds = (time.perf_counter() - start) / len(padded)
        warm = method in compiled
        compiled.add(method)
        if getattr(maps, "shape", None) != x.shape[:3]:
            shape = getattr(maps, "shape", type(maps).__name__)
            raise SystemExit(f"{method} returned {shape}, not maps {x.shape[:3]}: leave it out of --methods")
        results = jaxcam.metrics.all_metrics(
            model, x, maps, targets, score=args.score, steps=args.steps, baseline=args.baseline,
            percentiles=args.percentiles, key=jax.random.fold_in(base_key, 1_000_000 + index), tol=args.road_tol,
        )
        results = {k: np.asarray(v) for k, v in results.items()}
        for i, f in enumerate(batch):
            row = {k: v[i] for k, v in results.items()}
            row["seconds"] = np.float32(seconds)
            row["warm"] = np.bool_(warm)
            atomic_write(cache_path(cache, method, f), lambda fh, row=row: np.savez(fh, **row))
    bar.close()


def collect(methods, files, cache) -> dict:
    """method -> {metric: per-image values stacked (I, ...)} from the cached images (methods with none
    are left out)."""
    table = {}
    for m in methods:
        rows = [dict(np.load(p)) for p in (cache_path(cache, m, f) for f in files) if os.path.exists(p)]
        if rows:
            table[m] = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    return table


# ------------------------------------------------------------------ reporting ---------------


def summary_rows(table: dict) -> list:
    """One row per method: mean over the images of each metric (ROAD: also over percentiles)."""
    rows = []
    for method, values in table.items():
        row = {"method": method, "images": len(values["average_drop"])}
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
        lines.append("| " + " | ".join(cells + [f"{r['seconds_per_image']:.3f}"]) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(out: str, rows: list, table: dict, steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fields = ["method", "images"] + [k for k, _ in COLUMNS] + ["seconds_per_image"]

    def write_csv(f):
        import io

        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        f.write(text.getvalue().encode())

    atomic_write(os.path.join(out, "table.csv"), write_csv)
    atomic_write(os.path.join(out, "table.md"), lambda f: f.write(markdown(rows).encode()))

    if "deletion" not in next(iter(table.values())):
        return  # --steps 0: no curves
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


def main(argv=None, progress=True) -> list:
    args = parse_args(argv)
    started = time.perf_counter()
    files = list_images(args.data, args.limit)
    labels = read_labels(args.data)
    model = load_model(args.model, args.weights)
    methods = resolve_methods(args.methods, model, args.size, args.layer)
    cache = os.path.join(args.out, "cache", config_key(args, args.model))
    print(f"{args.model}: {len(files)} images x {len(methods)} methods ({', '.join(methods)}) on "
          f"{len(jax.local_devices())} device(s); cache {cache}", file=sys.stderr)
    if not args.report_only:
        evaluate(args, model, files, labels, methods, cache, progress)
    table = collect(methods, files, cache)
    if not table:
        raise SystemExit(f"nothing cached yet in {cache}")
    rows = summary_rows(table)
    write_outputs(args.out, rows, table, args.steps)
    print(markdown(rows))
    print(f"wall time {time.perf_counter() - started:.1f} s; tables and curves.png in {args.out}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
