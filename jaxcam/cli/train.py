"""`jaxcam train`: train or fine-tune a jaxcam model on any labelled image data, then show where it fails.

    python scripts/train.py --data /path/to/tree.tar.gz --model resnet18 --pretrained pretrained \
        --image-size 160 --epochs 20 --early-stopping 3 --out /tmp/run
    python scripts/train.py --config configs/recipe_c_imagenette_resnet18.yaml --epochs 5   # flags override

Data (--data): an image-folder tree ``train/<class>/*`` plus ``val/<class>/*`` (or ``test/``) as a
directory, .tar(.gz) or .zip, images of any size and format; or a tensorflow-datasets name
(``cifar10``, ``imagenette/160px``, ``tfds:NAME``) downloaded and prepared when online. Class
folders named by WordNet id get their ImageNet names.

Run folder (--out): config.yaml (the resolved options: re-run with ``--config``), metrics.csv /
metrics.json, curves.png, confusion.png, per_class.csv, misclassified.png, cams.png (Grad-CAM of
the predicted class per stage), checkpoints/{last,best} (orbax). Re-running the same command
resumes from checkpoints/last: a kill loses at most the current epoch.

Bad options fail at once with one line on stderr and exit status 2; 0 means "none" for
--gallery, --early-stopping, --steps-per-epoch, --max-minutes, --train-limit, --val-limit.
"""
from __future__ import annotations

import functools
import math
import os
import sys
import time
from typing import Any, Dict, Optional, Sequence

from jaxcam import config as C
from jaxcam import jobs

SCHEDULES = ("cosine", "onecycle", "step", "plateau", "constant")


def augment_uint8(augment, image_size: int):
    """Jitted ``(key, uint8 images (B, h, w, 3)) -> float images 0..255 (B, size, size, 3)``: resize on
    the device to `image_size`, then `augment(key, x in [0, 1])`."""
    import jax
    import jax.numpy as jnp

    def run(k, images):
        x = images.astype(jnp.float32) / 255.0
        n, h, w, c = x.shape
        if (h, w) != (image_size, image_size):
            x = jax.image.resize(x, (n, image_size, image_size, c), "bilinear")
        return augment(k, x) * 255.0

    return jax.jit(run)


def _augment_check(spec):
    if spec is None:
        return None
    from jaxcam import augment

    try:
        augment.check_spec(spec)
    except ValueError as e:
        return str(e)
    return None


def _milestones_check(v):
    if v is None:
        return None
    try:
        ms = [int(x) for x in v]
    except (TypeError, ValueError):
        return f"must be a list of epoch numbers, got {v!r}"
    if any(m < 1 for m in ms) or ms != sorted(ms):
        return f"must be increasing epoch numbers >= 1, got {v!r}"
    return None


OPTIONS = (
    C.Option("config", str, None, "YAML file with any of these options (flags override it)", flag_only=True),
    C.Option("data", str, None, "image-folder tree (dir, .tar.gz, .zip) with train/<class>/* and val/ or test/, "
             "or a tensorflow-datasets name (cifar10, imagenette/160px)"),
    C.Option("val_split", str, "auto", "evaluation split: auto (val, else validation, else test), val, test"),
    C.Option("tfds_data_dir", str, None, "tensorflow-datasets data_dir (tfds names only)"),
    C.Option("download", bool, True, "tfds names: download and prepare when missing (fails at once offline)"),
    C.Option("model", str, "resnet18", "model name of jaxcam.models (resnet18, resnet18_cifar, resnet20, "
             "efficientnet_lite0, vgg16, ...)"),
    C.Option("pretrained", str, None, "weights: 'pretrained' (ImageNet / shipped weights), a .pth/.th path, "
             "or none (random init); a new head when the class count differs"),
    C.Option("image_size", int, None, "model input size in pixels (images resized on the device); default: "
             "the data's size when all images share one, else 224", check=C.at_least(8)),
    C.Option("load_size", int, None, "host-side size for splits of mixed image sizes (shorter side + centre "
             "crop); default: --image-size", check=C.at_least(8)),
    C.Option("epochs", int, 10, "training epochs", check=C.at_least(1)),
    C.Option("batch_size", int, 128, "images per step", check=C.at_least(1)),
    C.Option("optimizer", str, "sgd", "sgd (Nesterov) or adamw", choices=("sgd", "adamw")),
    C.Option("lr", float, None, "peak learning rate (default 0.1 sgd, 1e-3 adamw)", check=C.positive),
    C.Option("schedule", str, "cosine", "learning-rate schedule", choices=SCHEDULES),
    C.Option("warmup_epochs", float, 0.0, "linear warmup (cosine)", check=C.non_negative),
    C.Option("milestones", list, None, "step schedule: epochs after which lr *= gamma (default: 50%%, 75%%)",
             check=_milestones_check),
    C.Option("gamma", float, 0.1, "step schedule factor", check=C.positive),
    C.Option("plateau_patience", int, 2, "plateau schedule: epochs without val-loss improvement before lr *= "
             "plateau_factor", check=C.at_least(0)),
    C.Option("plateau_factor", float, 0.1, "plateau schedule factor", check=C.fraction),
    C.Option("weight_decay", float, 5e-4, "weight decay on kernels", check=C.non_negative),
    C.Option("momentum", float, 0.9, "SGD momentum", check=C.fraction),
    C.Option("label_smoothing", float, 0.0, "label smoothing", check=C.fraction),
    C.Option("augment", dict, {"random_crop": {}, "horizontal_flip": {}},
             "on-device augmentations in order: names (random_crop, horizontal_flip, random_resized_crop, "
             "shift_scale_rotate, coarse_dropout, cutout, color_jitter) or, in the config file, a mapping "
             "name: {params}; 'none' = no augmentation", check=_augment_check),
    C.Option("freeze", str, "none", "none | backbone (train the classifier only) | a layer path such as "
             "_blocks/14 or layer3: that layer and all before it are frozen and their features computed once"),
    C.Option("feature_views", int, 1, "--freeze LAYER: feature copies of the training set (view 0 plain, the "
             "others augmented with --augment); each epoch draws one per image", check=C.at_least(1)),
    C.Option("early_stopping", int, 0, "stop after this many epochs without improvement of --monitor (0 = off)",
             check=C.at_least(0)),
    C.Option("monitor", str, "val_acc", "metric for the best checkpoint and early stopping",
             choices=("val_acc", "val_loss")),
    C.Option("min_delta", float, 0.0, "smallest change of --monitor that counts as an improvement",
             check=C.non_negative),
    C.Option("bf16", bool, False, "bfloat16 forward/backward (params and updates stay float32)"),
    C.Option("seed", int, 0, "random seed (init, shuffling, augmentation)", check=C.at_least(0)),
    C.Option("train_limit", int, 0, "use a seeded subset of N training images (0 = all)", check=C.at_least(0)),
    C.Option("val_limit", int, 0, "evaluate on a seeded subset of N images (0 = all)", check=C.at_least(0)),
    C.Option("steps_per_epoch", int, 0, "batches per epoch (0 = the whole training set)", check=C.at_least(0)),
    C.Option("max_minutes", float, 0.0, "training-time budget in minutes (0 = none)", check=C.non_negative),
    C.Option("gallery", int, 10, "misclassified images in misclassified.png and cams.png (0 = no gallery, "
             "no CAM figure)", check=C.at_least(0)),
    C.Option("cam_layers", list, None, "layers for cams.png (default: the network's stages)"),
    C.Option("out", str, None, "run folder (created; an existing run in it is resumed)"),
)


def build_parser(prog: str = "train", defaults: Optional[Dict[str, Any]] = None,
                 description: str = __doc__) -> C.OneLineParser:
    return C.parser(prog, _options(defaults), description=description)


def _options(defaults: Optional[Dict[str, Any]] = None):
    import dataclasses

    defaults = defaults or {}
    return tuple(dataclasses.replace(o, default=defaults[o.name]) if o.name in defaults else o for o in OPTIONS)


# ---------------------------------------------------------------- validation (nothing read, nothing compiled)


def validate(cfg: Dict[str, Any], where: Dict[str, str], options) -> Dict[str, Any]:
    """Checks that need more than one option or a registry; raises `ConfigError` naming the option."""
    model_load = _registry()

    def err(name, text):
        return C.ConfigError(f"{C.label(where, options, name)}: {text}")

    for name in ("data", "out"):
        if not cfg.get(name):
            raise err(name, f"required; pass {C.label(where, options, name)} or set '{name}' in --config")
    from jaxcam.data.datasets import is_local

    data = cfg["data"]
    if is_local(data):
        if not os.path.exists(os.path.expanduser(data)):
            raise err("data", f"no such file or directory {data!r}; pass an image-folder tree (dir, .tar.gz, "
                              ".zip) or a tensorflow-datasets name such as cifar10")
        cfg["data"] = os.path.expanduser(data)
    if os.path.isfile(cfg["out"]):
        raise err("out", f"{cfg['out']!r} is a file; pass a folder for the run")
    model = str(cfg["model"])
    if model_load._ALIASES.get(model, model) not in model_load.REGISTRY:
        raise err("model", C.unknown_name("model", model, list(model_load.REGISTRY)))
    cfg["model"] = model_load._ALIASES.get(model, model)
    pre = cfg.get("pretrained")
    if pre is not None and str(pre).lower() in ("none", "null", "random", ""):
        cfg["pretrained"] = pre = None
    if pre is not None and pre not in ("pretrained", "torchvision") and not os.path.isfile(os.path.expanduser(pre)):
        raise err("pretrained", f"{pre!r} is not a file; pass 'pretrained', 'torchvision', a .pth/.th path or none")
    if cfg["val_split"] not in ("auto", "val", "validation", "test"):
        raise err("val_split", C.unknown_name("split", cfg["val_split"], ("auto", "val", "validation", "test")))
    if cfg["lr"] is None:
        cfg["lr"] = 0.1 if cfg["optimizer"] == "sgd" else 1e-3
    if cfg["schedule"] == "cosine" and cfg["warmup_epochs"] >= cfg["epochs"]:
        raise err("warmup_epochs", f"must be smaller than --epochs ({cfg['epochs']}), got {cfg['warmup_epochs']}")
    if cfg["milestones"] is not None:
        if cfg["schedule"] != "step":
            raise err("milestones", "only used by --schedule step")
        if any(int(m) >= cfg["epochs"] for m in cfg["milestones"]):
            raise err("milestones", f"must be below --epochs ({cfg['epochs']}), got {cfg['milestones']}")
        cfg["milestones"] = [int(m) for m in cfg["milestones"]]
    cfg["augment"] = _canonical_augment(cfg["augment"])
    freeze = str(cfg["freeze"])
    if freeze not in ("none", "backbone"):
        _check_layer_abstract(cfg["model"], freeze, cfg.get("image_size") or 64, err, "freeze")
    for layer in cfg["cam_layers"] or ():
        _check_layer_abstract(cfg["model"], str(layer), cfg.get("image_size") or 64, err, "cam_layers")
    if cfg["feature_views"] > 1 and freeze in ("none", "backbone") and where.get("feature_views") != "default":
        raise err("feature_views", "only used with --freeze LAYER (features computed once)")
    import jax

    n_dev = jax.local_device_count()
    if cfg["batch_size"] % n_dev:
        raise err("batch_size", f"{cfg['batch_size']} does not split over the {n_dev} local devices; "
                                f"use a multiple of {n_dev}")
    return cfg


def _registry():
    import importlib

    return importlib.import_module("jaxcam.models.loading")


def _canonical_augment(spec):
    from jaxcam import augment

    return augment.check_spec(spec or {})


def _abstract_model(name: str):
    import jax

    model_load = _registry()

    spec = model_load.REGISTRY[name]
    return jax.eval_shape(lambda: spec.constructor(num_classes=2, weights=None, class_names=()))


@functools.lru_cache(maxsize=16)
def _layer_names(model_name: str, size: int) -> tuple:
    """Module paths with a spatial output, from an abstract run (no weights, nothing compiled)."""
    import jax
    import jax.numpy as jnp

    model = _abstract_model(model_name)

    def run(variables, x):
        return model.module.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])

    _, state = jax.eval_shape(run, model.variables, jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
    names = []

    def walk(tree, path):
        for key, value in tree.items():
            if key == "__call__":
                if len(value) == 1 and len(getattr(value[0], "shape", ())) == 4:
                    names.append("/".join(path))
            elif isinstance(value, dict):
                walk(value, path + (key,))

    walk(state.get("intermediates", {}), ())
    return tuple(names)


def _check_layer_abstract(model_name, layer, size, err, option):
    valid = _layer_names(model_name, size)
    if "/".join(p for p in layer.replace(".", "/").split("/") if p) not in valid:
        raise err(option, f"unknown layer {layer!r} for {model_name}{C.closest(layer, valid)}; "
                          f"jaxcam.list_layers lists the {len(valid)} valid ones")


def validate_with_counts(cfg, where, options, n_val: int, n_train: int):
    """Combinations that need the split sizes (known after listing, before decoding)."""
    def err(name, text):
        return C.ConfigError(f"{C.label(where, options, name)}: {text}")

    val = min(n_val, cfg["val_limit"]) if cfg["val_limit"] else n_val
    train = min(n_train, cfg["train_limit"]) if cfg["train_limit"] else n_train
    if cfg["gallery"] > val and where.get("gallery", "default") in ("default", "preset"):
        cfg["gallery"] = val  # the default gallery shrinks to the evaluation set; an asked-for one does not
    if cfg["gallery"] > val:
        raise err("gallery", f"{cfg['gallery']} is more than the {val} evaluation images; use at most {val} "
                             "(0 = no gallery)")
    if cfg["batch_size"] > train:
        raise err("batch_size", f"{cfg['batch_size']} is more than the {train} training images")


# ---------------------------------------------------------------- entry point


def main(argv: Optional[Sequence[str]] = None, prog: str = "train", defaults: Optional[Dict[str, Any]] = None,
         description: str = __doc__) -> int:
    """Run the command; returns the exit status (0 ok, 2 bad input). Bugs raise (traceback, status 1)."""
    from jaxcam.data.sources import DataNotFoundError
    from jaxcam.train import CheckpointMismatchError

    from jaxcam._src.hostmem import reuse_host_memory

    reuse_host_memory(warn=False)  # before JAX runs: keep XLA's per-step buffers mapped (JAXCAM_REUSE_MEMORY=0: off)
    options = _options(defaults)
    args = C.parser(prog, options, description=description).parse_args(argv)
    try:
        cfg, where = C.resolve(options, args)
        cfg = validate(cfg, where, options)
        result = run(cfg, where, options)
    except (C.ConfigError, DataNotFoundError, CheckpointMismatchError) as e:
        sys.stderr.write(f"{prog}: error: {_one_line(e)}\n")
        return 2
    except ValueError as e:  # bad input found deeper (e.g. an unreadable image); one line too
        sys.stderr.write(f"{prog}: error: {_one_line(e)}\n")
        return 2
    return 0 if result is not None else 1


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


# ---------------------------------------------------------------- the run


def _bar(**kw):
    from tqdm import tqdm

    return tqdm(dynamic_ncols=True, mininterval=1.0, **kw)


def load_splits(cfg, where, options):
    from jaxcam import data as D

    data = cfg["data"]
    local = D.is_local(data)
    val_split = cfg["val_split"]
    if local:
        if val_split == "auto":
            val_split = D.eval_split(data)
        validate_with_counts(cfg, where, options, D.datasets.count_images(data, val_split),
                             D.datasets.count_images(data, "train"))
    elif val_split == "auto":
        val_split = "test" if data.split(":")[-1].split("/")[0] in ("cifar10", "cifar100", "mnist",
                                                                   "fashion_mnist") else "validation"
    size = cfg["load_size"] or cfg["image_size"]
    kw = dict(size=size, tfds_data_dir=cfg["tfds_data_dir"], download=cfg["download"], seed=cfg["seed"])
    train = D.load_dataset(data, "train", limit=cfg["train_limit"] or None,
                           progress=lambda total: _bar(total=total, desc="decode train", unit="img"), **kw)
    val = D.load_dataset(data, "val" if val_split == "validation" and not local else val_split,
                         limit=cfg["val_limit"] or None,
                         progress=lambda total: _bar(total=total, desc=f"decode {val_split}", unit="img"), **kw)
    if not local:
        validate_with_counts(cfg, where, options, len(val), len(train))
    if train.class_names != val.class_names:
        raise ValueError(f"{data}: train/ and {val_split}/ have different class folders "
                         f"({len(train.class_names)} vs {len(val.class_names)}); make them the same")
    return train, val, val_split


def run(cfg: Dict[str, Any], where=None, options=OPTIONS) -> Optional[dict]:
    """Train with the resolved, validated config `cfg`; returns a summary dict."""
    import jaxcam  # noqa: F401  (XLA flags before the backend starts)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcam import augment as A
    from jaxcam.data import prefetch
    from jaxcam import reports
    from jaxcam import train as T

    where = where or {}
    t_start = time.time()
    _check_existing_run(cfg)
    train, val, val_split = load_splits(cfg, where, options)
    image_size = cfg["image_size"] or (train.images.shape[1] if train.images.shape[1] == train.images.shape[2]
                                       else 224)
    cfg["image_size"] = int(image_size)
    out = cfg["out"]
    os.makedirs(out, exist_ok=True)
    jobs.clean_temp(out)  # temp files of a killed run
    C.dump(os.path.join(out, "config.yaml"), {k: v for k, v in cfg.items()})
    names = train.class_names
    print(f"data: {len(train)} train / {len(val)} {val_split} images {train.images.shape[1:]}, {len(names)} classes "
          f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); devices: {jax.local_device_count()} x "
          f"{jax.devices()[0].platform}", flush=True)

    model = T.build_model(cfg["model"], len(names), names, cfg["seed"], cfg["pretrained"], image_size)
    freeze = cfg["freeze"]
    prefix = None
    trainable = None
    if freeze == "backbone":
        head = tuple((model.info.classifier or "").split("/"))
        trainable = lambda path: tuple(path[:len(head)]) == head  # noqa: E731
    elif freeze != "none":
        prefix = T.FrozenPrefix(model, freeze, image_size)
        trainable = prefix.trainable

    bs = cfg["batch_size"]
    steps_per_epoch = max(len(train) // bs, 1)
    if cfg["steps_per_epoch"]:
        steps_per_epoch = min(steps_per_epoch, cfg["steps_per_epoch"])
    total = steps_per_epoch * cfg["epochs"]
    milestones = [m * steps_per_epoch for m in cfg["milestones"]] if cfg["milestones"] else None
    schedule = T.make_schedule(cfg["schedule"], cfg["lr"], total, int(cfg["warmup_epochs"] * steps_per_epoch),
                               milestones, cfg["gamma"])
    plateau = T.Plateau(cfg["plateau_factor"], cfg["plateau_patience"]) if cfg["schedule"] == "plateau" else None
    tx = T.make_optimizer(cfg["optimizer"], schedule, cfg["weight_decay"], cfg["momentum"], trainable=trainable,
                          lr_scale=plateau is not None)
    dtype = jnp.bfloat16 if cfg["bf16"] else jnp.float32

    checkpoints = T.Checkpoints(os.path.join(out, "checkpoints"))
    expect = {"model": cfg["model"], "num_classes": len(names), "image_size": int(image_size), "freeze": freeze}
    state = T.init_state(model, tx)
    history, start_epoch = [], 0
    resumed = checkpoints.restore_last(state, expect)
    if resumed:
        state, meta = resumed
        history, start_epoch = meta["history"], meta["epoch"] + 1
        if plateau is not None and meta.get("plateau"):
            plateau.load(meta["plateau"])
        print(f"resumed from {checkpoints.directory}/last after epoch {start_epoch}", flush=True)

    device_mesh = T.mesh()
    state = T.replicate(state, device_mesh)
    sign = 1.0 if cfg["monitor"] == "val_acc" else -1.0

    def score(h):
        return sign * h[cfg["monitor"]]

    best = max((score(h) for h in history), default=-math.inf)
    since_best = 0
    for h in history:
        since_best = 0 if score(h) >= best else since_best + 1

    key = jax.random.key(cfg["seed"])
    aug = A.pipeline(cfg["augment"])
    if prefix is not None:
        step, eval_step, train_x, train_y, val_x = _feature_mode(cfg, prefix, state, tx, train, val, aug, key,
                                                                 device_mesh, out)
    else:
        step = T.make_train_step(model, tx, image_size, cfg["label_smoothing"], dtype,
                                 train_batch_norm=freeze != "backbone", device_mesh=device_mesh, seed=cfg["seed"])
        eval_step = T.make_eval_step(model, image_size, dtype, device_mesh)
        train_x, train_y, val_x = train.images, train.labels, val.images
        if cfg["augment"]:
            augment_jit = augment_uint8(aug, image_size)

    views = cfg["feature_views"] if prefix is not None else 1
    meta_base = {**expect, "class_names": list(names), "config": _jsonable(cfg)}
    trained_seconds = sum(h["seconds"] for h in history)
    budget = 60 * cfg["max_minutes"] if cfg["max_minutes"] else None
    stopped = None
    for epoch in range(start_epoch, cfg["epochs"]):
        if cfg["early_stopping"] and since_best >= cfg["early_stopping"]:
            stopped = f"early stopping: {cfg['monitor']} has not improved for {since_best} epochs"
            break
        if budget is not None and trained_seconds >= budget:
            stopped = f"time budget of {cfg['max_minutes']} min used"
            break
        rng = np.random.default_rng(cfg["seed"] * 100_003 + epoch)
        n = len(train_y) // views
        order = rng.permutation(n)[:steps_per_epoch * bs]
        rows = order + n * rng.integers(0, views, len(order)) if views > 1 else order
        ekey = jax.random.fold_in(key, epoch)

        def host_batches():
            for i in range(steps_per_epoch):
                idx = np.sort(rows[i * bs:(i + 1) * bs])
                yield train_x[idx], train_y[idx]

        bar = _bar(total=steps_per_epoch * bs, desc=f"epoch {epoch + 1}/{cfg['epochs']}", unit="img",
                   unit_scale=False, leave=False)
        loss_sum = correct = seen = 0
        pending = []
        start = None
        i = -1
        for i, (xb, yb) in enumerate(prefetch(host_batches(), 3)):
            xb, yb = T.shard_batch(xb, yb, device_mesh=device_mesh)
            if prefix is None and cfg["augment"]:
                xb = augment_jit(jax.random.fold_in(ekey, i), xb)
            state, metrics = step(state, xb, yb)
            pending.append(metrics)
            if i == 0:
                jax.block_until_ready(metrics)
                start = time.perf_counter()  # excludes compilation
            out_of_time = budget is not None and trained_seconds + time.perf_counter() - start >= budget
            if len(pending) == 10 or i == steps_per_epoch - 1 or out_of_time:
                for m in jax.device_get(pending):
                    loss_sum += float(m["loss"]) * bs
                    correct += int(m["correct"])
                    seen += bs
                bar.update(len(pending) * bs)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
                pending = []
            if out_of_time:
                print(f"\ntime budget used after {i + 1} of {steps_per_epoch} steps of epoch {epoch + 1}", flush=True)
                break
        bar.close()
        seconds = time.perf_counter() - start
        logits = T.predict(eval_step, state.variables(), val_x, bs,
                           progress=lambda r: _bar(iterable=r, desc=f"evaluate {val_split}", unit="batch",
                                                   leave=False))
        record = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                  **_evaluate(logits, val.labels), "lr": float(schedule(max(int(state.step) - 1, 0)))
                  * (plateau.scale if plateau else 1.0), "seconds": seconds, "steps": i + 1,
                  "images_per_second": (i * bs) / max(seconds, 1e-9)}
        if plateau is not None:
            plateau.update(record["val_loss"])
            state = state.replace(opt_state=plateau.apply(state.opt_state))
        trained_seconds += seconds
        record["trained_minutes"] = trained_seconds / 60
        history.append(record)
        improved = score(record) > best + cfg["min_delta"]
        if improved:
            best = score(record)
            since_best = 0
            with jobs.atomic_path(os.path.join(out, "val_logits_best.npy")) as tmp:  # never a partial file
                np.save(tmp, logits)
        else:
            since_best += 1
        checkpoints.save(epoch, state, {**meta_base, "epoch": epoch, "history": history,
                                        "plateau": plateau.state_dict() if plateau else None,
                                        "val_acc": record["val_acc"]}, best=improved)
        reports.write_metrics(out, history)
        print(f"epoch {epoch + 1}/{cfg['epochs']}: train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f}"
              f" | {val_split} loss {record['val_loss']:.4f} acc {record['val_acc']:.4f} | lr {record['lr']:.2e} | "
              f"{record['images_per_second']:.0f} img/s, {seconds:.0f} s{' *best*' if improved else ''}", flush=True)
    checkpoints.wait()
    if stopped:
        print(stopped, flush=True)
        with open(os.path.join(out, "stopped.txt"), "w") as fh:
            fh.write(stopped + "\n")
    if not history:
        raise ValueError("no epoch was trained (time budget 0?)")

    best_model = T.load_checkpoint(out)
    logits_path = os.path.join(out, "val_logits_best.npy")
    if os.path.isfile(logits_path):
        logits = np.load(logits_path)
    else:  # pragma: no cover - resumed from a run without it
        logits = np.asarray(T.predict(T.make_eval_step(best_model, image_size), best_model.variables,
                                      val.images, bs))
    summary = reports.write_final(out, best_model, val.images, val.labels, logits, names, image_size,
                                  gallery=cfg["gallery"], cam_layers=cfg["cam_layers"], title=f"({cfg['model']})")
    best_epoch = max(history, key=score)
    result = {"best_epoch": best_epoch["epoch"], "val_acc": summary["accuracy"], "epochs_run": len(history),
              "early_stopped": bool(stopped and stopped.startswith("early")), "wall_seconds": time.time() - t_start,
              "trained_minutes": trained_seconds / 60}
    reports.write_json(os.path.join(out, "summary.json"), result)
    print(f"{val_split} accuracy {summary['accuracy']:.4f} ({len(val)} images, best epoch {best_epoch['epoch']}); "
          f"wall time {result['wall_seconds'] / 60:.1f} min; outputs in {out}", flush=True)
    return result


def _check_existing_run(cfg) -> None:
    """A run folder written by another model / freeze / image size: stop before reading any data."""
    from jaxcam import train as T

    ckpt = os.path.join(cfg["out"], "checkpoints", "last")
    if not os.path.isdir(ckpt) or not any(d.isdigit() for d in os.listdir(ckpt)):
        return
    meta = T.Checkpoints(os.path.join(cfg["out"], "checkpoints")).latest_meta()
    if meta:
        expect = {"model": cfg["model"], "freeze": cfg["freeze"]}
        if cfg["image_size"]:
            expect["image_size"] = int(cfg["image_size"])
        T.check_meta(meta, expect, os.path.join(cfg["out"], "checkpoints", "last"))


def _feature_mode(cfg, prefix, state, tx, train, val, aug, key, device_mesh, out):
    """Features of the frozen prefix, computed once (and kept in the run folder for a resume)."""
    import jax
    import numpy as np

    from jaxcam import train as T

    bs = cfg["batch_size"]
    views = cfg["feature_views"]
    augment = aug if cfg["augment"] else (lambda k, x: x[:, :, ::-1])
    image_size = prefix.image_size
    features = prefix.features_fn(device_mesh)
    variables = state.variables()

    aug_jit = augment_uint8(augment, image_size)
    cache = os.path.join(out, "features")
    os.makedirs(cache, exist_ok=True)

    def compute(name, images, view):
        path = os.path.join(cache, f"{name}_view{view}.npy")
        if os.path.isfile(path):
            arr = np.load(path, mmap_mode="r")
            if arr.shape[0] == len(images):
                return np.asarray(arr)
        chunks = []
        bar = _bar(total=len(images), desc=f"features {name} view {view}", unit="img")
        for start in range(0, len(images), bs):
            chunk = images[start:start + bs]
            pad = bs - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
            (xb,) = T.shard_batch(chunk, device_mesh=device_mesh)
            if view > 0:
                xb = aug_jit(jax.random.fold_in(jax.random.fold_in(key, 7919), view * 1_000_003 + start), xb)
            f = features(variables, xb, False)
            chunks.append(np.asarray(f, np.float16)[:bs - pad])
            bar.update(bs - pad)
        bar.close()
        arr = np.concatenate(chunks)
        np.save(path + ".tmp.npy", arr)
        os.replace(path + ".tmp.npy", path)
        return arr

    train_x = np.concatenate([compute("train", train.images, v) for v in range(views)])
    train_y = np.tile(train.labels, views)
    val_x = compute("val", val.images, 0)
    tx_step = prefix.make_train_step(tx, cfg["label_smoothing"], cfg["seed"], device_mesh)
    return tx_step, prefix.make_eval_step(device_mesh), train_x, train_y, val_x


def _evaluate(logits, labels) -> dict:
    import numpy as np

    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    loss = -float(np.mean(logp[np.arange(len(labels)), labels]))
    return {"val_loss": loss, "val_acc": float(np.mean(np.argmax(logits, -1) == labels))}


def _jsonable(cfg):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
