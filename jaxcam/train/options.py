"""The options of a training run, declared once: `fit`'s keywords, ``jaxcam train``'s flags and the
keys of its YAML configs are all `OPTIONS`. Every default is decided here, once:

- `validate`: checks needing more than one option or a registry (nothing read, nothing compiled);
  layers are resolved on an abstract model at its own input size (``model.info.input_size``);
- `validate_with_counts`: checks needing the split sizes;
- `decide_image_size`: the model's input size, from the option or the data; afterwards every step
  reads it from the model (``model.info.input_size``).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional

import jax

from jaxcam.data import augmentations as augment
from jaxcam import config as C
from jaxcam import losses
from jaxcam._src.split import LayerError, check_layer
from jaxcam.data.datasets import is_local
from jaxcam.models import loading
from jaxcam.train.steps import SCHEDULES

DEFAULT_IMAGE_SIZE = 224  # when the images of the data do not share one square size


def _augment_check(spec):
    if spec is None:
        return None
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
             "or a tensorflow-datasets name (cifar10, imagenette/160px)", aliases=("dataset",)),
    C.Option("val_split", str, "auto", "evaluation split: auto (val, else validation, else test), val, test"),
    C.Option("tfds_data_dir", str, None, "tensorflow-datasets data_dir (tfds names only)"),
    C.Option("download", bool, True, "tfds names: download and prepare when missing (fails at once offline)"),
    C.Option("model", str, "resnet18", "model name of jaxcam.models (resnet18, resnet18_cifar, resnet20, "
             "efficientnet_lite0, vgg16, ...)"),
    C.Option("weights", str, None, "'pretrained' (ImageNet / shipped weights), a .pth/.th path, or none (random "
             "init); a new head when the class count differs", aliases=("pretrained",)),
    C.Option("image_size", int, None, "model input size in pixels (images resized on the device); default: "
             f"the data's size when all images share one, else {DEFAULT_IMAGE_SIZE}", check=C.at_least(8),
             aliases=("size",)),
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
    C.Option("guidance_masks", str, None, "CAM guidance: a folder of PNG masks, one per training image at its path "
             "from the split folder on (train/<class>/<name>.png), white = the region; the loss gains "
             "--guidance-weight x jaxcam.losses.guidance_loss of the true class's raw map (docs/differentiable.md)"),
    C.Option("guidance_region", str, "avoid", "what the guidance masks mark: avoid (where the evidence should not "
             "be, e.g. a decoy) or focus (where it should be)", choices=("avoid", "focus")),
    C.Option("guidance_method", str, "grad_cam", "map method of the guidance loss (a differentiable one with a raw "
             "map: grad_cam, hires_cam, layer_cam, score_cam, ...)"),
    C.Option("guidance_layer", str, None, "layer of the guidance map (default: the model's default layer)"),
    C.Option("guidance_weight", float, 1.0, "weight of the guidance loss", check=C.positive),
    C.Option("out", str, None, "run folder (created; an existing run in it is resumed)"),
)


def with_defaults(defaults: Optional[Dict[str, Any]] = None) -> tuple:
    """`OPTIONS` with some defaults replaced (a preset such as ``jaxcam finetune``'s)."""
    defaults = defaults or {}
    return tuple(dataclasses.replace(o, default=defaults[o.name]) if o.name in defaults else o for o in OPTIONS)


def validate(cfg: Dict[str, Any], where: Dict[str, str], options=OPTIONS) -> Dict[str, Any]:
    """Checks that need more than one option or a registry; raises `ConfigError` naming the option."""
    def err(name, text):
        return C.ConfigError(f"{C.label(where, options, name)}: {text}")

    for name in ("data", "out"):
        if not cfg.get(name):
            raise err(name, f"required; pass {C.label(where, options, name)} or set '{name}' in --config")
    data = cfg["data"]
    if is_local(data):
        if not os.path.exists(os.path.expanduser(data)):
            raise err("data", f"no such file or directory {data!r}; pass an image-folder tree (dir, .tar.gz, "
                              ".zip) or a tensorflow-datasets name such as cifar10")
        cfg["data"] = os.path.expanduser(data)
    if os.path.isfile(cfg["out"]):
        raise err("out", f"{cfg['out']!r} is a file; pass a folder for the run")
    model = str(cfg["model"])
    if loading.canonical_name(model) not in loading.REGISTRY:
        raise err("model", C.unknown_name("model", model, list(loading.REGISTRY)))
    cfg["model"] = loading.canonical_name(model)
    pre = cfg.get("weights")
    if pre is not None and str(pre).lower() in ("none", "null", "random", ""):
        cfg["weights"] = pre = None
    if pre is not None and pre not in ("pretrained", "torchvision") and not os.path.isfile(os.path.expanduser(pre)):
        raise err("weights", f"{pre!r} is not a file; pass 'pretrained', 'torchvision', a .pth/.th path or none")
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
    cfg["augment"] = augment.check_spec(cfg["augment"] or {})
    freeze = str(cfg["freeze"])
    _validate_guidance(cfg, where, err)
    layers = [("freeze", freeze)] if freeze not in ("none", "backbone") else []
    layers += [("cam_layers", str(layer)) for layer in cfg["cam_layers"] or ()]
    layers += [("guidance_layer", str(cfg["guidance_layer"]))] if cfg["guidance_layer"] else []
    for option, layer in layers:
        try:  # abstract: no weights, nothing compiled; the model's own input size unless one is asked for
            model = loading.abstract(cfg["model"], cfg["image_size"])
            check_layer(model, layer)
        except LayerError as e:
            raise err(option, str(e)) from None
    if cfg["feature_views"] > 1 and freeze in ("none", "backbone") and where.get("feature_views") != "default":
        raise err("feature_views", "only used with --freeze LAYER (features computed once)")
    n_dev = jax.local_device_count()
    if cfg["batch_size"] % n_dev:
        raise err("batch_size", f"{cfg['batch_size']} does not split over the {n_dev} local devices; "
                                f"use a multiple of {n_dev}")
    return cfg


GUIDANCE = ("guidance_region", "guidance_method", "guidance_layer", "guidance_weight")  # need guidance_masks


def _validate_guidance(cfg, where, err) -> None:
    masks = cfg["guidance_masks"]
    if masks is None:
        for name in GUIDANCE:
            if where.get(name, "default") not in ("default", "preset"):
                raise err(name, f"only used with {C.label(where, OPTIONS, 'guidance_masks')} (a folder of PNG masks)")
        return
    if not is_local(cfg["data"]):
        raise err("guidance_masks", "needs a local image-folder tree as the data (masks are matched to the "
                                    f"images by their paths), not the tensorflow-datasets name {cfg['data']!r}")
    cfg["guidance_masks"] = masks = os.path.expanduser(masks)
    if not os.path.isdir(masks):
        raise err("guidance_masks", f"no such directory {masks!r}; pass a folder of PNG masks at the training "
                                    "images' paths (train/<class>/<name>.png)")
    if str(cfg["freeze"]) not in ("none", "backbone"):
        raise err("guidance_masks", "not with --freeze LAYER (the frozen layers' features are computed once, so "
                                    "no map can be taken through them); use --freeze none or backbone")
    try:
        cfg["guidance_method"] = losses.map_method(cfg["guidance_method"], normalize=False).name
    except ValueError as e:
        raise err("guidance_method", str(e)) from None


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


def decide_image_size(requested: Optional[int], image_shape) -> int:
    """The model's input size: the requested one, else the data's when its images are square, else 224."""
    if requested:
        return int(requested)
    h, w = image_shape[:2]
    return int(h) if h == w else DEFAULT_IMAGE_SIZE
