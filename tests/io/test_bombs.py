"""Decompression bombs (an image whose header claims more pixels than PIL's MAX_IMAGE_PIXELS) are read
like any unreadable file by every image reader: one line naming the file, skipped, the rest read."""
import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import png_bomb


def _png(path, seed):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def warn_bomb():
    """10000 x 10000 (1e8 pixels): above MAX_IMAGE_PIXELS (~8.9e7), below twice it, where PIL only warns."""
    data = png_bomb(10000, 10000)
    with pytest.warns(Image.DecompressionBombWarning):
        Image.open(io.BytesIO(data)).close()
    return data


def test_bomb_is_a_real_bomb(bomb_png):
    assert len(bomb_png) < 250_000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(bomb_png))


@pytest.mark.parametrize("kind", ["error", "warning"])
def test_images_load_reports_a_bomb_in_one_line(tmp_path, bomb_png, warn_bomb, kind, recwarn):
    from jaxcam import images

    (tmp_path / "bomb.png").write_bytes(bomb_png if kind == "error" else warn_bomb)
    _png(tmp_path / "good.png", 0)
    loaded = list(images.load_all([str(tmp_path / "bomb.png"), str(tmp_path / "good.png")], size=8))
    assert loaded[0].image is None and "decompression bomb" in loaded[0].error and "\n" not in loaded[0].error
    assert loaded[1].error is None and loaded[1].image.shape == (8, 8, 3)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def _tree(root, bomb):
    for split in ("train", "test"):
        for cls, seed in (("a", 1), ("b", 2)):
            (root / split / cls).mkdir(parents=True)
            _png(root / split / cls / "good.png", seed)
    (root / "train" / "a" / "zbomb.png").write_bytes(bomb)
    return root


def test_load_dataset_skips_a_bomb(tmp_path, bomb_png, capsys):
    from jaxcam import data

    root = _tree(tmp_path / "tree", bomb_png)
    ds = data.load_dataset(str(root), "train")
    assert ds.images.shape == (2, 12, 12, 3) and list(ds.labels) == [0, 1]
    np.testing.assert_array_equal(ds.images[0], np.asarray(Image.open(root / "train" / "a" / "good.png")))
    lines = [line for line in capsys.readouterr().err.splitlines() if "zbomb.png" in line]
    assert len(lines) == 1 and lines[0].startswith("skipped") and "decompression bomb" in lines[0]


def test_load_cifar10_image_folder_skips_a_bomb(tmp_path, bomb_png, capsys):
    from jaxcam import data

    root = _tree(tmp_path / "tree", bomb_png)
    ds = data.load_cifar10(str(root), "train")
    assert ds.images.shape == (2, 12, 12, 3) and list(ds.labels) == [0, 1]
    lines = [line for line in capsys.readouterr().err.splitlines() if "zbomb.png" in line]
    assert len(lines) == 1 and lines[0].startswith("skipped") and "decompression bomb" in lines[0]


def test_evaluate_input_folder_skips_a_bomb(tmp_path, bomb_png, capsys):
    from jaxcam.metrics import evaluation

    _png(tmp_path / "good.png", 0)
    (tmp_path / "bomb.png").write_bytes(bomb_png)
    (tmp_path / "trunc.png").write_bytes((tmp_path / "good.png").read_bytes()[:100])
    assert evaluation.list_images(str(tmp_path), None) == ["good.png"]
    err = capsys.readouterr().err.splitlines()
    assert sum(line.startswith("skipped") and "bomb.png" in line and "decompression bomb" in line for line in err) == 1
    assert sum(line.startswith("skipped") and "trunc.png" in line for line in err) == 1
