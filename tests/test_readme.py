"""Every ```python block of README.md and of each tutorial page (docs/tutorials/*.md) runs, in order, in
one namespace per page, as a reader would paste them; the README's example gives real (non-constant)
maps and a PNG; the README's methods table matches the registry.

CI runs a copy of tests/ outside the source tree: the pages are read from JAXCAM_SOURCE_TREE there.
"""
import os
import re
from pathlib import Path

import numpy as np
import pytest

SOURCE = Path(os.environ.get("JAXCAM_SOURCE_TREE") or Path(__file__).resolve().parents[1])
README = SOURCE / "README.md"
TUTORIALS = sorted((SOURCE / "docs" / "tutorials").glob("*.md"))


def blocks(page: Path, language: str = "python"):
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


def run_page(page: Path) -> dict:
    """Run the page's python blocks (in the current directory); returns their namespace."""
    code = blocks(page)
    namespace = {"__name__": page.stem}
    for i, block in enumerate(code):
        exec(compile(block, f"{page.name} python block {i + 1}", "exec"), namespace)  # noqa: S102
    return namespace


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = run_page(README)
    maps = np.asarray(namespace["maps"])  # the first example's maps: real maps, not a blank one
    assert maps.shape == (4, 224, 224)
    assert (maps.max(axis=(1, 2)) - maps.min(axis=(1, 2)) > 0.5).all(), "a README map is constant"
    assert len(list(tmp_path.glob("*_grad_cam.png"))) == 4
    assert np.ptp(np.asarray(namespace["cams"])) > 0  # the trained model's maps


@pytest.mark.parametrize("page", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(page, tmp_path, monkeypatch):
    """A page runs its own blocks, or shows a README section (`--8<-- "README.md:name"`), which
    test_readme_python_blocks_run runs (the costly training example runs once)."""
    monkeypatch.chdir(tmp_path)
    if blocks(page):
        run_page(page)
        return
    included = re.findall(r'^--8<-- "README.md:(\w+)"$', page.read_text(encoding="utf-8"), flags=re.M)
    assert included, f"{page.name}: neither a ```python block nor a README section"
    for name in included:
        section = re.search(rf"\[start:{name}\](.*?)\[end:{name}\]", README.read_text(encoding="utf-8"), flags=re.S)
        assert section and "```python" in section.group(1), f"README.md has no python section {name!r}"


def test_every_tutorial_is_in_the_site():
    nav = (SOURCE / "mkdocs.yml").read_text(encoding="utf-8")
    assert TUTORIALS and all(f"tutorials/{p.name}" in nav for p in TUTORIALS)


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
