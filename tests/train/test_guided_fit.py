"""CAM guidance in `jaxcam.train.fit` / ``jaxcam train`` (--guidance-masks, --guidance-method,
--guidance-weight, ...): the first step's loss against the task loss + weight * guidance loss computed
independently on the same (flipped) batch, every bad input as one line, and the flags reaching the library."""
import os

import numpy as np
import optax
import pytest
from PIL import Image

import jaxcam.train
from jaxcam import losses
from jaxcam.cli import train as cli
from jaxcam.config import ConfigError

SIZE, PER_CLASS, CLASSES = 16, 4, ("a", "b")


def corner(i):
    """The known mask of training image i: a square in the left part, its row set by i (not symmetric)."""
    m = np.zeros((SIZE, SIZE), np.uint8)
    m[i:i + 6, 1:7] = 255
    return m


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """train/ + val/ of two classes (16x16 PNGs) and mask folders: complete, one missing, one of another size."""
    root = tmp_path_factory.mktemp("guided")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(CLASSES):
            os.makedirs(root / "data" / split / name)
            for i in range(PER_CLASS if split == "train" else 2):
                img = rng.integers(0, 120, (SIZE, SIZE, 3), dtype=np.uint8) + np.uint8(100 * c)
                Image.fromarray(img).save(root / "data" / split / name / f"{i}.png")
    for folder in ("masks", "missing", "small"):
        for c, name in enumerate(CLASSES):
            os.makedirs(root / folder / "train" / name)
            for i in range(PER_CLASS):
                if folder == "missing" and name == "b" and i >= 2:
                    continue
                mask = corner(i + 4 * c)
                if folder == "small" and (name, i) == ("a", 3):
                    mask = mask[:10]
                Image.fromarray(mask).save(root / folder / "train" / name / f"{i}.png")
    return root


def test_first_step_loss_is_task_loss_plus_weighted_guidance_on_the_flipped_batch(tree, tmp_path):
    seen = []
    weight = 2.0
    jaxcam.train.fit(str(tree / "data"), str(tmp_path / "run"), model="resnet20", epochs=1, batch_size=8,
                     steps_per_epoch=1, lr=1e-3, gallery=0, augment={"horizontal_flip": {"p": 1.0}},
                     guidance_masks=str(tree / "masks"), guidance_method="hires_cam", guidance_weight=weight,
                     progress=seen.append)
    loss = seen[0]["train_loss"]

    # independently: the same initial model (seed 0), the batch = all 8 training images in order, flipped
    model = jaxcam.train.build_model("resnet20", 2, CLASSES, 0, None, SIZE)
    images = np.stack([np.asarray(Image.open(tree / "data" / "train" / c / f"{i}.png"))
                       for c in CLASSES for i in range(PER_CLASS)])
    labels = np.repeat(np.arange(2), PER_CLASS)
    masks = np.stack([corner(i) for i in range(8)]) / 255.0
    mean, std = np.asarray(model.info.mean), np.asarray(model.info.std)
    x = ((images[:, :, ::-1] / 255.0 - mean) / std).astype(np.float32)
    logits, _ = model.module.apply(model.variables, x, train=True, mutable=["batch_stats"])
    task = float(optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean())

    def guidance(m):
        return float(losses.guidance_loss(model, x, avoid=m, method="hires_cam", targets=labels))

    flipped = guidance(masks[:, :, ::-1])
    np.testing.assert_allclose(loss, task + weight * flipped, rtol=2e-5)
    assert abs(guidance(masks) - flipped) > 1e-3  # the check sees whether the masks were flipped with the images


def _argv(tree, out, *extra):
    return ["--data", str(tree / "data"), "--model", "resnet20", "--epochs", "1", "--batch-size", "4",
            "--out", str(out), *extra]


BAD = [  # (extra argv with {root} for the fixture folder, text the one line must contain)
    (["--guidance-masks", "{root}/nowhere"], "--guidance-masks: no such directory"),
    (["--guidance-masks", "{root}/missing"], "--guidance-masks: no mask for 2 of 8 images, e.g. "
                                             "train/b/2.png (expected {root}/missing/train/b/2.png)"),
    (["--guidance-masks", "{root}/small"], "--guidance-masks: mask {root}/small/train/a/3.png is 10x16 but its "
                                           "image train/a/3.png is 16x16"),
    (["--guidance-masks", "{root}/masks", "--guidance-method", "random_cam"],
     "--guidance-method: method 'random_cam' cannot guide training"),
    (["--guidance-masks", "{root}/masks", "--guidance-method", "gradcamm"],
     "--guidance-method: unknown method 'gradcamm'. Did you mean grad_cam"),
    (["--guidance-masks", "{root}/masks", "--guidance-method", "guided_backprop"],
     "--guidance-method: method 'guided_backprop' does not return one map per image"),
    (["--guidance-masks", "{root}/masks", "--guidance-method", "cam"], "--guidance-method: cam has no raw map"),
    (["--guidance-masks", "{root}/masks", "--guidance-layer", "layer9"], "--guidance-layer: unknown layer 'layer9'"),
    (["--guidance-masks", "{root}/masks", "--freeze", "layer2"], "--guidance-masks: not with --freeze LAYER"),
    (["--guidance-masks", "{root}/masks", "--guidance-weight", "0"], "--guidance-weight: must be > 0"),
    (["--guidance-weight", "2"], "--guidance-weight: only used with --guidance-masks"),
    (["--guidance-method", "hires_cam"], "--guidance-method: only used with --guidance-masks"),
    (["--guidance-region", "inside"], "--guidance-region: unknown value 'inside'"),
]


@pytest.mark.parametrize("extra, text", BAD, ids=[" ".join(e[2:] or e) for e, _ in BAD])
def test_bad_guidance_input_is_one_line_exit_2_nothing_written(tree, tmp_path, capsys, extra, text):
    out = tmp_path / "run"
    status = cli.main(_argv(tree, out, *[e.format(root=tree) for e in extra]))
    err = capsys.readouterr().err
    errors = [line for line in err.replace("\r", "\n").splitlines() if "error" in line]  # (after a decoding bar)
    assert status == 2 and len(errors) == 1 and text.format(root=tree) in errors[0], err
    assert not out.exists()


def test_fit_names_its_keyword_and_needs_a_local_tree(tree, tmp_path):
    with pytest.raises(ConfigError, match=r"^guidance_weight=: only used with --guidance-masks"):
        jaxcam.train.fit(str(tree / "data"), str(tmp_path / "run"), guidance_weight=3.0)
    with pytest.raises(ConfigError, match="guidance_masks=: needs a local image-folder tree"):
        jaxcam.train.fit("cifar10", str(tmp_path / "run"), guidance_masks=str(tree / "masks"))


def test_the_command_passes_its_guidance_flags_to_the_library(tree, tmp_path, monkeypatch):
    """``jaxcam train --guidance-...`` and ``fit(guidance_...=)`` hand the same resolved options to the run."""
    runs = []
    monkeypatch.setattr(cli, "run", lambda cfg, where, options: runs.append(cfg) or {})
    monkeypatch.setattr(jaxcam.train.loop, "run", lambda cfg, where, options, progress=None: runs.append(cfg) or {})
    out = str(tmp_path / "run")
    assert cli.main(_argv(tree, out, "--guidance-masks", str(tree / "masks"), "--guidance-method", "HiResCAM",
                          "--guidance-weight", "3", "--guidance-region", "focus", "--guidance-layer", "layer2")) == 0
    jaxcam.train.fit(str(tree / "data"), out, model="resnet20", epochs=1, batch_size=4,
                     guidance_masks=str(tree / "masks"), guidance_method="hires_cam", guidance_weight=3.0,
                     guidance_region="focus", guidance_layer="layer2")
    assert runs[0] == runs[1]
    assert (runs[0]["guidance_masks"], runs[0]["guidance_method"], runs[0]["guidance_weight"],
            runs[0]["guidance_region"], runs[0]["guidance_layer"]) == (str(tree / "masks"), "hires_cam", 3.0,
                                                                       "focus", "layer2")
