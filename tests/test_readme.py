"""Every ```python block of README.md runs (in order, one namespace, as a reader would paste them), and the
README's methods table matches the registry."""
import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_python_blocks_run(tmp_path, monkeypatch):
    code = blocks("python")
    assert len(code) >= 4
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    namespace = {"__name__": "readme"}
    for i, block in enumerate(code):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)  # noqa: S102


def methods_table():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Methods"):]
    section = section[: section.index("\n\n", section.index("|---"))]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    out = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        out[cells[0].strip("`")] = cells
    return out


def test_methods_table_matches_the_registry():
    from jaxcam.methods.registry import REGISTRY

    table = methods_table()
    assert sorted(table) == sorted(REGISTRY)
    for name, (_, aliases, family, output, _what, pgc) in table.items():
        m = REGISTRY[name]
        assert aliases == ", ".join(m.aliases), name
        assert (family, output) == (m.family, m.output), name
        assert pgc == (m.pgc or "–"), name
