"""Issue 20 for `jaxcam train` / `jaxcam finetune` (scripts/train.py, scripts/finetune_cifar.py): every
bad option gives exit status 2 and one stderr line naming the option, within seconds, before any data
is read or anything is compiled, with nothing written to the output folder."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from jaxcam.cli import finetune, train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("errs") / "data"
    for split, n in (("train", 4), ("val", 3)):
        for c in ("a", "b"):
            os.makedirs(root / split / c)
            for i in range(n if c == "a" else 1):
                Image.fromarray(np.full((8, 8, 3), 50, np.uint8)).save(root / split / c / f"{i}.png")
    return root  # val: 4 images


CASES = [  # (extra argv, text the one line must contain)
    (["--batch-size", "0"], "--batch-size: must be >= 1"),
    (["--lr", "-1"], "--lr: must be > 0"),
    (["--lr", "0"], "--lr: must be > 0"),
    (["--epochs", "0"], "--epochs: must be >= 1"),
    (["--epochs", "two"], "--epochs"),
    (["--image-size", "0"], "--image-size: must be >= 8"),
    (["--gallery", "-1"], "--gallery: must be >= 0"),
    (["--gallery", "5"], "--gallery: 5 is more than the 4 evaluation images"),
    (["--batch-size", "64"], "--batch-size: 64 is more than the 5 training images"),
    (["--model", "nosuch"], "--model: unknown model 'nosuch'"),
    (["--model", "resnet81"], "did you mean 'resnet18'"),
    (["--schedule", "cosin"], "--schedule: unknown value 'cosin' (did you mean 'cosine'?)"),
    (["--optimizer", "adam"], "--optimizer: unknown value 'adam'"),
    (["--label-smoothing", "1.5"], "--label-smoothing: must be in [0, 1]"),
    (["--momentum", "2"], "--momentum: must be in [0, 1]"),
    (["--plateau-factor", "1.5"], "--plateau-factor: must be in [0, 1]"),
    (["--weight-decay", "-0.1"], "--weight-decay: must be >= 0"),
    (["--data", "/nonexistent/tree"], "--data: no such file or directory"),
    (["--pretrained", "/no/such.pth"], "--pretrained: '/no/such.pth' is not a file"),
    (["--freeze", "layer9"], "--freeze: unknown layer 'layer9'"),
    (["--cam-layers", "layer1,layr3"], "--cam-layers: unknown layer 'layr3'"),
    (["--augment", "flipp"], "--augment: unknown augmentation 'flipp'"),
    (["--milestones", "3"], "--milestones: only used by --schedule step"),
    (["--schedule", "step", "--milestones", "3,50"], "--milestones: must be below --epochs"),
    (["--schedule", "step", "--milestones", "4,2"], "--milestones: must be increasing"),
    (["--warmup-epochs", "9"], "--warmup-epochs: must be smaller than --epochs"),
    (["--feature-views", "2"], "--feature-views: only used with --freeze LAYER"),
    (["--val-split", "dev"], "--val-split: unknown split 'dev'"),
    (["--max-minutes", "-5"], "--max-minutes: must be >= 0"),
]


def _argv(tree, out, extra):
    return ["--data", str(tree), "--model", "resnet20", "--epochs", "5", "--out", str(out), *extra]


@pytest.mark.parametrize("entry", [train.main, finetune.main], ids=["train", "finetune"])
@pytest.mark.parametrize("extra, text", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_option_is_one_line_exit_2_nothing_written(tree, tmp_path, capsys, entry, extra, text):
    out = tmp_path / "run"
    start = time.perf_counter()
    try:
        status = entry(_argv(tree, out, extra))
    except SystemExit as e:  # argparse type errors
        status = e.code
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and text in err, err
    assert not out.exists()
    assert seconds < 20


def test_config_file_errors_name_key_and_file(tree, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    for text, expected in (("lrr: 0.1\n", "run.yaml: unknown key 'lrr' (did you mean 'lr'?)"),
                           ("epochs: 0\n", "run.yaml: epochs: must be >= 1"),
                           ("model: resnt18\n", "run.yaml: model: unknown model 'resnt18' (did you mean 'resnet18'"),
                           ("gallery: 9\n", "run.yaml: gallery: 9 is more than the 4 evaluation images")):
        cfg.write_text(text)
        assert train.main(["--config", str(cfg), "--data", str(tree), "--batch-size", "2",
                           "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err
        assert not (tmp_path / "run").exists()


def test_missing_out_and_out_is_a_file(tree, tmp_path, capsys):
    assert train.main(["--data", str(tree)]) == 2
    assert "--out: required" in capsys.readouterr().err
    f = tmp_path / "file"
    f.write_text("x")
    assert train.main(["--data", str(tree), "--out", str(f)]) == 2
    assert "--out:" in capsys.readouterr().err


def test_gallery_zero_means_none_and_is_documented(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--gallery GALLERY" in text and "0 = no gallery" in text and "0 = off" in text


def test_script_exit_status_and_one_line(tree, tmp_path):
    """Through the real scripts: status 2 and one line for bad input (a bug would be status 1)."""
    for script in ("train.py", "finetune_cifar.py"):
        result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", script), "--data", str(tree),
                                 "--lr", "-1", "--out", str(tmp_path / "o")], capture_output=True, text=True,
                                timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--lr" in result.stderr, result.stderr
