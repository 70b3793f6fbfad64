"""`jaxcam.train.fit`: a whole training run from Python in one call (tiny CIFAR ResNet-20 at 16 px)."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import jaxcam
import jaxcam.train
from jaxcam.config import ConfigError


def _tree(root, size=16, per_class=4):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            os.makedirs(os.path.join(root, split, c), exist_ok=True)
            for i in range(per_class):
                img = np.full((size, size, 3), 200 * (c == "dog"), np.uint8) + rng.integers(0, 30, (size, size, 3),
                                                                                          dtype=np.uint8)
                Image.fromarray(img).save(os.path.join(root, split, c, f"{i}.png"))


def test_fit_trains_reports_and_resumes_in_one_call(tmp_path):
    _tree(str(tmp_path / "data"))
    seen = []
    summary = jaxcam.train.fit(str(tmp_path / "data"), str(tmp_path / "run"), model="resnet20", epochs=1,
                               batch_size=4, lr=0.05, gallery=2, cam_layers=["layer3"], progress=seen.append)
    assert summary["epochs_run"] == 1 and 0.0 <= summary["val_acc"] <= 1.0
    assert [r["epoch"] for r in seen] == [1] and {"train_loss", "val_acc", "lr"} <= set(seen[0])
    for name in ("metrics.json", "config.yaml", "summary.json", "per_class.csv", "curves.png"):
        assert (tmp_path / "run" / name).is_file(), name
    model = jaxcam.train.load_checkpoint(str(tmp_path / "run"))
    assert model.info.input_size == 16  # decided once (the data's size), read back from the model
    assert model.info.class_names == ("cat", "dog")

    # the same call with more epochs resumes; a callback returning False stops after that epoch
    summary = jaxcam.train.fit(str(tmp_path / "data"), str(tmp_path / "run"), model="resnet20", epochs=3,
                               batch_size=4, lr=0.05, gallery=0, progress=lambda record: False)
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and summary["epochs_run"] == 2
    assert "progress callback" in (tmp_path / "run" / "stopped.txt").read_text()


def test_fit_bad_keyword_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"fit\(\) has no option 'lrr' \(did you mean 'lr'\?\)"):
        jaxcam.train.fit(str(tmp_path), str(tmp_path / "run"), lrr=0.1)
    with pytest.raises(ConfigError, match=r"^epochs=: must be >= 1"):
        jaxcam.train.fit(str(tmp_path), str(tmp_path / "run"), epochs=0)
    assert not (tmp_path / "run").exists()
