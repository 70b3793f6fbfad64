"""jaxcam.train and scripts/finetune_cifar.py on tiny generated data (CIFAR ResNet-20 at 8-16 px)."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

import jaxcam
from jaxcam import train
from tests.helpers import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import finetune_cifar  # noqa: E402


def _batch(n=8, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32)


def test_schedules():
    cos = train.make_schedule("cosine", 0.1, 100, warmup_steps=10)
    assert float(cos(0)) == 0.0 and np.isclose(float(cos(10)), 0.1) and float(cos(100)) < 1e-6
    step = train.make_schedule("step", 0.1, 100)
    assert np.allclose([float(step(i)) for i in (0, 49, 50, 75, 99)], [0.1, 0.1, 0.01, 0.001, 0.001])
    one = train.make_schedule("onecycle", 0.1, 100)
    assert np.isclose(max(float(one(i)) for i in range(100)), 0.1, rtol=0.02) and float(one(0)) < 0.01
    with pytest.raises(ValueError, match="cosine, onecycle"):
        train.make_schedule("linear", 0.1, 10)
    ms = train.make_schedule("step", 0.1, 100, milestones=(30, 60, 60), gamma=0.5)
    assert np.allclose([float(ms(i)) for i in (29, 30, 59, 60)], [0.1, 0.05, 0.05, 0.0125])


def test_plateau_scales_the_learning_rate_after_patience_epochs():
    """optax.contrib.reduce_on_plateau driven by per-epoch validation losses, written into the optimizer."""
    plateau = train.Plateau(factor=0.5, patience=2)
    tx = train.make_optimizer("sgd", train.make_schedule("plateau", 1.0, 10), weight_decay=0.0, momentum=0.0,
                              lr_scale=True)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    scales = [plateau.update(v) for v in (1.0, 0.9, 0.95, 0.93, 0.8, 0.85, 0.86)]
    # improvement resets the count; 2 epochs without one halve the scale
    assert scales == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    state = plateau.apply(state)
    updates, _ = tx.update({"w": jnp.ones(3)}, state, params)
    np.testing.assert_allclose(updates["w"], -0.25 * np.ones(3))  # lr 1.0 x scale 0.25
    saved = plateau.state_dict()
    again = train.Plateau(factor=0.5, patience=2)
    again.load(saved)
    assert again.scale == 0.25 and again.update(0.9) == 0.25


def test_train_step_matches_a_hand_written_sgd_step():
    """One step = cross-entropy of the train-mode forward, its gradient, plain SGD (no momentum yet)."""
    model = jaxcam.models.resnet20(num_classes=10, seed=0)
    tx = train.make_optimizer("sgd", optax.constant_schedule(0.05), weight_decay=0.0, momentum=0.0)
    step = train.make_train_step(model, tx, image_size=8, label_smoothing=0.1)
    images, labels = _batch()
    state, metrics = step(train.replicate(train.init_state(model, tx)), *train.shard_batch(images, labels))

    x = (images / 255.0 - np.asarray(model.info.mean)) / np.asarray(model.info.std)

    def loss_fn(params):
        logits, upd = model.module.apply({**model.variables, "params": params}, jnp.asarray(x, jnp.float32),
                                         train=True, mutable=["batch_stats"])
        onehot = jax.nn.one_hot(labels, 10) * 0.9 + 0.1 / 10
        return -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits), -1)), upd

    (loss, upd), grads = jax.value_and_grad(loss_fn, has_aux=True)(model.variables["params"])
    assert np.isclose(float(metrics["loss"]), float(loss), rtol=1e-5)
    expected = jax.tree_util.tree_map(lambda p, g: p - 0.05 * g, model.variables["params"], grads)
    for a, b in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(state.batch_stats), jax.tree_util.tree_leaves(upd["batch_stats"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)  # running stats updated


def test_frozen_backbone_only_moves_the_head():
    model = jaxcam.models.resnet20(num_classes=10, seed=0)
    tx = train.make_optimizer("adamw", optax.constant_schedule(1e-2), trainable=lambda path: path[0] == "linear")
    step = train.make_train_step(model, tx, image_size=8, train_batch_norm=False)
    state, _ = step(train.replicate(train.init_state(model, tx)), *train.shard_batch(*_batch()))
    assert np.array_equal(state.params["conv1"]["kernel"], model.variables["params"]["conv1"]["kernel"])
    assert not np.array_equal(state.params["linear"]["kernel"], model.variables["params"]["linear"]["kernel"])
    for a, b in zip(jax.tree_util.tree_leaves(state.batch_stats), jax.tree_util.tree_leaves(model.variables["batch_stats"])):
        np.testing.assert_array_equal(a, b)


_LOSSES = """
import jaxcam, jax, numpy as np, optax
from jaxcam import train
model = jaxcam.models.resnet20(num_classes=10, seed=0)
tx = train.make_optimizer("sgd", optax.constant_schedule(0.1))
step = train.make_train_step(model, tx, image_size=8)
state = train.replicate(train.init_state(model, tx))
rng = np.random.default_rng(0)
losses = []
for i in range(3):
    images = rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 8).astype(np.int32)
    state, m = step(state, *train.shard_batch(images, labels))
    losses.append(float(m["loss"]))
print(jax.local_device_count(), *losses)
"""


def test_four_devices_give_the_same_losses_as_one():
    outs = []
    for flags in ("", "--xla_force_host_platform_device_count=4"):
        env = dict(os.environ, XLA_FLAGS=xla_flags(flags), JAX_PLATFORMS="cpu")
        result = subprocess.run([sys.executable, "-c", _LOSSES], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        outs.append([float(v) for v in result.stdout.split()])
    assert outs[0][0] == 1 and outs[1][0] == 4
    np.testing.assert_allclose(outs[0][1:], outs[1][1:], rtol=1e-4)


def _tree(root, size=16, per_class=(6, 3)):
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "test"), per_class):
        for c in range(10):
            folder = os.path.join(root, split, f"class{c}")
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                img = np.full((size, size, 3), c * 25, np.uint8) + rng.integers(0, 20, (size, size, 3), dtype=np.uint8)
                Image.fromarray(img).save(os.path.join(folder, f"{i}.png"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("ft")
    _tree(str(base / "data"))
    return base


def _argv(base, *extra):
    return ["--data", str(base / "data"), "--model", "resnet20", "--batch-size", "20", "--lr", "0.05",
            "--gallery", "3", "--cam-layers", "layer1,layer3", "--image-size", "16", "--warmup-epochs", "0",
            "--out", str(base / "run"), *extra]


def test_script_trains_resumes_and_refuses_another_model(run_dir, capsys):
    assert finetune_cifar.main(_argv(run_dir, "--epochs", "1")) == 0  # as if killed during epoch 2
    out = run_dir / "run"
    for name in ("metrics.json", "metrics.csv", "curves.png", "misclassified.png", "cams.png", "config.yaml",
                 "confusion.png", "per_class.csv"):
        assert (out / name).is_file(), name
    assert finetune_cifar.main(_argv(run_dir, "--epochs", "2")) == 0
    assert "resumed" in capsys.readouterr().out
    history = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]

    model = train.load_checkpoint(str(out))  # best epoch, rebuilt from the checkpoint alone
    assert model.info.name == "resnet20" and model.info.class_names == tuple(f"class{c}" for c in range(10))
    best = max(history, key=lambda h: h["val_acc"])
    test = jaxcam.data.load_cifar10(str(run_dir / "data"), "test")
    logits = model(train.preprocess(jnp.asarray(test.images), model.info.mean, model.info.std, 16))
    assert np.isclose(float(np.mean(np.argmax(logits, -1) == test.labels)), best["val_acc"])
    summary = json.loads((out / "summary.json").read_text())
    assert np.isclose(summary["val_acc"], best["val_acc"])

    capsys.readouterr()
    assert finetune_cifar.main(_argv(run_dir, "--epochs", "2", "--model", "resnet32")) == 2
    err = capsys.readouterr().err
    assert "another configuration" in err and "resnet20" in err and "resnet32" in err
    assert "decode" not in err and err.count("\n") == 1  # before any data is read, one line
    assert finetune_cifar.main(_argv(run_dir, "--epochs", "2", "--image-size", "24")) == 2
    assert "image_size" in capsys.readouterr().err
