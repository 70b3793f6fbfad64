"""What every jaxcam command shares: usage errors (one stderr line, exit 2), argparse value types,
model loading, class-name parsing, method options from the registry.

Bugs keep their traceback and exit status 1; a `UsageError` (or an argparse error) is a mistake in
the command line and gives one line on stderr and exit status 2, before any work is done.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence

from jaxcam import config as C
from jaxcam import jobs, models
from jaxcam._src import host_memory, split
from jaxcam.methods import registry
from jaxcam.train.checkpoints import load_checkpoint
from jaxcam.viz.heatmaps import check_colormap
from jaxcam.config import ConfigError
from jaxcam.models import classes


UsageError = ConfigError  # a mistake in the command line: printed as one line, exit status 2


ArgumentParser = C.OneLineParser  # one-line errors (``<prog>: error: ...``) and exit status 2


def parse(prog: str, options, argv, description: str = "", *extras: Callable) -> tuple:
    """``(args, where)``: the command line (and its ``--config`` YAML file) through the one option system
    (`jaxcam.config`); `extras` add argparse-only flags (e.g. `jaxcam.distributed.add_arguments`)."""
    p = C.parser(prog, options, description=description)
    for add in extras:
        add(p)
    parsed = p.parse_args(argv)
    cfg, where = C.resolve(options, parsed)
    args = argparse.Namespace(**{k: v for k, v in vars(parsed).items() if not k.startswith(C.ALIAS)})
    vars(args).update(cfg)
    return args, where


def reuse_host_memory() -> None:
    """Before JAX runs: glibc keeps freed blocks for reuse, so XLA:CPU's per-call buffers are not
    zero-filled anew (`jaxcam.train.reuse_host_memory`; ``JAXCAM_REUSE_MEMORY=0`` turns it off)."""
    host_memory.reuse_host_memory(warn=False)


def error_line(prog: str, err: BaseException) -> None:
    """The one error format of every command: ``<prog>: error: <message on one line>`` on stderr."""
    sys.stderr.write(f"{prog}: error: {' '.join(str(err).split())}\n")


def run(main: Callable[[list], int], argv: Optional[Sequence[str]], prog: str = "jaxcam") -> int:
    """Call ``main(argv)`` after `reuse_host_memory`; a UsageError becomes one stderr line
    (``<prog>: error: ...``) and status 2, SystemExit passes through."""
    reuse_host_memory()
    try:
        return int(main(list(sys.argv[1:] if argv is None else argv)) or 0)
    except UsageError as err:
        error_line(prog, err)
        return 2


# ------------------------------------------------------------------------------------ value types

def _bounded(text: str, kind, low, high, expected: str):
    """Parse `text` as `kind` and check low <= value <= high (None = unbounded): one argparse error line."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    return _bounded(text, int, 1, None, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0 (0 means "none" where the option says so)."""
    return _bounded(text, int, 0, None, "an integer >= 0")


def fraction(text: str) -> float:
    """argparse type: a float in [0, 1]."""
    return _bounded(text, float, 0.0, 1.0, "a number in [0, 1]")


def colormap(text: str) -> str:
    """argparse type: a matplotlib colormap name (unknown names list the closest ones)."""
    try:
        check_colormap(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


# ------------------------------------------------------------------------------------ methods

def methods(spec: str, option: str = "--method") -> list:
    """Registry `Method`s from a comma-separated list of names/aliases, or 'all' (`registry.parse`)."""
    return registry.parse(spec, option)


def method_options(chosen: list, given: Dict[str, object], notes: Optional[List[str]] = None) -> dict:
    """Per method name, the options the user set that it takes (validated by the registry).

    Options a method has no use for are noted (in `notes`) rather than refused, so one command can
    run several methods. A bad value raises UsageError naming the option.
    """
    given = {k: v for k, v in given.items() if v is not None}
    per_method = {}
    for m in chosen:
        accepted, ignored = m.accepted(given)
        try:
            per_method[m.name] = m.check(**accepted)
        except ValueError as err:
            first, _, rest = str(err).partition(" ")
            raise UsageError(f"--{first.replace('_', '-')} {rest}") from None
        if ignored and notes is not None:
            notes.append(f"note: {m.name} has no option {', '.join(ignored)}; ignored for it")
    return per_method


# ------------------------------------------------------------------------------------ models

def load_model(name: Optional[str], weights: Optional[str], checkpoint: Optional[str] = None,
               default: str = "efficientnet_lite0"):
    """A `jaxcam.Model` from a training checkpoint, or a zoo name + weights; UsageError when bad."""
    if checkpoint:
        if not os.path.exists(checkpoint):
            raise UsageError(f"--checkpoint {checkpoint!r}: no such folder")
        try:
            return load_checkpoint(checkpoint)
        except (ValueError, FileNotFoundError) as err:
            raise UsageError(f"--checkpoint {checkpoint!r}: {err}") from None
    weights = weights or "pretrained"
    weights = None if str(weights).lower() in ("none", "random") else weights
    if weights not in (None, "pretrained", "torchvision") and not os.path.exists(weights):
        raise UsageError(f"--weights {weights!r}: no such file or folder")
    try:
        return models.load(name or default, weights=weights)
    except (ValueError, KeyError) as err:
        raise UsageError(str(err).strip("'\"")) from None


def check_layer(model, layer: Optional[str], size: int) -> None:
    """--layer through the library's one resolver (`jaxcam._src.split.check_layer`); UsageError when unknown."""
    if layer is None:
        return
    try:
        path = split.check_layer(model, layer, split.input_shape(model, size))
    except split.LayerError as err:
        raise UsageError(f"--layer: {err}") from None
    if "/".join(path) != layer.replace(".", "/"):  # the command line takes the path as listed, nothing looser
        raise UsageError(f"--layer: unknown layer {layer!r} for {model.info.name}; did you mean {'/'.join(path)!r}?")


def class_index(target: Optional[str], class_names: Sequence[str], option: str = "--target",
                owner: str = "the model") -> Optional[int]:
    """A class given as an index or a name (case-insensitive) -> its index; None stays None."""
    return classes.class_index(target, class_names, option, owner)


def writable(folder: str, option: str = "--out") -> None:
    try:
        jobs.check_writable(folder)
    except PermissionError as err:
        raise UsageError(f"{option}: {err}") from None
