"""No import circle inside the jaxcam package (module-level imports, read from the source's AST)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jaxcam"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path, modules: set) -> set:
    """jaxcam modules imported at module level (imports inside functions are lazy and do not count)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        stmts = [node]
        if isinstance(node, ast.If) or isinstance(node, ast.Try):
            stmts = list(ast.walk(node))
        for stmt in stmts:
            if isinstance(stmt, ast.Import):
                found |= {a.name for a in stmt.names}
            elif isinstance(stmt, ast.ImportFrom):
                base = stmt.module or ""
                if stmt.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - stmt.level + 1] + ([base] if base else []))
                found.add(base)
                found |= {f"{base}.{a.name}" for a in stmt.names}
    return {m for m in found if m in modules and m != name}


def test_no_import_circle():
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    graph = {module_name(f): top_level_imports(f, modules) for f in files}
    # importing a.b.c also imports its packages a and a.b
    for mod, deps in graph.items():
        graph[mod] = deps | {".".join(d.split(".")[:i]) for d in deps for i in range(2, d.count(".") + 1)} - {mod}
    state, stack = {}, []

    def visit(mod):
        state[mod] = "open"
        stack.append(mod)
        for dep in sorted(graph.get(mod, ())):
            if dep.startswith(mod + "."):
                continue  # a package importing its own submodules is not a circle
            if state.get(dep) == "open" and not mod.startswith(dep + "."):
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(dep):] + [dep]))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[mod] = "done"

    for mod in sorted(graph):
        if mod not in state:
            visit(mod)
