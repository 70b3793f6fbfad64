"""MkDocs hook: the pages' registry-derived text, generated at build time from `jaxcam.methods.registry`.

A page asks for generated text with a marker line; nothing of the registry is typed into the docs:

    <!-- registry:table -->      the methods table (the README's, `registry.markdown_table()`)
    <!-- registry:methods -->    one section per method: formula, family, output, names, paper, options
    <!-- registry:api -->        one API reference block (mkdocstrings) per method function, then per
                                 public helper of the method modules (their ``__all__``: `multi_layer`, ...)
    <!-- options:train -->       the options of `jaxcam.train.fit` / ``jaxcam train`` (`jaxcam.config.Option`s);
    <!-- options:render -->, <!-- options:evaluate -->  those of the other two commands
"""
import importlib
import inspect
import re

MARKER = re.compile(r"^<!-- (registry|options):(\w+) -->$", flags=re.M)
COMMANDS = {"train": "jaxcam.train.options", "render": "jaxcam.cli.render", "evaluate": "jaxcam.cli.evaluate"}


def _value(value) -> str:
    return "–" if value is None else f"`{value!r}`"


def _cell(text: str) -> str:
    """`text` inside a Markdown table cell (a bare | would end the cell)."""
    return str(text).replace("|", "\\|")


def _section(m) -> str:
    lines = [f"### {m.name}", "", m.doc, ""]
    lines += [f"- **computes**: {m.formula}" if m.formula else "",
              f"- **family / output**: {m.family} / {m.output}",
              f"- **also called**: {', '.join(f'`{a}`' for a in m.aliases) or '–'}",
              f"- **pytorch-grad-cam**: {f'`{m.pgc}`' if m.pgc else '–'}",
              f"- **paper**: {m.paper or '–'}",
              f"- **call**: `jaxcam.{m.name}(model, x{', layer=None' if m.takes_layer else ''}, targets=None, ...)`"
              f" ([API][{m.rule.__module__}.{m.rule.__name__}])", ""]
    if m.options:
        lines += ["| option | default | accepts | what it does |", "|---|---|---|---|"]
        lines += [f"| `{o.name}` | {_value(o.default)} | "
                  f"{', '.join(map(_value, o.choices)) if o.choices else ('int >= 1' if o.positive else 'see default')}"
                  f" | {_cell(o.doc)} |" for o in m.options]
    return "\n".join(line for line in lines if line is not None) + "\n"


def _options(command: str) -> str:
    """A table of a command's declared options: flag (the `fit()` keyword with underscores), default, help."""
    rows = ["| flag | default | what it does |", "|---|---|---|"]
    for o in importlib.import_module(COMMANDS[command]).OPTIONS:
        if o.positional:
            continue
        text = _cell(o.help) + (f" (one of: {', '.join(map(str, o.choices))})" if o.choices else "")
        rows.append(f"| `{o.flag}` | {_value(o.default)} | {text} |")
    return "\n".join(rows) + "\n"


def _generated(source: str, kind: str) -> str:
    if source == "options":
        return _options(kind)
    from jaxcam.methods import registry  # the installed jaxcam (the one the API pages document)

    ordered = sorted(registry.REGISTRY.values(), key=lambda m: (registry.FAMILIES.index(m.family), m.name))
    if kind == "table":
        return registry.markdown_table()
    if kind == "methods":
        out = []
        for family in registry.FAMILIES:
            members = [m for m in ordered if m.family == family]
            if members:
                out.append(f"## {family.capitalize()} family\n\n" + "\n".join(map(_section, members)))
        return "\n".join(out)
    import jaxcam.methods

    helpers = [getattr(jaxcam.methods, n) for n in jaxcam.methods.__all__ if n not in registry.REGISTRY]
    paths = [f"{m.rule.__module__}.{m.rule.__name__}" for m in ordered]
    paths += sorted(f"{h.__module__}.{h.__qualname__}" for h in helpers if not inspect.ismodule(h))
    return "\n".join(f"::: {path}\n" for path in paths)


def on_page_markdown(markdown, page, config, files):
    return MARKER.sub(lambda match: _generated(match.group(1), match.group(2)), markdown)
