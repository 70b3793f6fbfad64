"""Recipe C end to end on an Imagenette-shaped tree built here: WordNet-id class folders, images of
mixed sizes and formats, train/ + val/, the shipped config file, early stopping, human class names."""
import csv
import json
import os

import numpy as np
import pytest
import yaml
from PIL import Image

from jaxcam import train
from jaxcam.cli import train as cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WNIDS = {"n01440764": "tench", "n02102040": "English springer", "n03000684": "chain saw"}


def imagenette_tree(root, per_class=(6, 3), seed=0):
    """train/ and val/ of WordNet-id folders; sizes 20x28 .. 40x30, JPEG and PNG mixed."""
    rng = np.random.default_rng(seed)
    sizes = [(28, 20), (30, 40), (36, 36), (24, 33)]
    for split, n in zip(("train", "val"), per_class):
        for c, wnid in enumerate(WNIDS):
            folder = os.path.join(root, split, wnid)
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                h, w = sizes[(i + c) % len(sizes)]
                img = np.clip(np.full((h, w, 3), 40 + 80 * c) + rng.integers(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(os.path.join(folder, f"{wnid}_{i}.{'JPEG' if i % 2 else 'png'}"))


def test_recipe_c_config_early_stopping_human_names_and_render(tmp_path, capsys, monkeypatch):
    data = tmp_path / "imagenette"
    imagenette_tree(str(data))
    out = tmp_path / "run"
    config = os.path.join(ROOT, "configs", "recipe_c_imagenette_resnet18.yaml")
    # the shipped recipe, shrunk: a tiny model and size, and a learning rate so small that the
    # validation accuracy cannot improve after the first epoch -> early stopping after `patience`
    # (1: two epochs, the fewest that show it firing)
    status = cli.main(["--config", config, "--data", str(data), "--out", str(out), "--model", "resnet20",
                       "--pretrained", "none", "--image-size", "16", "--load-size", "20", "--batch-size", "6",
                       "--lr", "1e-9", "--schedule", "constant", "--early-stopping", "1", "--epochs", "8",
                       "--gallery", "2", "--cam-layers", "layer3"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "early stopping" in printed
    history = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]  # best at 1, one epoch without improvement
    assert (out / "stopped.txt").read_text().startswith("early stopping")
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["early_stopping"] == 1 and resolved["plateau_patience"] == 1  # file + flags merged
    assert resolved["augment"]["random_resized_crop"] == {"scale": [0.35, 1.0]}
    names = [r["class"] for r in csv.DictReader(open(out / "per_class.csv"))]
    assert names == ["tench", "English springer", "chain saw"]
    for f in ("curves.png", "metrics.csv", "confusion.png", "misclassified.png", "cams.png"):
        assert (out / f).is_file(), f
    model = train.load_checkpoint(str(out))
    assert model.info.class_names == ("tench", "English springer", "chain saw")

    # then explain 3 random val/ images with the trained run: triptychs titled with the classes
    from jaxcam.cli import render
    from jaxcam.viz import render as render_work

    headings = []
    save = render_work.save_figure
    monkeypatch.setattr(render_work, "save_figure", lambda path, shown, heading: (headings.append(heading),
                                                                            save(path, shown, heading)))
    renders = tmp_path / "renders"
    assert render.main(["--checkpoint", str(out), "--dataset", str(data), "--split", "val", "--random", "3",
                        "--method", "grad_cam", "--image-size", "16", "--out", str(renders)]) == 0
    pngs = sorted(p for p in os.listdir(renders) if p.endswith(".png"))
    assert len(pngs) == 3 and len(headings) == 3
    for heading in headings:
        assert any(heading.startswith(f"grad_cam: true {n} ") for n in WNIDS.values()), heading  # not the WordNet id
        assert any(f"predicted {n} (" in heading for n in WNIDS.values()), heading


def test_recipe_files_load_and_validate(tmp_path):
    """Every shipped recipe passes validation (nothing read or compiled)."""
    from jaxcam import config as C

    for name in sorted(os.listdir(os.path.join(ROOT, "configs"))):
        args = C.parser("t", cli.OPTIONS).parse_args(["--config", os.path.join(ROOT, "configs", name),
                                                      "--out", str(tmp_path / name), "--data", str(tmp_path)])
        cfg, where = C.resolve(cli.OPTIONS, args)
        cli.validate(cfg, where, cli.OPTIONS)
