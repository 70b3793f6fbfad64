"""scripts/render.py end to end on generated images with a small random CIFAR ResNet-20 (32 px)."""
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxcam import images as images_lib

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "render.py"
TINY = ["--model", "resnet20", "--weights", "none", "--image-size", "32", "--batch-size", "2"]


@pytest.fixture(scope="module")
def render():
    spec = importlib.util.spec_from_file_location("render_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_script"] = module  # dataclasses need their module registered
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """3 good images (one in a class folder 'cat'), a corrupt .jpg and a text file."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    (root / "cat").mkdir()
    for name in ("a.png", "b.jpg", "cat/c.png"):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(root / name)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "notes.txt").write_text("hello")
    return root


def _pngs(folder):
    return sorted(p.name for p in Path(folder).glob("*.png"))


def test_renders_triptychs_skips_corrupt_and_resumes(render, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(inputs), str(inputs / "notes.txt"), "--method", "grad_cam,fast_ablation", "--out", str(out)] + TINY
    assert render.main(args) == 0
    names = ["a", "b", "c"]
    expected = sorted([f"{n}_{m}.png" for n in names for m in ("fast_ablation_cam", "grad_cam")] + ["grid.png"])
    assert _pngs(out) == expected
    with Image.open(out / "a_grad_cam.png") as img:
        assert img.size == (1050, 390) and img.mode in ("RGB", "RGBA")
    text = capsys.readouterr().out
    assert "broken.jpg" in text and "notes.txt" in text and "skipped 2 unreadable" in text
    assert not [p for p in os.listdir(out) if p.startswith(".tmp-")]

    # A second run finds everything done and recomputes nothing.
    stamps = {p: (out / p).stat().st_mtime_ns for p in expected if p != "grid.png"}
    (out / "b_grad_cam.png").unlink()
    assert render.main(args) == 0
    assert "2 of 5 images already rendered" in capsys.readouterr().out
    assert (out / "b_grad_cam.png").exists()
    assert (out / "a_grad_cam.png").stat().st_mtime_ns == stamps["a_grad_cam.png"]

    # Other settings in the same folder are refused instead of mixing results.
    assert render.main(args + ["--alpha", "0.3"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_triptych_overlay_is_hot_where_the_map_is(render, tmp_path):
    image = np.full((32, 32, 3), 128, np.uint8)
    cam = np.zeros((32, 32), np.float32)
    cam[:, :16] = 1.0
    args = render.parse_args(["--colormap", "jet", "--alpha", "0.5"])
    path = tmp_path / "t.png"
    render.save_triptych(str(path), image, cam, args, "title")
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    red_minus_blue = pixels[..., 0] - pixels[..., 2]
    rows = slice(100, 300)  # the overlay panel spans about x = 705..1035 of the 1050 px figure
    left, right = red_minus_blue[rows, 730:840], red_minus_blue[rows, 900:1010]
    assert np.median(left) > 50 and np.median(right) < -50


def test_nothing_readable_exits_nonzero(render, inputs, tmp_path, capsys):
    code = render.main([str(inputs / "broken.jpg"), "--method", "grad_cam", "--out", str(tmp_path / "o")] + TINY)
    assert code == 1
    assert "skipped 1 unreadable" in capsys.readouterr().out


def test_usage_errors_are_clear_and_early(render, inputs, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert render.main(["--method", "grad_cam", "--out", str(blocker / "sub")] + TINY) == 2
    assert "cannot write to output folder" in capsys.readouterr().err

    assert render.main(["--method", "grad_camm", "--out", str(tmp_path / "o")] + TINY) == 2
    err = capsys.readouterr().err
    assert "unknown method 'grad_camm'" in err and "Did you mean grad_cam" in err and "score_cam" in err

    assert render.main(["--model", "resnet2000", "--out", str(tmp_path / "o")]) == 2
    assert "unknown model 'resnet2000'" in capsys.readouterr().err

    assert render.main([str(inputs), "--target", "caat", "--out", str(tmp_path / "o")] + TINY) == 2
    assert "closest: 'cat'" in capsys.readouterr().err

    assert render.main([str(inputs), "--layer", "layer9", "--out", str(tmp_path / "o")] + TINY) == 2
    assert "unknown layer 'layer9'" in capsys.readouterr().err


def test_target_names_and_true_labels(render):
    names = ("airplane", "cat", "dog")
    assert render.resolve_target("Cat", names) == 1 and render.resolve_target("2", names) == 2
    items, unmatched = render.file_items(["/no/such/file.png"], names)
    assert items == [] and unmatched == ["/no/such/file.png"]


def test_expand_and_load(inputs):
    paths, unmatched = images_lib.expand([str(inputs), str(inputs / "*.png"), str(inputs / "nothing*.jpg")])
    assert [Path(p).name for p in paths] == ["a.png", "b.jpg", "broken.jpg", "c.png"]
    assert unmatched == [str(inputs / "nothing*.jpg")]
    loaded = {Path(item.path).name: item for item in images_lib.load_all(paths, size=32)}
    assert loaded["a.png"].image.shape == (32, 32, 3) and loaded["a.png"].image.dtype == np.uint8
    assert loaded["broken.jpg"].image is None and loaded["broken.jpg"].error
