"""CAM methods: each a pure function ``method(model, x, layer=None, targets=None, **options)``.

One file per method (or family), each method declared once with `registry.method`. Importing this
package imports every module in it, so the registry lists every method (``registry.names()``) and
this package exports each registered method under its name, plus the helpers a method module lists
in its ``__all__`` (e.g. `deprocess_gradients`); ``__all__`` is read from the registry when asked
for. Adding a method = adding one file here (see CONTRIBUTING.md).
"""
import importlib as _importlib
import pkgutil as _pkgutil

from jaxcam.methods import registry


_modules = [_importlib.import_module(f"{__name__}.{info.name}") for info in _pkgutil.iter_modules(__path__)
            if info.name != "registry" and not info.name.startswith("_")]


def _public() -> dict:
    """{name: function}: every registered method (by its registry name) and every module's ``__all__``."""
    found = {}
    for m in registry.REGISTRY.values():
        module = _importlib.import_module(m.rule.__module__)
        found[m.name] = getattr(module, m.name, m.fn)  # a module may export its own richer function by that name
    for module in _modules:
        found.update({name: getattr(module, name) for name in getattr(module, "__all__", ())})
    return found


globals().update(_public())


def __getattr__(name: str):
    """``__all__`` and methods declared after this package was imported (e.g. in your own module),
    straight from the registry: a method declared anywhere is part of the public surface."""
    if name == "__all__":
        return ["registry"] + sorted(_public())
    public = _public()
    if name in public:
        return public[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
