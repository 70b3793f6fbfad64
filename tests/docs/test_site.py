"""The documentation site builds with ``mkdocs build --strict`` (a broken link, a missing page or an
unresolved API reference fails), from the source tree's mkdocs.yml and docs/ and the *imported* jaxcam
(in CI the installed wheel: the tests run from a copy of tests/ and find the sources through
JAXCAM_SOURCE_TREE). The registry-generated parts are checked against the registry itself."""
import html
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import jaxcam
from jaxcam.methods.registry import REGISTRY

SOURCE = Path(os.environ.get("JAXCAM_SOURCE_TREE") or Path(__file__).resolve().parents[2])


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    # -P: the source tree (the working directory) is not put on sys.path, so the hook and the API pages
    # see the jaxcam this interpreter imports (mkdocs.yml's mkdocstrings `paths` do not name the tree either).
    done = subprocess.run([sys.executable, "-P", "-m", "mkdocs", "build", "--strict", "--quiet",
                           "-f", str(SOURCE / "mkdocs.yml"), "-d", str(out)],
                          cwd=SOURCE, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    return out


def page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text(encoding="utf-8")


def test_every_docs_page_is_built(site):
    for md in (SOURCE / "docs").rglob("*.md"):
        name = md.relative_to(SOURCE / "docs").with_suffix("")
        built = site / ("index.html" if name.name == "index" and name.parent == Path(".") else
                        name.parent / "index.html" if name.name == "index" else name / "index.html")
        assert built.exists(), f"docs/{md.relative_to(SOURCE / 'docs')} is not in the built site"


def test_methods_page_has_every_registry_method_with_its_options(site):
    text = html.unescape(re.sub(r"<[^>]+>", "", page(site, "methods")))
    for m in REGISTRY.values():
        assert m.formula.replace("`", "").replace("**", "") in text, m.name
        for option in m.options:
            assert option.doc.replace("`", "") in text, (m.name, option.name)


def test_api_reference_has_every_public_name(site):
    ids = set()
    for built in (site / "api").rglob("index.html"):
        ids |= set(re.findall(r'id="(jaxcam\.[\w.]+)"', built.read_text(encoding="utf-8")))
    missing = []
    for name in jaxcam.__all__:
        obj = REGISTRY[name].rule if name in REGISTRY else getattr(jaxcam, name)
        where = obj.__name__ if inspect.ismodule(obj) else f"{obj.__module__}.{obj.__qualname__}"
        if not any(i in (f"jaxcam.{name}", where) or i.startswith(f"jaxcam.{name}.") for i in ids):
            missing.append(where)
    assert not missing, f"no API entry for {missing}"


def test_performance_page_includes_benchmarks(site):
    first_heading = (SOURCE / "BENCHMARKS.md").read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip()
    assert html.escape(first_heading, quote=False)[:40] in page(site, "performance")
