"""Class names: ImageNet-1k (shipped as ``jaxcam/data/imagenet_classes.tsv``) and CIFAR-10."""
from __future__ import annotations

import difflib
import functools
from importlib import resources
from typing import Optional, Sequence, Tuple

from jaxcam._src.hints import ConfigError

CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@functools.lru_cache(maxsize=1)
def _imagenet_rows() -> Tuple[Tuple[str, str], ...]:
    text = resources.files("jaxcam").joinpath("data/imagenet_classes.tsv").read_text(encoding="utf-8")
    rows = tuple(tuple(line.split("\t", 1)) for line in text.splitlines() if line)
    if len(rows) != 1000:
        raise RuntimeError(f"jaxcam/data/imagenet_classes.tsv has {len(rows)} rows, expected 1000 (broken install?)")
    return rows


def imagenet_names() -> Tuple[str, ...]:
    """The 1000 ImageNet-1k class names in the standard index order (sorted WordNet ids)."""
    return tuple(name for _, name in _imagenet_rows())


def imagenet_wnids() -> Tuple[str, ...]:
    """The 1000 WordNet ids (``n01440764``, ...) in index order."""
    return tuple(wnid for wnid, _ in _imagenet_rows())


def default_names(num_classes: int, dataset: str) -> Tuple[str, ...]:
    """Names for a ``dataset`` ("imagenet" | "cifar10") head of `num_classes` outputs, or () if they don't fit."""
    names = imagenet_names() if dataset == "imagenet" else CIFAR10 if dataset == "cifar10" else ()
    return names if len(names) == num_classes else ()


def class_index(target: Optional[str], class_names: Sequence[str], option: str = "--target",
                owner: str = "the model") -> Optional[int]:
    """A class given as an index or a name (case-insensitive) -> its index; None stays None."""
    if target is None:
        return None
    text = str(target).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if index < 0 or (class_names and index >= len(class_names)):
            raise ConfigError(f"{option} {index} is out of range: {owner} has {len(class_names)} classes")
        return index
    lowered = [n.lower() for n in class_names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if not class_names:
        raise ConfigError(f"{option} {target!r}: {owner} has no class names; pass a class index")
    close = difflib.get_close_matches(text.lower(), lowered, n=5, cutoff=0.5)
    hint = ("closest: " + ", ".join(repr(class_names[lowered.index(c)]) for c in close)) if close else \
        "pass a class index instead"
    raise ConfigError(f"{option}: unknown class name {target!r}; {hint}")
