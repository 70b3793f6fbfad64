"""scripts/evaluate.py (jaxcam.cli.evaluate): tables and resume, metric values against a hand computation,
failing methods reported loudly."""
import csv

import jax
import numpy as np
import pytest
from PIL import Image

import jaxcam
from jaxcam import images as images_lib
from jaxcam.cli import evaluate


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(4)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 44, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


# One setting for every run here (and test_kill_and_rerun's evaluate): the compiled metrics are shared.
BASE = ["--model", "resnet20", "--weights", "random", "--image-size", "32", "--batch-size", "2", "--steps", "2",
        "--baseline", "zeros", "--percentiles", "50"]


def test_writes_tables_and_resumes(data, tmp_path):
    out = tmp_path / "out"
    argv = BASE + ["--data", str(data), "--method", "grad_cam", "--out", str(out)]
    rows, failed = evaluate.run(argv, progress=False)
    assert not failed and [r["method"] for r in rows] == ["grad_cam", "random"]
    assert all(r["images"] == 3 for r in rows)
    for name in ("table.csv", "table.md", "curves.png"):
        assert (out / name).stat().st_size > 0
    cached = sorted(out.glob("cache/*/*/*.npz"))
    assert len(cached) == 6
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert evaluate.run(argv, progress=False)[0] == rows  # resumed from the cache: nothing recomputed
    assert [p.stat().st_mtime_ns for p in cached] == stamps
    assert evaluate.run(argv + ["--report-only"], progress=False)[0] == rows
    assert evaluate.main(argv) == 0


def test_metric_values_match_a_hand_computation(data, tmp_path):
    argv = BASE + ["--data", str(data), "--method", "grad_cam", "--score", "softmax", "--out", str(tmp_path / "o")]
    rows, _ = evaluate.run(argv, progress=False)
    got = rows[0]
    model = jaxcam.models.load("resnet20", weights=None)
    pixels = np.stack([images_lib.load(str(data / f"img{i}.png"), 32, crop_fraction=224 / 256).image for i in range(3)])
    x = np.asarray(model.preprocess(pixels))
    maps = np.asarray(jaxcam.grad_cam(model, x))

    def prob(inputs, classes):
        logits = np.asarray(model(inputs), np.float64)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        return (p / p.sum(-1, keepdims=True))[np.arange(len(classes)), classes]

    classes = np.asarray(model(x)).argmax(-1)
    y = prob(x, classes)
    o = prob(x * maps[..., None], classes)
    assert got["average_drop"] == pytest.approx(100 * np.mean(np.maximum(y - o, 0) / y), rel=1e-3, abs=1e-3)
    assert got["increase_in_confidence"] == pytest.approx(100 * np.mean(o > y), abs=1e-6)
    # deletion with 2 steps: nothing removed, the most salient half set to 0, everything 0
    half = x.copy()
    for i in range(3):
        order = np.argsort(-maps[i].ravel(), kind="stable")[: 32 * 32 // 2]
        half[i].reshape(-1, 3)[order] = 0.0
    curve = np.stack([y, prob(half, classes), prob(np.zeros_like(x), classes)], 1)
    auc = (curve[:, 0] / 2 + curve[:, 1] + curve[:, 2] / 2) / 2
    assert got["deletion_auc"] == pytest.approx(auc.mean(), rel=1e-3)


def test_bf16_explains_in_bfloat16_and_scores_in_float32(data, tmp_path):
    """--bf16: the maps are the library's maps of `model.with_compute_dtype("bfloat16")` on the float32 model's
    predicted class and the metrics score the float32 model (Average Drop by hand from those maps and that
    model); the run has a cache key of its own."""
    out = tmp_path / "out"
    argv = BASE + ["--data", str(data), "--method", "grad_cam", "--score", "softmax", "--out", str(out)]
    rows, failed = evaluate.run(argv + ["--bf16"], progress=False)
    assert not failed and rows[0]["images"] == 3
    model = jaxcam.models.load("resnet20", weights=None)
    pixels = np.stack([images_lib.load(str(data / f"img{i}.png"), 32, crop_fraction=224 / 256).image for i in range(3)])
    x = np.asarray(model.preprocess(pixels))
    classes = np.asarray(model(x)).argmax(-1)

    def average_drop(maps):
        logits = np.asarray(model(x), np.float64), np.asarray(model(x * maps[..., None]), np.float64)
        y, o = ((np.exp(v - v.max(-1, keepdims=True)) / np.exp(v - v.max(-1, keepdims=True)).sum(-1, keepdims=True))
                [np.arange(3), classes] for v in logits)
        return 100 * np.mean(np.maximum(y - o, 0) / y)

    bf16 = average_drop(np.asarray(jaxcam.grad_cam(model.with_compute_dtype("bfloat16"), x, targets=classes)))
    f32 = average_drop(np.asarray(jaxcam.grad_cam(model, x, targets=classes)))
    assert rows[0]["average_drop"] == pytest.approx(bf16, rel=1e-4, abs=1e-4)
    assert abs(bf16 - f32) > 1e-3  # bfloat16 changed the maps enough to tell the two apart
    evaluate.run(argv, progress=False)  # float32: a cache folder of its own
    assert len(list((out / "cache").iterdir())) == 2


def test_a_failing_method_is_reported_not_dropped(data, tmp_path, capsys):
    out = tmp_path / "fail"
    argv = BASE + ["--data", str(data), "--method", "grad_cam,cam", "--layer", "layer2", "--out", str(out)]
    assert evaluate.main(argv) == 1
    err = capsys.readouterr().err
    assert "FAILED cam" in err and "GAP+FC" in err
    rows = {r["method"]: r for r in csv.DictReader(open(out / "table.csv"))}
    assert set(rows) == {"grad_cam", "cam", "random"}
    assert "GAP+FC" in rows["cam"]["error"] and rows["grad_cam"]["error"] == ""
    assert "FAILED" in (out / "table.md").read_text()


def test_all_means_every_map_method():
    from jaxcam.methods import registry

    notes = []
    chosen = [m.name for m in evaluate.resolve_methods("all", notes)]
    assert chosen == registry.names(output="map", any_model=True)  # not legrad (ViTs only)
    assert "guided_backprop" in notes[0]  # the others are named, not dropped silently
