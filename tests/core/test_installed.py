"""What a user's install contains: the package files, every subpackage, the shipped data.

CI (.ci/run) installs the built wheel into a fresh environment and runs the suite from outside the
source tree with JAXCAM_SOURCE_TREE set to the clone: then `import jaxcam` must resolve to the
installed copy, so a file missing from the wheel fails here instead of being read from the clone.
"""
import importlib
import os
import pkgutil
import sys
from pathlib import Path

import jaxcam
from jaxcam import images
from jaxcam.models import classes

PACKAGE = Path(jaxcam.__file__).resolve().parent


def test_tests_run_against_the_installed_package():
    source = os.environ.get("JAXCAM_SOURCE_TREE")
    if source is None:  # a developer's run from the clone (PYTHONPATH=$PWD)
        return
    assert not PACKAGE.is_relative_to(Path(source).resolve()), f"jaxcam imported from the clone: {PACKAGE}"
    assert "site-packages" in PACKAGE.parts, PACKAGE


def test_every_subpackage_and_module_imports(monkeypatch):
    if "keras" not in sys.modules:  # jaxcam.keras needs Keras on JAX (tests/core/test_keras.py sets the same)
        monkeypatch.setenv("KERAS_BACKEND", "jax")
    names = [m.name for m in pkgutil.walk_packages([str(PACKAGE)], prefix="jaxcam.")]
    for expected in ("jaxcam.methods.ablation", "jaxcam.metrics.road_impute", "jaxcam.models.convert",
                     "jaxcam.data.pipeline", "jaxcam._src.split"):
        assert expected in names, expected
    from jaxcam import _native

    _native.available()  # loads libdnnl.so.3, which the compiled handler library (jaxcam._native._conv_dnnl) links to
    for name in names:
        importlib.import_module(name)


def test_shipped_data_files():
    photos = images.sample_photos()
    assert len(photos) >= 4 and all(Path(p).resolve().is_relative_to(PACKAGE) for p in photos)
    assert {"astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"} <= {Path(p).name for p in photos}
    assert all(Path(p).stat().st_size > 10_000 for p in photos)
    assert (PACKAGE / "data" / "imagenet_classes.tsv").is_file()
    names = classes.imagenet_names()
    assert len(names) == 1000 and names[285] == "Egyptian cat"
