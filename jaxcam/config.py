"""Options of an entry point declared once: command-line flags, a YAML config file, validation.

    OPTIONS = (Option("lr", float, 0.1, "peak learning rate", check=positive),
               Option("schedule", str, "cosine", "lr schedule", choices=("cosine", "step")), ...)
    parser = config.parser("train", OPTIONS, description=...)
    cfg = config.resolve(OPTIONS, parser.parse_args(argv))   # defaults < --config file < flags
    # cfg: {"lr": 0.1, ...}; a bad value raises ConfigError naming the flag or the key and the file

Values from the file and the flags pass the same checks. An unknown key in the file, or a bad
value, raises `ConfigError` whose one-line message names the key and the file (or the flag), with
the closest valid names. Scripts print it as one stderr line and exit with status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import yaml

from jaxcam import jobs
from jaxcam._src.hints import ConfigError, closest, unknown_name  # noqa: F401  (re-exported)

Check = Callable[[Any], Optional[str]]  # returns what is wrong, or None


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: config key `name`, flag ``--name-with-dashes``.

    type: int | float | str | bool | list | dict (list: comma-separated on the command line, or words
      with `nargs`; dict: a YAML mapping, or on the command line a comma-separated list of names
      meaning defaults), or any converter ``text -> value`` raising ValueError.
    default: value when neither the file nor a flag gives one (None = unset).
    check: optional validator returning an error text; `choices`: the allowed values (names are
      matched case-insensitively, with the closest ones suggested).
    """

    name: str
    type: type
    default: Any
    help: str
    check: Optional[Check] = None
    choices: Tuple[Any, ...] = ()
    flag_only: bool = False  # e.g. --config itself
    aliases: Tuple[str, ...] = ()  # old spellings, accepted with a one-line deprecation note
    nargs: Optional[str] = None  # list options given as separate words ("*", "+") instead of a,b,c
    item: Optional[Callable[[Any], Any]] = None  # list options: the type of each element
    positional: bool = False  # a positional argument (e.g. render's input files)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


ALIAS = "alias:"  # parsed alias flags are stored as "alias:<old name>" until `settle` maps them


def deprecations(where: Dict[str, str], options: Sequence[Option]) -> list:
    """One line per old spelling used (flags or config keys): ``note: --size is deprecated; use --image-size``."""
    notes = []
    for opt in options:
        for old in opt.aliases:
            if where.get(opt.name) in (flag_of(old), f"{old}=") or str(where.get(opt.name, "")).endswith(f": {old}"):
                notes.append(f"note: {where[opt.name]} is deprecated; use {opt.flag} (or '{opt.name}')")
    return notes


# ---------------------------------------------------------------- checks


def at_least(low, what: str = "") -> Check:
    def check(v):
        return None if v is None or v >= low else f"must be >= {low}{what}, got {v}"
    return check


def positive(v):
    return None if v is None or v > 0 else f"must be > 0, got {v}"


def non_negative(v):
    return None if v is None or v >= 0 else f"must be >= 0, got {v}"


def fraction(v):
    return None if v is None or 0.0 <= v <= 1.0 else f"must be in [0, 1], got {v}"


# ---------------------------------------------------------------- command line


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one stderr line (``prog: error: ...``) and exit status 2."""

    def error(self, message):  # noqa: D102
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _bool(text: str) -> bool:
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def parser(prog: str, options: Sequence[Option], description: str = "", epilog: str = "") -> OneLineParser:
    """An argparse parser with one flag per option; unset flags stay absent (so the file can fill them)."""
    p = OneLineParser(prog=prog, description=description, epilog=epilog,
                      formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS)
    for opt in options:
        for old in opt.aliases:  # hidden; `settle` maps them to the option and notes the deprecation
            kind = str if opt.type in (list, dict) else opt.type
            if opt.type is bool:
                p.add_argument(flag_of(old), dest=ALIAS + old, action=argparse.BooleanOptionalAction,
                               help=argparse.SUPPRESS)
            else:
                p.add_argument(flag_of(old), dest=ALIAS + old, type=kind, help=argparse.SUPPRESS)
        default = "" if opt.flag_only or opt.default is None else f" (default: {_show(opt.default)})"
        text = opt.help + default
        if opt.positional:
            p.add_argument(opt.name, nargs=opt.nargs, type=opt.item or str, help=text)
        elif opt.nargs:
            p.add_argument(opt.flag, dest=opt.name, nargs=opt.nargs, type=opt.item or str, help=text)
        elif opt.type is bool:
            p.add_argument(opt.flag, dest=opt.name, action=argparse.BooleanOptionalAction, help=text)
        elif opt.type in (list, dict):
            p.add_argument(opt.flag, dest=opt.name, type=str, metavar="A,B,...", help=text)
        else:
            metavar = "{" + ",".join(map(str, opt.choices)) + "}" if opt.choices else opt.name.upper()
            p.add_argument(opt.flag, dest=opt.name, type=opt.type, metavar=metavar, help=text)
    return p


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, dict):
        return ",".join(value) or "none"
    return str(value)


# ---------------------------------------------------------------- YAML file


def load_file(path: str, options: Sequence[Option]) -> Dict[str, Any]:
    """The options set in a YAML file (a mapping of option names; dashes or underscores)."""
    if not os.path.isfile(path):
        raise ConfigError(f"--config: no such file {path!r}")
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of option: value, got a {type(data).__name__}")
    by_name = {o.name: o for o in options if not o.flag_only}
    old_names = {old: o.name for o in options for old in o.aliases}
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        name = old_names.get(name, name)
        if name not in by_name:
            raise ConfigError(f"{path}: unknown key {key!r}{closest(name, list(by_name))}")
        try:
            out[name] = coerce(by_name[name], value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{path}: {name}: {e}") from None
    return out


def coerce(opt: Option, value):
    """A file or flag value as the option's type (int, float, str, bool, list, dict)."""
    if value is None:
        return None
    t = opt.type
    if t is bool:
        if isinstance(value, bool):
            return value
        return _bool(value)
    if t in (int, float):
        what = "an integer" if t is int else "a number"
        fractional = t is int and isinstance(value, float) and not value.is_integer()
        try:
            if isinstance(value, bool) or fractional:
                raise ValueError
            return t(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected {what}, got {value!r}") from None
    if t is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"expected a string, got {value!r}")
        return str(value)
    if t is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif not isinstance(value, (list, tuple)):
            value = [value]
        return [opt.item(v) for v in value] if opt.item else list(value)
    if t is dict:
        if isinstance(value, str):
            return {v.strip(): {} for v in value.split(",") if v.strip() and v.strip().lower() != "none"}
        if isinstance(value, (list, tuple)):
            return {str(v): {} for v in value}
        if isinstance(value, dict):
            return {str(k): ({} if v is None or v is True else v) for k, v in value.items() if v is not False}
        raise ValueError(f"expected a mapping or a list of names, got {value!r}")
    return t(value) if isinstance(value, str) else value  # a converter (e.g. a size "4G"): text only


# ---------------------------------------------------------------- resolve + validate


def resolve(options: Sequence[Option], args: argparse.Namespace, overrides: Optional[Dict[str, Any]] = None
            ) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """``(config, where)`` from parsed flags: defaults < `overrides` (a preset) < the ``config`` file < flags.

    `where[name]` says where each value came from (``--lr``, ``run.yaml: lr``, ``default``) so
    errors name it. Raises `ConfigError` (one line) on the first bad value.
    """
    return settle(options, vars(args), overrides, source=lambda opt: opt.flag)


def from_keywords(options: Sequence[Option], values: Dict[str, Any], overrides: Optional[Dict[str, Any]] = None,
                  owner: str = "fit") -> Tuple[Dict[str, Any], Dict[str, str]]:
    """`resolve` for Python keywords (``fit(lr=0.1, config="run.yaml")``); errors name ``lr=``."""
    by_name = {o.name for o in options} | {old for o in options for old in o.aliases}
    for key in values:
        if key not in by_name:
            raise ConfigError(f"{owner}() has no option {key!r}{closest(key, sorted(by_name))}")
    return settle(options, {k: v for k, v in values.items() if v is not None}, overrides,
                  source=lambda opt: f"{opt.name}=")


def settle(options: Sequence[Option], given: Dict[str, Any], overrides: Optional[Dict[str, Any]] = None,
           source: Callable[[Option], str] = lambda opt: opt.flag) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """defaults < `overrides` < ``given["config"]`` (a YAML file) < `given`, coerced and checked;
    `source(option)` names a given value in errors (its flag, or its keyword)."""
    old_names = {old: o for o in options for old in o.aliases}
    renamed = {}
    for k, v in given.items():
        old = k[len(ALIAS):] if k.startswith(ALIAS) else (k if k in old_names else None)
        if old is None:
            renamed[k] = (v, None)
        elif old_names[old].name not in given:  # the new spelling wins when both are given
            renamed[old_names[old].name] = (v, flag_of(old) if k.startswith(ALIAS) else f"{old}=")
    given = {k: v for k, (v, _) in renamed.items()}
    spelled = {k: label for k, (_, label) in renamed.items() if label}
    cfg = {o.name: o.default for o in options if not o.flag_only}
    where = {name: "default" for name in cfg}
    for k, v in (overrides or {}).items():
        cfg[k], where[k] = v, "preset"
    path = given.get("config")
    if path:
        for k, v in load_file(path, options).items():
            cfg[k], where[k] = v, f"{path}: {k}"
    by_name = {o.name: o for o in options}
    for k, v in given.items():
        if k == "config" or k not in by_name:
            continue
        label = spelled.get(k) or source(by_name[k])
        try:
            cfg[k] = coerce(by_name[k], v)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{label}: {e}") from None
        where[k] = label
    for opt in options:
        if opt.flag_only:
            continue
        value = cfg[opt.name]
        label = where[opt.name] if where[opt.name] not in ("default", "preset") else opt.flag
        if opt.choices and value is not None:
            norm = {str(c).lower(): c for c in opt.choices}
            if str(value).lower() not in norm:
                raise ConfigError(f"{label}: {unknown_name('value', value, opt.choices)}")
            cfg[opt.name] = value = norm[str(value).lower()]
        if opt.check is not None:
            problem = opt.check(value)
            if problem:
                raise ConfigError(f"{label}: {problem}")
    return cfg, where


def label(where: Dict[str, str], options: Sequence[Option], name: str) -> str:
    """How to name option `name` in an error: its flag or ``file: key``."""
    w = where.get(name, "default")
    if w in ("default", "preset"):
        return next(o.flag for o in options if o.name == name)
    return w


def dump(path: str, cfg: Dict[str, Any]) -> None:
    """Write the resolved config as YAML (loadable again with ``--config``)."""
    with jobs.atomic_path(path) as tmp, open(tmp, "w") as fh:  # a kill leaves no partial nor temp file
        yaml.safe_dump(_plain(cfg), fh, sort_keys=False, default_flow_style=None)


def _plain(v):
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v
