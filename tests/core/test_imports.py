"""No import circle inside the jaxcam package, lazy (function-level) imports included.

Read from the source's AST: every ``import``/``from ... import`` anywhere in a module is an edge, so a
circle hidden behind a function-level import fails too. ``from a.b import c`` is an edge to ``a.b.c``
when that is a module, else to ``a.b``; a package importing its own submodules is not a circle.
"""
import ast
import importlib.util
from pathlib import Path

# The package that `import jaxcam` would load (the installed one in CI), found without importing it.
PACKAGE = Path(importlib.util.find_spec("jaxcam").origin).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set) -> set:
    """jaxcam modules `path` imports anywhere (module level or inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for stmt in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(stmt, ast.Import):
            found |= {a.name for a in stmt.names}
        elif isinstance(stmt, ast.ImportFrom):
            base = stmt.module or ""
            if stmt.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - stmt.level + 1] + ([base] if base else []))
            for a in stmt.names:
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
    return {m for m in found if m in modules and m != name and not m.startswith(name + ".")}


def graph() -> dict:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports(f, modules) for f in files}


def find_circle(edges: dict):
    """One circle as a list of modules, or None."""
    state, stack = {}, []

    def visit(mod):
        state[mod] = "open"
        stack.append(mod)
        for dep in sorted(edges.get(mod, ())):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[mod] = "done"
        return None

    for mod in sorted(edges):
        if mod not in state:
            found = visit(mod)
            if found:
                return found
    return None


def test_no_import_circle():
    circle = find_circle(graph())
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_the_checker_finds_a_lazy_circle():
    # the checker itself must fail on what it is meant to catch
    assert find_circle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_circle({"a": {"b"}, "b": set()}) is None
