"""A method is declared once: one decorated function is the public function (its own signature and
docstring), the registry entry, the option checks and a command-line flag of ``jaxcam render``."""
import inspect

import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
from jaxcam._src.runner import run
from jaxcam.cli import render
from jaxcam.methods import registry
from jaxcam.methods.registry import FINAL_ACTIVATION, Option, method


@pytest.fixture
def toy():
    """Declares `toy_cam` in one place (as a new file in jaxcam/methods/ would) and removes it afterwards."""
    def toy_map(split, x, targets, strength=1):
        a = split.features(x)
        return jnp.abs(a) ** strength

    @method(family="random", options=(Option("toy_strength", 1, "power of |A|", positive=True), FINAL_ACTIVATION),
            aliases=("toy",), formula="|A|^strength")
    def toy_cam(model, x, layer=None, targets=None, *, toy_strength=1, final_activation="relu"):
        """Toy-CAM: the layer's |activations| to a power, summed over channels."""
        return run(toy_map, model, x, layer, targets, final_activation, strength=toy_strength)

    yield toy_cam
    registry.REGISTRY.pop("toy_cam")
    for key in [k for k, v in registry._LOOKUP.items() if v == "toy_cam"]:
        registry._LOOKUP.pop(key)


def test_one_declaration_gives_registry_public_function_checks_and_flag(toy, tmp_path):
    entry = registry.get("toy")
    assert entry.name == "toy_cam" and entry.fn is toy and entry.rule is toy.__wrapped__
    assert "toy_cam" in jaxcam.__all__ and jaxcam.toy_cam is toy and jaxcam.methods.toy_cam is toy
    assert list(inspect.signature(toy).parameters)[-2:] == ["toy_strength", "final_activation"]
    assert toy.__doc__.startswith("Toy-CAM")
    assert "| `toy_cam` | toy | random | map | |A|^strength |" in registry.markdown_table()

    model = jaxcam.models.load("resnet20", weights=None)
    x = np.zeros((1, 32, 32, 3), np.float32) + 0.1
    assert toy(model, x, toy_strength=2).shape == (1, 32, 32)
    with pytest.raises(ValueError, match="toy_strength must be a positive int"):
        toy(model, x, toy_strength=0)

    flags = {o.flag for o in render.options()}
    assert "--toy-strength" in flags
    out = tmp_path / "out"
    assert render.main(["--method", "toy", "--toy-strength", "2", "--model", "resnet20", "--weights", "none",
                        "--image-size", "32", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*_toy_cam.png"))
    assert render.main(["--method", "toy", "--toy-strength", "0", "--out", str(out)]) == 2


def test_options_are_checked_once_per_call(monkeypatch):
    """A render call checks each option once (the command), not again per batch or in the body."""
    calls = []
    original = Option.check

    def counting(self, value):
        calls.append(self.name)
        return original(self, value)

    monkeypatch.setattr(Option, "check", counting)
    model = jaxcam.models.load("resnet20", weights=None)
    images = np.zeros((4, 32, 32, 3), np.uint8)
    jaxcam.explain("grad_cam", model, images, batch_size=2, score="softmax")  # 2 batches
    assert calls.count("score") == 1
    calls.clear()
    jaxcam.grad_cam(model, model.preprocess(images), score="softmax")
    assert calls.count("score") == 1
