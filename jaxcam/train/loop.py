"""`fit`: one training run, from data to the reports, resumable from its folder.

    summary = jaxcam.train.fit("tree.tar.gz", "runs/r20", model="resnet20", epochs=30, image_size=32)

Order of work: check the options (`options.validate`) -> refuse a run folder written by another
configuration -> read the data -> decide the input size once (`options.decide_image_size`, stored
in ``model.info.input_size``; every step reads it from the model) -> build model and optimizer ->
resume from ``<out>/checkpoints/last`` -> epochs (train, evaluate, early stopping, checkpoints,
metrics) -> reports of the best checkpoint (`reports.write_final`).
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxcam.data import augmentations as A
from jaxcam import config as C
from jaxcam import data as D
from jaxcam import jobs
from jaxcam.train import reports
from jaxcam.train import steps as T
from jaxcam.train.checkpoints import Checkpoints, check_meta, load_checkpoint
from jaxcam.train.options import OPTIONS, decide_image_size, validate, validate_with_counts

Progress = Callable[[dict], Optional[bool]]  # called after each epoch with its record; False stops the run


def fit(data=None, out=None, *, progress: Optional[Progress] = None, config: Optional[str] = None,
        **options) -> dict:
    """Train (or fine-tune) a `jaxcam.models` model on labelled images; returns a summary dict.

    Args:
      data: an image-folder tree ``train/<class>/*`` + ``val/`` (or ``test/``) as a folder, .tar(.gz)
        or .zip, or a tensorflow-datasets name (``cifar10``).
      out: the run folder (checkpoints, metrics, figures); an existing run there is resumed.
      progress: called after every epoch with its record (epoch, train_loss, train_acc, val_loss,
        val_acc, lr, seconds, ...); returning False stops training after that epoch.
      config: a YAML file of options (keywords override it).
      **options: any option of `jaxcam.train.OPTIONS` (the flags of ``jaxcam train``): model,
        weights, image_size, epochs, batch_size, optimizer, lr, schedule, augment, freeze,
        early_stopping, ...

    Returns:
      {"best_epoch", "val_acc", "epochs_run", "early_stopped", "wall_seconds", "trained_minutes"}.

    Raises:
      jaxcam.config.ConfigError: a bad option (one line naming it), before any work.

    Example:
      >>> summary = jaxcam.train.fit("tree/", "/tmp/run", model="resnet20", epochs=1,
      ...                            batch_size=8, image_size=32)           # doctest: +SKIP
    """
    cfg, where = C.from_keywords(OPTIONS, {**options, "data": data, "out": out, "config": config})
    cfg = validate(cfg, where, OPTIONS)
    return run(cfg, where, OPTIONS, progress=progress)


def _bar(**kw):
    return tqdm(dynamic_ncols=True, mininterval=1.0, **kw)


def load_splits(cfg, where, options):
    """(train, val, name of the val split), with the checks that need the split sizes."""
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
    try:
        train = D.load_dataset(data, "train", limit=cfg["train_limit"] or None, masks=cfg["guidance_masks"],
                               progress=lambda total: _bar(total=total, desc="decode train", unit="img"), **kw)
    except D.datasets.MaskError as e:
        raise C.ConfigError(f"{C.label(where, options, 'guidance_masks')}: {e}") from None
    val = D.load_dataset(data, "val" if val_split == "validation" and not local else val_split,
                         limit=cfg["val_limit"] or None,
                         progress=lambda total: _bar(total=total, desc=f"decode {val_split}", unit="img"), **kw)
    if not local:
        validate_with_counts(cfg, where, options, len(val), len(train))
    if train.class_names != val.class_names:
        raise ValueError(f"{data}: train/ and {val_split}/ have different class folders "
                         f"({len(train.class_names)} vs {len(val.class_names)}); make them the same")
    return train, val, val_split


def check_existing_run(cfg) -> None:
    """A run folder written by another model / freeze / image size: stop before reading any data."""
    ckpt = os.path.join(cfg["out"], "checkpoints", "last")
    if not os.path.isdir(ckpt) or not any(d.isdigit() for d in os.listdir(ckpt)):
        return
    meta = Checkpoints(os.path.join(cfg["out"], "checkpoints")).latest_meta()
    if meta:
        expect = {"model": cfg["model"], "freeze": cfg["freeze"]}
        if cfg["image_size"]:  # only an asked-for size can be compared before the data is read
            expect["image_size"] = int(cfg["image_size"])
        check_meta(meta, expect, ckpt)


def run(cfg: Dict[str, Any], where=None, options=OPTIONS, progress: Optional[Progress] = None) -> dict:
    """Train with the resolved, validated config `cfg` (see `fit`); returns the summary dict."""
    where = where or {}
    t_start = time.time()
    check_existing_run(cfg)
    train, val, val_split = load_splits(cfg, where, options)
    cfg["image_size"] = decide_image_size(cfg["image_size"], train.images.shape[1:3])  # the one decision
    names = train.class_names
    model = T.build_model(cfg["model"], len(names), names, cfg["seed"], cfg["weights"], cfg["image_size"])
    out = cfg["out"]
    os.makedirs(out, exist_ok=True)
    jobs.clean_temp(out)  # temp files of a killed run
    C.dump(os.path.join(out, "config.yaml"), dict(cfg))
    print(f"data: {len(train)} train / {len(val)} {val_split} images {train.images.shape[1:]}, {len(names)} classes "
          f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); devices: {jax.local_device_count()} x "
          f"{jax.devices()[0].platform}", flush=True)
    loop = _Loop(cfg, model, train, val, val_split)
    history, stopped = loop.epochs(progress)
    best_model = load_checkpoint(out)
    logits_path = os.path.join(out, "val_logits_best.npy")
    if os.path.isfile(logits_path):
        logits = np.load(logits_path)
    else:  # pragma: no cover - resumed from a run without it
        logits = np.asarray(T.predict(T.make_eval_step(best_model), best_model.variables, val.images,
                                      cfg["batch_size"]))
    summary = reports.write_final(out, best_model, val.images, val.labels, logits, names, gallery=cfg["gallery"],
                                  cam_layers=cfg["cam_layers"], title=f"({cfg['model']})")
    best_epoch = max(history, key=loop.score)
    result = {"best_epoch": best_epoch["epoch"], "val_acc": summary["accuracy"], "epochs_run": len(history),
              "early_stopped": bool(stopped and stopped.startswith("early")), "wall_seconds": time.time() - t_start,
              "trained_minutes": sum(h["seconds"] for h in history) / 60}
    reports.write_summary(out, result)
    print(f"{val_split} accuracy {summary['accuracy']:.4f} ({len(val)} images, best epoch {best_epoch['epoch']}); "
          f"wall time {result['wall_seconds'] / 60:.1f} min; outputs in {out}", flush=True)
    return result


class _Loop:
    """The epochs of one run: optimizer, (resumed) state, train and eval steps, early stopping."""

    def __init__(self, cfg, model, train, val, val_split):
        self.cfg, self.model, self.train, self.val, self.val_split = cfg, model, train, val, val_split
        self.out = cfg["out"]
        freeze = cfg["freeze"]
        self.prefix = None
        trainable = None
        if freeze == "backbone":
            head = tuple((model.info.classifier or "").split("/"))
            trainable = lambda path: tuple(path[:len(head)]) == head  # noqa: E731
        elif freeze != "none":
            self.prefix = T.FrozenPrefix(model, freeze)
            trainable = self.prefix.trainable
        self.bs = bs = cfg["batch_size"]
        self.steps_per_epoch = max(len(train) // bs, 1)
        if cfg["steps_per_epoch"]:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg["steps_per_epoch"])
        total = self.steps_per_epoch * cfg["epochs"]
        milestones = [m * self.steps_per_epoch for m in cfg["milestones"]] if cfg["milestones"] else None
        self.schedule = T.make_schedule(cfg["schedule"], cfg["lr"], total,
                                        int(cfg["warmup_epochs"] * self.steps_per_epoch), milestones, cfg["gamma"])
        self.plateau = T.Plateau(cfg["plateau_factor"], cfg["plateau_patience"]) if cfg["schedule"] == "plateau" \
            else None
        self.tx = T.make_optimizer(cfg["optimizer"], self.schedule, cfg["weight_decay"], cfg["momentum"],
                                   trainable=trainable, lr_scale=self.plateau is not None)
        self.checkpoints = Checkpoints(os.path.join(self.out, "checkpoints"))
        self.expect = {"model": cfg["model"], "num_classes": len(train.class_names),
                       "image_size": model.info.input_size, "freeze": freeze}
        self.sign = 1.0 if cfg["monitor"] == "val_acc" else -1.0

    def score(self, record) -> float:
        return self.sign * record[self.cfg["monitor"]]

    def _resume(self):
        state = T.init_state(self.model, self.tx)
        resumed = self.checkpoints.restore_last(state, self.expect)
        if not resumed:
            return state, [], 0
        state, meta = resumed
        if self.plateau is not None and meta.get("plateau"):
            self.plateau.load(meta["plateau"])
        print(f"resumed from {self.checkpoints.directory}/last after epoch {meta['epoch'] + 1}", flush=True)
        return state, meta["history"], meta["epoch"] + 1

    def _steps(self, state, device_mesh, key):
        """(train step, eval step, train batch arrays (inputs, labels[, guidance masks]), val inputs,
        augment or None)."""
        cfg, train, val = self.cfg, self.train, self.val
        aug = A.pipeline(cfg["augment"])
        if self.prefix is not None:
            return _feature_mode(cfg, self.prefix, state, self.tx, train, val, aug, key, device_mesh, self.out)
        dtype = jnp.bfloat16 if cfg["bf16"] else jnp.float32
        guidance = None if train.masks is None else T.Guidance(cfg["guidance_method"], cfg["guidance_weight"],
                                                               cfg["guidance_region"], cfg["guidance_layer"])
        step = T.make_train_step(self.model, self.tx, label_smoothing=cfg["label_smoothing"], compute_dtype=dtype,
                                 train_batch_norm=cfg["freeze"] != "backbone", device_mesh=device_mesh,
                                 seed=cfg["seed"], guidance=guidance)
        eval_step = T.make_eval_step(self.model, compute_dtype=dtype, device_mesh=device_mesh)
        augment = T.augment_uint8(aug, self.model.info.input_size) if cfg["augment"] else None
        arrays = (train.images, train.labels) + (() if train.masks is None else (train.masks,))
        return step, eval_step, arrays, val.images, augment

    def epochs(self, progress: Optional[Progress]):
        """Train from the last checkpoint to the end (or early stop / budget); returns (history, why stopped)."""
        cfg = self.cfg
        state, history, start_epoch = self._resume()
        device_mesh = T.mesh()
        state = T.replicate(state, device_mesh)
        best = max((self.score(h) for h in history), default=-math.inf)
        since_best = 0
        for h in history:
            since_best = 0 if self.score(h) >= best else since_best + 1
        key = jax.random.key(cfg["seed"])
        step, eval_step, train_arrays, val_x, augment = self._steps(state, device_mesh, key)
        meta_base = {**self.expect, "class_names": list(self.train.class_names),
                     "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}}
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
            state, record = self._epoch(epoch, state, step, train_arrays, augment, key, device_mesh,
                                        None if budget is None else budget - trained_seconds)
            logits = T.predict(eval_step, state.variables(), val_x, self.bs,
                               progress=lambda r: _bar(iterable=r, desc=f"evaluate {self.val_split}", unit="batch",
                                                       leave=False))
            lr = float(self.schedule(max(int(state.step) - 1, 0))) * (self.plateau.scale if self.plateau else 1.0)
            trained, timing = record
            record = {**trained, **_evaluate(logits, self.val.labels), "lr": lr, **timing}
            if self.plateau is not None:
                self.plateau.update(record["val_loss"])
                state = state.replace(opt_state=self.plateau.apply(state.opt_state))
            trained_seconds += record["seconds"]
            record["trained_minutes"] = trained_seconds / 60
            history.append(record)
            improved = self.score(record) > best + cfg["min_delta"]
            if improved:
                best = self.score(record)
                since_best = 0
                with jobs.atomic_path(os.path.join(self.out, "val_logits_best.npy")) as tmp:  # never a partial file
                    np.save(tmp, logits)
            else:
                since_best += 1
            self.checkpoints.save(epoch, state, {**meta_base, "epoch": epoch, "history": history,
                                                 "plateau": self.plateau.state_dict() if self.plateau else None,
                                                 "val_acc": record["val_acc"]}, best=improved)
            reports.write_metrics(self.out, history)
            print(f"epoch {epoch + 1}/{cfg['epochs']}: train loss {record['train_loss']:.4f} acc "
                  f"{record['train_acc']:.4f} | {self.val_split} loss {record['val_loss']:.4f} acc "
                  f"{record['val_acc']:.4f} | lr {record['lr']:.2e} | {record['images_per_second']:.0f} img/s, "
                  f"{record['seconds']:.0f} s{' *best*' if improved else ''}", flush=True)
            if progress is not None and progress(dict(record)) is False:
                stopped = f"stopped by the progress callback after epoch {epoch + 1}"
                break
        self.checkpoints.wait()
        if stopped:
            print(stopped, flush=True)
            with open(os.path.join(self.out, "stopped.txt"), "w") as fh:
                fh.write(stopped + "\n")
        if not history:
            raise ValueError("no epoch was trained (time budget 0?)")
        return history, stopped

    def _epoch(self, epoch, state, step, train_arrays, augment, key, device_mesh, budget):
        """One epoch of training steps over `train_arrays` (inputs, labels[, masks]); returns (state,
        (losses, timing)) of the epoch's record."""
        cfg, bs, steps_per_epoch = self.cfg, self.bs, self.steps_per_epoch
        views = cfg["feature_views"] if self.prefix is not None else 1
        rng = np.random.default_rng(cfg["seed"] * 100_003 + epoch)
        n = len(train_arrays[1]) // views
        order = rng.permutation(n)[:steps_per_epoch * bs]
        rows = order + n * rng.integers(0, views, len(order)) if views > 1 else order
        ekey = jax.random.fold_in(key, epoch)

        def host_batches():
            for i in range(steps_per_epoch):
                idx = np.sort(rows[i * bs:(i + 1) * bs])
                yield tuple(a[idx] for a in train_arrays)

        bar = _bar(total=steps_per_epoch * bs, desc=f"epoch {epoch + 1}/{cfg['epochs']}", unit="img",
                   unit_scale=False, leave=False)
        loss_sum = correct = seen = 0
        pending = []
        start = None
        i = -1
        for i, batch in enumerate(D.prefetch(host_batches(), 3)):
            xb, yb, *mb = T.shard_batch(*batch, device_mesh=device_mesh)
            if augment is not None:
                k = jax.random.fold_in(ekey, i)
                xb, *mb = augment(k, xb, *mb) if mb else (augment(k, xb),)  # masks: (images, masks)
            state, metrics = step(state, xb, yb, *mb)
            pending.append(metrics)
            if i == 0:
                jax.block_until_ready(metrics)
                start = time.perf_counter()  # excludes compilation
            out_of_time = budget is not None and time.perf_counter() - start >= budget
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
        return state, ({"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1)},
                       {"seconds": seconds, "steps": i + 1, "images_per_second": (i * bs) / max(seconds, 1e-9)})


def _feature_mode(cfg, prefix, state, tx, train, val, aug, key, device_mesh, out):
    """Features of the frozen prefix, computed once (and kept in the run folder for a resume)."""
    bs = cfg["batch_size"]
    views = cfg["feature_views"]
    augment = aug if cfg["augment"] else (lambda k, x: x[:, :, ::-1])
    features = prefix.features_fn(device_mesh)
    variables = state.variables()
    aug_jit = T.augment_uint8(augment, prefix.image_size)
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
    return tx_step, prefix.make_eval_step(device_mesh), (train_x, train_y), val_x, None


def _evaluate(logits, labels) -> dict:
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    loss = -float(np.mean(logp[np.arange(len(labels)), labels]))
    return {"val_loss": loss, "val_acc": float(np.mean(np.argmax(logits, -1) == labels))}
