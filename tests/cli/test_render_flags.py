"""`jaxcam render`'s flags reach the library: with --save-maps, each saved map equals the library call with the
same options (and each flag changes the map, so an ignored flag would fail); --colormap/--alpha reach
`jaxcam.overlay`; bad values of each flag, everything else valid, end in exit 2 with one error line."""
import contextlib
import io
import os

import numpy as np
import pytest

import jaxcam
import jaxcam.viz.figures
from jaxcam import images as images_lib
from jaxcam.methods import registry
from tests.helpers import random_pngs

TINY = ["--model", "resnet20", "--weights", "none", "--image-size", "32", "--batch-size", "2"]
FLAGS = {"score": "sigmoid", "final_activation": "softmax", "window": 3, "stride": 2, "target": 3, "layer": "layer2"}
ARGV_FLAGS = ["--score", "sigmoid", "--final-activation", "softmax", "--window", "3", "--stride", "2", "--target", "3",
              "--layer", "layer2", "--colormap", "viridis", "--alpha", "0.3", "--save-maps"]
TOL = 1e-6  # the same computation on both sides: measured 0 (exact)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return random_pngs(tmp_path_factory.mktemp("flags"), ("a.png", "b.png"), (40, 50, 3), seed=3)


@pytest.fixture(scope="module")
def model():
    return jaxcam.models.load("resnet20", weights=None)


@pytest.fixture(scope="module")
def pixels(folder):
    return np.stack([images_lib.load(str(folder / n), 32).image for n in ("a.png", "b.png")])


def run(argv):
    from jaxcam.cli import render

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = render.main(argv)
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else 1
    return status, out.getvalue(), [line for line in err.getvalue().splitlines() if line.strip()]


def direct(model, pixels, method, **flags):
    """The library call the flags stand for."""
    m = registry.get(method)
    layer, target = flags.pop("layer", None), flags.pop("target", None)
    options, _ = m.accepted(flags)
    return np.asarray(m(model, model.preprocess(pixels), layer, target, **options))


def test_save_maps_equal_the_library_call_with_the_same_flags(folder, model, pixels, tmp_path, monkeypatch):
    overlays = []
    overlay = jaxcam.overlay

    def spy(image, cam, colormap="jet", alpha=0.5, **kw):
        overlays.append((np.asarray(cam), colormap, alpha))
        return overlay(image, cam, colormap, alpha, **kw)

    monkeypatch.setattr(jaxcam.viz.figures, "overlay", spy)  # where render draws its overlays
    out = tmp_path / "out"
    status, text, err = run([str(folder), "--method", "grad_cam_pp,spatial_ablation_cam", "--out", str(out)]
                            + ARGV_FLAGS + TINY)
    assert status == 0, (text, err)
    for method in ("grad_cam_pp", "spatial_ablation_cam"):  # (Grad-CAM itself is invariant to a sigmoid score)
        want = direct(model, pixels, method, **FLAGS)
        saved = np.stack([np.load(out / f"{n}_{method}.npy") for n in ("a", "b")])
        err_max = np.abs(saved - want).max()
        print(f"{method}: --save-maps vs library {err_max:.1e}")
        assert saved.dtype == np.float32 and saved.shape == (2, 32, 32) and err_max <= TOL
        for flag in FLAGS:  # each flag changes the map: render ignoring it would fail the check above
            if flag in ("window", "stride") and method == "grad_cam_pp":
                continue
            without = direct(model, pixels, method, **{k: v for k, v in FLAGS.items() if k != flag})
            assert np.abs(without - want).max() > 1e-3, (method, flag)
    # --colormap / --alpha: every overlay drawn with them, of the saved maps.
    assert overlays and {(c, a) for _, c, a in overlays} == {("viridis", 0.3)}
    saved = [np.load(p) for p in sorted(out.glob("*.npy"))]
    assert all(any(np.array_equal(cam, s) for s in saved) for cam, _, _ in overlays)


@pytest.mark.parametrize("flag,value,says", [
    ("--alpha", "1.5", "--alpha"), ("--alpha", "x", "--alpha"), ("--colormap", "no_such_map", "--colormap"),
    ("--window", "0", "--window"), ("--stride", "-1", "--stride"), ("--score", "probability", "--score"),
    ("--final-activation", "tanh", "--final-activation"), ("--batch-size", "0", "--batch-size"),
    ("--image-size", "0", "--image-size"), ("--chunk-size", "0", "--chunk-size"),
    ("--max-memory", "lots", "--max-memory"), ("--method", "grad_camm", "grad_camm"),
    ("--target", "caat", "--target"), ("--target", "10", "--target"), ("--layer", "layer9", "--layer"),
    ("--num-processes", "0", "--num-processes"),
])
def test_bad_flag_value_with_everything_else_valid_exits_2(folder, tmp_path, flag, value, says):
    """Model, weights, inputs and the other flags are valid: only the flag under test can stop the run."""
    out = tmp_path / "out"
    argv = [str(folder), "--method", "fast_ablation_cam", "--out", str(out)] + TINY
    if flag in ("--batch-size", "--image-size"):
        argv = argv[: argv.index(flag)] + argv[argv.index(flag) + 2:]
    status, text, err = run(argv + [flag, value])
    assert status == 2, (text, err)
    assert len(err) == 1 and "error:" in err[0] and says in err[0], err
    assert not out.exists() or not [p for p in os.listdir(out) if p.endswith(".png")]
