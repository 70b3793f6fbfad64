"""The method registry: one description of every CAM method, iterated by scripts, benchmarks and tests.

    from jaxcam.methods.registry import Method, Option, register, get, names, REGISTRY
    m = get("GradCAMPlusPlus")          # aliases and pytorch-grad-cam class names, case-insensitive
    maps = m(model, x, layer="layer4", targets=None, score="softmax")
    names(family="ablation")            # ['ablation_cam', 'fast_ablation_cam', 'spatial_ablation_cam']

A method file ends with its ``register(Method(...))`` call; `jaxcam.methods` imports every method
file, so importing `jaxcam` fills the registry. Option checks (choices, positive ints) live here,
once: methods call `check_options`, scripts call `Method.check` before any work is done.
"""
from __future__ import annotations

import dataclasses
import difflib
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

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

    def __post_init__(self):
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
        if self.takes_layer:
            return self.fn(model, x, layer, targets, **options)
        return self.fn(model, x, targets, **options)

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


def names(family: Optional[str] = None, output: Optional[str] = None) -> List[str]:
    """Canonical names, sorted, optionally only of one family and/or output kind."""
    return sorted(n for n, m in REGISTRY.items()
                  if (family is None or m.family == family) and (output is None or m.output == output))


def check_options(options: Tuple[Option, ...], **values) -> Dict[str, Any]:
    """Validate `values` against `options` (by name); used by the method functions themselves."""
    known = {o.name: o for o in options}
    return {k: known[k].check(v) if k in known else v for k, v in values.items()}


def renamed(new_value, old_value, new: str = "chunk_size", old: str = "batch_size", where: str = ""):
    """The value of a renamed keyword: `old_value` (with a DeprecationWarning) when only it was given."""
    if old_value is _MISSING or old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"{where}: pass {new} only ({old} is its deprecated old name)")
    warnings.warn(f"{where}: {old}= is deprecated, use {new}= (ablated/masked copies per chunk); "
                  f"{old} will be removed in the next release", DeprecationWarning, stacklevel=3)
    return old_value
