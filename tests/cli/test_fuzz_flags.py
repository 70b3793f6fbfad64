"""Bad input at every entry point, fuzzed with hypothesis: one clear line, documented exit codes.

Exit codes of the commands (jaxcam render / evaluate / train): 0 done (unreadable inputs skipped and
listed); 1 nothing could be done, or a bug (with its traceback); 2 a bad command line, config,
checkpoint, target or layer name (one ``error: ...`` line on stderr, nothing computed).
Library entry points raise one-line ValueErrors (or return a per-image error for unreadable images).
Example counts are small and derandomized so the file stays fast.
"""
import contextlib
import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.helpers import render_folder

FAST = settings(max_examples=12, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


def call(main, argv):
    """(exit status, stderr lines) of ``main(argv)``; argparse's SystemExit counts as a status."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else 1
    return status, [line for line in err.getvalue().splitlines() if line.strip()]


def one_error_line(status, lines):
    assert status == 2, lines
    assert len(lines) == 1 and "error:" in lines[0], lines
    assert "Traceback" not in lines[0]


# ------------------------------------------------------------------------------ CLI values

RENDER_FLAGS = ["--batch-size", "--image-size", "--chunk-size", "--alpha", "--window", "--stride", "--num",
                "--max-memory", "--colormap", "--method", "--score", "--coordinator", "--num-processes"]


@FAST
@given(flag=st.sampled_from(RENDER_FLAGS), value=TEXT | st.integers(-5, 0).map(str) | st.just(""))
def test_render_bad_values_one_line_exit_2(tmp_path, flag, value):
    from jaxcam.cli import render

    # A value that happens to be valid still ends in exit 2 (unknown model), before anything is computed.
    argv = [flag, value, "--model", "no_such_model_zz", "--out", str(tmp_path / "out")]
    one_error_line(*call(render.main, argv))


@FAST
@given(value=TEXT)
def test_train_bad_values_one_line_exit_2(tmp_path, value):
    from jaxcam.cli import train

    for flag in ("--epochs", "--lr", "--batch-size", "--model", "--augment", "--optimizer"):
        argv = ["--data", str(tmp_path / "no-such-data"), flag, value, "--out", str(tmp_path / "run")]
        one_error_line(*call(train.main, argv))


# ------------------------------------------------------------------------------ configs


@FAST
@given(text=st.text(max_size=60) | st.sampled_from(["epochs: -3", "lr: [1, 2]", "model: {a: 1}", "batch_size: x",
                                                    "nonsense_key: 1", ": :", "- a\n- b", "epochs: 1e999"]))
def test_train_bad_config_files_one_line_exit_2(tmp_path, text):
    from jaxcam.cli import train

    path = tmp_path / "cfg.yaml"
    path.write_text(text, encoding="utf-8")
    argv = ["--config", str(path), "--data", str(tmp_path / "no-such-data"), "--out", str(tmp_path / "run")]
    one_error_line(*call(train.main, argv))


# ------------------------------------------------------------------------------ images


def _png_bytes(seed=0):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@FAST
@given(data=st.binary(max_size=200) | st.integers(1, 300).map(lambda n: _png_bytes()[:n]),
       suffix=st.sampled_from([".png", ".jpg", ".bmp"]))
def test_unreadable_image_gives_one_line_error(tmp_path, data, suffix):
    from jaxcam import images

    path = tmp_path / f"bad{suffix}"
    path.write_bytes(data)
    loaded = images.load(str(path), 32)
    if loaded.error is None:  # some byte strings are valid images after all
        assert loaded.image.shape == (32, 32, 3)
    else:
        assert "\n" not in loaded.error and loaded.error.strip()


def test_render_finishes_the_rest_of_the_batch(tmp_path):
    """Two good images among truncated, empty and fake files: exit 0, the good ones rendered, one
    'skipped' line per bad file."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        (folder / f"good{i}.png").write_bytes(_png_bytes(i))
    (folder / "truncated.png").write_bytes(_png_bytes(5)[:120])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "fake.png").write_bytes(b"GIF89a not a png at all")
    status, text = render_folder(folder, tmp_path / "out", batch_size=4)
    assert status == 0, text
    assert sorted(os.listdir(tmp_path / "out")) == ["good0_grad_cam.png", "good1_grad_cam.png", "index.html", "page",
                                                    "render.json"]
    for name in ("truncated.png", "empty.jpg", "fake.png"):
        assert sum(line.startswith("skipped") and name in line for line in text.splitlines()) == 1, text


# ------------------------------------------------------------------------------ checkpoints


@FAST
@given(files=st.dictionaries(st.sampled_from(["checkpoints/best/0/meta", "checkpoints/best/0/state",
                                              "checkpoints/last/3/_CHECKPOINT_METADATA", "best/1/meta/x.json",
                                              "meta.json", "0/state/_METADATA"]),
                             st.binary(max_size=40), max_size=3))
def test_bad_checkpoints_one_line_exit_2(tmp_path, files):
    from jaxcam.cli import render

    root = tmp_path / "ckpt"
    root.mkdir(exist_ok=True)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    one_error_line(*call(render.main, ["--checkpoint", str(root), "--out", str(tmp_path / "out")]))


# ------------------------------------------------------------------------------ targets and layers


@pytest.fixture(scope="module")
def tiny():
    import jaxcam

    return jaxcam.models.load("resnet20", weights=None)


@FAST
@given(text=TEXT | st.integers(-20, 30).map(str))
def test_targets_are_an_index_a_name_or_one_line(tiny, text):
    from jaxcam.cli.common import UsageError, class_index

    names = list(tiny.info.class_names) or [f"class{i}" for i in range(10)]
    try:
        index = class_index(text, names)
    except UsageError as err:
        assert "\n" not in str(err) and "--target" in str(err)
    else:
        assert 0 <= index < len(names)
        assert text.strip().lstrip("-").isdigit() or names[index].lower() == text.strip().lower()


@FAST
@given(text=TEXT | st.sampled_from(["layer3", "layer3/0", "layer9", "layer3.0.conv1", "fc", "/", ".."]))
def test_layer_names_valid_or_one_line(tiny, text):
    import jaxcam
    from jaxcam.cli.common import UsageError, check_layer

    valid = jaxcam.list_layers(tiny, (1, 32, 32, 3))
    try:
        check_layer(tiny, text, 32)
    except UsageError as err:
        assert "\n" not in str(err) and "--layer" in str(err)
    else:
        assert text.replace(".", "/") in valid
