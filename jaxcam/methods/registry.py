"""The method registry: one description of every CAM method, iterated by commands, benchmarks and tests.

A method is declared once, by decorating its public function:

    @method(family="gradient", options=(SCORE, Option("k", 2.0, "threshold")), aliases=("mine",))
    def my_cam(model, x, layer=None, targets=None, *, score="logit", k=2.0):
        "My-CAM: ... (the docstring help() shows)."
        return run(my_cam_map, model, x, layer, targets, score=score, k=k)

The decorator registers it (`REGISTRY`, `get`, `names`), checks the options a caller passes (once
per call, with the `Option` checks below) and keeps the function's own signature and docstring;
``jaxcam.methods`` imports every method file, `jaxcam.__all__`, the README table and the flags of
``jaxcam render`` come from the registry (`Option.flag_type` reads an option's command-line value).

    m = get("GradCAMPlusPlus")          # aliases and pytorch-grad-cam class names, case-insensitive
    maps = m(model, x, layer="layer4", targets=None, score="softmax")
    names(family="ablation")            # ['ablation_cam', 'fast_ablation_cam', 'spatial_ablation_cam']
    call = m.bind(score="softmax")      # options checked once; call(model, x, layer=..., targets=...)
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import inspect
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from jaxcam._src import blank
from jaxcam._src.hints import ConfigError


FAMILIES = ("gradient", "ablation", "score", "eigen", "cam", "guided", "composite", "random")
OUTPUTS = ("map", "attribution", "maps")
_MISSING = object()


@dataclasses.dataclass(frozen=True)
class Option:
    """One keyword option of a method.

    Args:
      name: the keyword (``chunk_size``); scripts spell it ``--chunk-size``.
      default: its default value.
      doc: one line saying what it does.
      choices: the allowed values, or None.
      positive: an int >= 1 (None allowed when the default is None: "automatic").
      cli: settable from the command line (False for callables such as reshape_transform).
    """

    name: str
    default: Any
    doc: str
    choices: Optional[Tuple[Any, ...]] = None
    positive: bool = False
    cli: bool = True
    type: Optional[type] = None  # of a command-line value when the default does not say (e.g. None)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def flag_type(self, text: str):
        """The option's value from command-line `text` (argparse ``type=``); checked later by `check`."""
        if self.choices is not None:
            for c in self.choices:
                if str(c).lower() == str(text).strip().lower():
                    return c
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(map(str, self.choices))}; got {text!r}")
        kind = self.type or (int if self.positive else type(self.default) if self.default is not None else str)
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None

    def check(self, value):
        """`value` if valid, else a ValueError saying what the option accepts."""
        if self.positive:
            if value is None and self.default is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{self.name} must be a positive int, got {value!r}")
            return int(value)
        if self.choices is not None and not any(value is c or (type(value) is type(c) and value == c)
                                                for c in self.choices):
            raise ValueError(f"{self.name} must be one of {', '.join(map(repr, self.choices))}; got {value!r}")
        return value


# Options shared by many methods (one definition each).
SCORE = Option("score", "logit", "space the target score is taken in", choices=("logit", "softmax", "sigmoid"))
FINAL_ACTIVATION = Option("final_activation", "relu", "applied to the map before min-max",
                          choices=("relu", "softmax", "none"))
EIGEN_SMOOTH = Option("eigen_smooth", False, "first principal component of the weighted activations instead of "
                      "their sum", choices=(False, True))
AUG_SMOOTH = Option("aug_smooth", False, "test-time augmentation: True (= 'multiply') | 'scale'",
                    choices=(False, True, "multiply", "scale"))
NORMALIZE = Option("normalize", True, "False: the raw map (resized; before final activation and min-max)",
                   choices=(True, False))
RESHAPE_TRANSFORM = Option("reshape_transform", None, "token models: (N, tokens, C) -> (N, h, w, C)", cli=False)


@dataclasses.dataclass(frozen=True)
class Method:
    """What a method is: its function, family, output kind, options and names.

    `fn` is called ``fn(model, x, layer, targets, **options)`` (``fn(model, x, targets, **options)``
    when `takes_layer` is False). `output`: "map" (N, H, W) in [0, 1]; "attribution" (N, H, W, C)
    raw input-space values; "maps" a dict {name: (N, H, W)}.
    """

    name: str
    fn: Callable
    family: str
    output: str = "map"
    options: Tuple[Option, ...] = ()
    aliases: Tuple[str, ...] = ()
    paper: Optional[str] = None
    pgc: Optional[str] = None
    takes_layer: bool = True
    formula: str = ""  # what it computes, one line (the README table's column)
    requires: Optional[str] = None  # the model it needs when not any model (LeGrad: a ViT); 'all' leaves it out

    def __post_init__(self):
        object.__setattr__(self, "rule", getattr(self.fn, "__wrapped__", self.fn))  # the undecorated function
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")

    def option(self, name: str) -> Option:
        for opt in self.options:
            if opt.name == name:
                return opt
        raise KeyError(name)

    @property
    def defaults(self) -> Dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def check(self, **options) -> Dict[str, Any]:
        """Validate options by name: unknown names and bad values raise one clear ValueError."""
        known = {o.name: o for o in self.options}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"{self.name} has no option {', '.join(unknown)}; its options: "
                             f"{', '.join(known) or 'none'}")
        return {k: known[k].check(v) for k, v in options.items()}

    def accepted(self, options: Dict[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
        """Split `options` into (the ones this method takes, the names it has no use for)."""
        known = {o.name for o in self.options}
        return {k: v for k, v in options.items() if k in known}, sorted(set(options) - known)

    def __call__(self, model, x, layer=None, targets=None, **options):
        """The public function (which checks the options it knows, once)."""
        if self.takes_layer:
            return self.fn(model, x, layer, targets, **options)
        return self.fn(model, x, targets, **options)

    def bind(self, **options) -> Callable:
        """``call(model, x, layer=None, targets=None)`` with `options` checked now, once (not per call)."""
        return self.bound(self.check(**options))

    def bound(self, checked: Dict[str, Any]) -> Callable:
        """As `bind`, for options a command has already checked with `check` (not checked again)."""
        rule = self.rule

        def call(model, x, layer=None, targets=None):
            with blank.running(self.name):
                if self.takes_layer:
                    return rule(model, x, layer, targets, **checked)
                return rule(model, x, targets, **checked)

        call.method = self
        return call

    @property
    def doc(self) -> str:
        """The first line of the function's docstring."""
        return (self.fn.__doc__ or "").strip().splitlines()[0] if self.fn.__doc__ else ""


REGISTRY: Dict[str, Method] = {}
_LOOKUP: Dict[str, str] = {}


def _key(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def register(method: Method) -> Method:
    """Add `method` to the registry (its name, aliases and pgc class name become lookup keys)."""
    keys = [method.name, *method.aliases] + ([method.pgc] if method.pgc else [])
    for key in map(_key, keys):
        owner = _LOOKUP.get(key)
        if owner is not None and owner != method.name:
            raise ValueError(f"method name {key!r} of {method.name!r} is already taken by {owner!r}")
    REGISTRY[method.name] = method
    for key in map(_key, keys):
        _LOOKUP[key] = method.name
    return method


def get(name: str) -> Method:
    """The method called `name`: canonical name, alias or pytorch-grad-cam class name (case-insensitive;
    the ``_cam`` suffix is optional). Unknown names raise a ValueError naming the closest matches."""
    if isinstance(name, Method):
        return name
    key = _key(name)
    for candidate in (key, f"{key}_cam"):
        if candidate in _LOOKUP:
            return REGISTRY[_LOOKUP[candidate]]
    close = difflib.get_close_matches(key, list(_LOOKUP), n=3, cutoff=0.5)
    close = list(dict.fromkeys(_LOOKUP[c] for c in close))
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown method {name!r}.{hint} Valid methods: {', '.join(names())}")


def parse(spec: str, option: str = "--method") -> List[Method]:
    """Registry methods from a comma-separated list of names/aliases (or 'all': every method defined for any
    model, i.e. without `requires`), each once, in order.
    An unknown or empty one raises `ConfigError` naming `option`."""
    wanted = [s.strip() for s in str(spec).split(",") if s.strip()]
    if not wanted:
        raise ConfigError(f"{option} is empty; valid methods: {', '.join(names())}")
    if wanted == ["all"]:
        return [REGISTRY[n] for n in names(any_model=True)]
    chosen = []
    for name in wanted:
        try:
            m = get(name)
        except ValueError as err:
            raise ConfigError(f"{option}: {err}") from None
        if m not in chosen:
            chosen.append(m)
    return chosen


def names(family: Optional[str] = None, output: Optional[str] = None, any_model: bool = False) -> List[str]:
    """Canonical names, sorted, optionally only of one family and/or output kind, and (`any_model`) only the
    methods defined for any model (no `requires`: LeGrad needs a vision transformer)."""
    return sorted(n for n, m in REGISTRY.items()
                  if (family is None or m.family == family) and (output is None or m.output == output)
                  and not (any_model and m.requires))


def method(name: Optional[str] = None, *, family: str, output: str = "map", options: Tuple[Option, ...] = (),
           aliases: Tuple[str, ...] = (), paper: Optional[str] = None, pgc: Optional[str] = None,
           formula: str = "", requires: Optional[str] = None) -> Callable:
    """Declare a CAM method once (decorator): its registry entry, option checks and public function.

    Args:
      name: the registry name (default: the function's name).
      family, output, aliases, paper, pgc, formula, requires: as `Method`.
      options: the keyword options the registry knows (checked on every call that passes them; the
        commands make flags of them).

    Returns:
      A decorator returning the public function: the same signature and docstring, the options a
      caller passes checked once, then the body run.
    """
    def declare(fn):
        known = {o.name: o for o in options}

        @functools.wraps(fn)
        def public(*args, **kwargs):
            for key in kwargs.keys() & known.keys():
                kwargs[key] = known[key].check(kwargs[key])
            with blank.running(name or fn.__name__):  # named in a blank-map warning
                return fn(*args, **kwargs)

        register(Method(name or fn.__name__, public, family, output, tuple(options), tuple(aliases), paper, pgc,
                        takes_layer="layer" in inspect.signature(fn).parameters, formula=formula,
                        requires=requires))
        return public

    return declare


def markdown_table() -> str:
    """The README's methods table, one row per registered method (``python -m jaxcam.methods``)."""
    head = ("| method | aliases | family | output | what it computes (A = layer activations, G = dy/dA, y = target "
            "score) | pytorch-grad-cam |\n|---|---|---|---|---|---|\n")
    order = sorted(REGISTRY.values(), key=lambda m: (FAMILIES.index(m.family), m.name))
    return head + "".join(f"| `{m.name}` | {', '.join(m.aliases)} | {m.family} | {m.output} | {m.formula} | "
                          f"{m.pgc or '–'} |\n" for m in order)


def cli_options() -> Dict[str, Option]:
    """Every command-line-settable option of the registered methods, by name (one flag each)."""
    found: Dict[str, Option] = {}
    for m in REGISTRY.values():
        for o in m.options:
            if o.cli and o.name not in found:
                found[o.name] = o
    return found


def renamed(new_value, old_value, new: str = "chunk_size", old: str = "batch_size", where: str = ""):
    """The value of a renamed keyword: `old_value` (with a DeprecationWarning) when only it was given."""
    if old_value is _MISSING or old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"{where}: pass {new} only ({old} is its deprecated old name)")
    warnings.warn(f"{where}: {old}= is deprecated, use {new}= (ablated/masked copies per chunk); "
                  f"{old} will be removed in the next release", DeprecationWarning, stacklevel=3)
    return old_value

