"""scripts/render.py (jaxcam.cli.render) end to end with a small random CIFAR ResNet-20 (32 px): generated
images, a shipped photo through every registry method, dataset picking, chunk sizes."""
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jaxcam
from jaxcam import images as images_lib
from jaxcam.cli import common
from jaxcam.methods import registry
from tests.helpers import random_pngs

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "render.py"  # a shim over jaxcam.cli.render
TINY = ["--model", "resnet20", "--weights", "none", "--image-size", "32", "--batch-size", "2"]


@pytest.fixture(scope="module")
def render():
    spec = importlib.util.spec_from_file_location("render_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_script"] = module  # dataclasses need their module registered
    spec.loader.exec_module(module)
    import jaxcam.cli.render

    assert module.main is jaxcam.cli.render.main  # the script is a shim
    return jaxcam.cli.render


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """3 good images (one in a class folder 'cat'), a corrupt .jpg and a text file."""
    root = random_pngs(tmp_path_factory.mktemp("inputs"), ("a.png", "b.jpg", "cat/c.png"), (40, 50, 3))
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
    path = tmp_path / "t.png"
    render.save_figure(str(path), render.panels("map", image, cam, "jet", 0.5), "title")
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
    assert common.class_index("Cat", names) == 1 and common.class_index("2", names) == 2
    items, unmatched = render.file_items(["/no/such/file.png"], names)
    assert items == [] and unmatched == ["/no/such/file.png"]


def test_expand_and_load(inputs):
    paths, unmatched = images_lib.expand([str(inputs), str(inputs / "*.png"), str(inputs / "nothing*.jpg")])
    assert [Path(p).name for p in paths] == ["a.png", "b.jpg", "broken.jpg", "c.png"]
    assert unmatched == [str(inputs / "nothing*.jpg")]
    loaded = {Path(item.path).name: item for item in images_lib.load_all(paths, size=32)}
    assert loaded["a.png"].image.shape == (32, 32, 3) and loaded["a.png"].image.dtype == np.uint8
    assert loaded["broken.jpg"].image is None and loaded["broken.jpg"].error


def test_every_registry_method_renders_a_shipped_photo(render, tmp_path):
    """One process call, --method all: a PNG per registry name (maps, attributions, several maps). With
    --chunk-size 16 and --save-maps, the ablation and score families' maps equal the library's called with
    chunk_size=16 (the flag reaches the library; the call reuses the programs the render compiled). That a
    chunk size never changes a map is checked per method against references: the `chunk_size` rows of
    tests/methods/test_option_values_pgc.py and tests/methods/test_option_values.py."""
    photo = images_lib.sample_photos()[0]
    out = tmp_path / "all"
    assert render.main([photo, "--method", "all", "--chunk-size", "16", "--save-maps", "--out", str(out)] + TINY) == 0
    stem = Path(photo).stem
    assert _pngs(out) == sorted([f"{stem}_{name}.png" for name in registry.names(any_model=True)] + ["grid.png"])
    with Image.open(out / f"{stem}_gradient_cams.png") as img:  # 1 original + 6 maps, side by side
        assert img.size[0] > 2 * img.size[1]
    model = jaxcam.models.load("resnet20", weights=None)
    pixels = images_lib.load(photo, 32).image[None]
    for name in registry.names(family="ablation") + registry.names(family="score"):
        direct = jaxcam.explain(name, model, pixels, batch_size=2, chunk_size=16).numpy()[0]
        np.testing.assert_allclose(np.load(out / f"{stem}_{name}.npy"), direct, rtol=0, atol=1e-6, err_msg=name)


def test_per_image_maps_differ_across_images():
    model = jaxcam.models.load("resnet20", weights=None)
    pixels = np.stack([images_lib.load(p, 32).image for p in images_lib.sample_photos()[:3]])
    for name in ("grad_cam", "ablation_cam", "score_cam"):
        maps = jaxcam.explain(name, model, pixels, batch_size=2, targets=0).numpy()
        alone = np.stack([np.asarray(registry.get(name)(model, model.preprocess(p[None]), targets=0))[0] for p in pixels])
        np.testing.assert_allclose(maps, alone, atol=1e-4)  # batching does not mix images
        assert np.abs(maps[0] - maps[1]).max() > 0.05 and np.abs(maps[1] - maps[2]).max() > 0.05


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """<root>/val/<class>/<image>: classes airplane (3 images) and cat (2 images)."""
    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(1)
    for cls, n in (("airplane", 3), ("cat", 2)):
        (root / "val" / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "val" / cls / f"{i}.png")
    return root


def test_dataset_picking_and_titles(render, tree, tmp_path, capsys):
    base = ["--dataset", str(tree), "--split", "val", "--method", "grad_cam"] + TINY
    out = tmp_path / "idx"
    assert render.main(base + ["--class-idx", "1", "--index", "1", "--out", str(out)]) == 0  # class 1 = cat
    assert _pngs(out) == ["cat_1_grad_cam.png"]
    assert render.main(base + ["--class-idx", "Cat", "--index", "0", "--out", str(out)]) == 0
    assert _pngs(out) == ["cat_0_grad_cam.png", "cat_1_grad_cam.png"]
    out = tmp_path / "rnd"
    assert render.main(base + ["--random", "2", "--seed", "3", "--out", str(out)]) == 0
    first = _pngs(out)
    out2 = tmp_path / "rnd2"
    assert render.main(base + ["--random", "2", "--seed", "3", "--out", str(out2)]) == 0
    assert len(first) == 2 and _pngs(out2) == first  # seeded
    assert render.main(base + ["--index", "9", "--out", str(tmp_path / "x")]) == 2
    assert "--index 9 is out of range" in capsys.readouterr().err
    assert render.main(base[:2] + ["--split", "train", "--out", str(tmp_path / "x")] + TINY) == 2
    assert "splits there: val" in capsys.readouterr().err

    model = jaxcam.models.load("resnet20", weights=None)
    probs = np.array([0.1, 0.0, 0.0, 0.7, 0.2, 0, 0, 0, 0, 0])
    assert render.title(model, "grad_cam", probs, None, "deer") == "grad_cam: true deer (0.20) | predicted cat (0.70)"
