"""jaxcam.data: every source format on tiny generated data, augmentation, batching, prefetch."""
import io
import os
import pickle
import tarfile
import time

import numpy as np
import pytest
from PIL import Image

from jaxcam import data

CLASSES = ("cat", "dog", "ship")


def _images(split, n_per_class=3, size=8):
    rng = np.random.default_rng(0 if split == "train" else 1)
    return {c: rng.integers(0, 256, (n_per_class, size, size, 3), dtype=np.uint8) for c in CLASSES}


def _write_tree(root, fmt):
    for split in ("train", "test"):
        for name, imgs in _images(split).items():
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for i, img in enumerate(imgs):
                Image.fromarray(img).save(os.path.join(root, split, name, f"{i:04d}.{fmt}"))


def _expected(split):
    imgs = _images(split)
    return np.concatenate([imgs[c] for c in CLASSES]), np.repeat(np.arange(len(CLASSES)), 3)


def test_folder_tree_png_is_exact(tmp_path):
    _write_tree(str(tmp_path), "png")
    for split in ("train", "test"):
        ds = data.load_cifar10(str(tmp_path), split)
        images, labels = _expected(split)
        assert ds.class_names == CLASSES
        np.testing.assert_array_equal(ds.labels, labels)
        np.testing.assert_array_equal(ds.images, images)


def test_tar_gz_tree_of_jpegs_with_top_folder(tmp_path):
    _write_tree(str(tmp_path / "cifar" / "top"), "jpg")
    archive = str(tmp_path / "tree.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(str(tmp_path / "cifar" / "top"), arcname="top")
    ds = data.load_cifar10(archive, "test")
    images, labels = _expected("test")
    assert ds.class_names == CLASSES and ds.images.shape == (9, 8, 8, 3)
    np.testing.assert_array_equal(ds.labels, labels)
    # JPEG is lossy: same images up to compression noise (random noise images compress badly).
    reference = np.stack([np.asarray(Image.open(io.BytesIO(_jpeg(im)))) for im in images])
    np.testing.assert_array_equal(ds.images, reference)


def _jpeg(img):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG")
    return buf.getvalue()


def test_official_python_archive(tmp_path):
    rng = np.random.default_rng(0)
    archive = str(tmp_path / "cifar-10-python.tar.gz")
    batches = {f"data_batch_{i}": 2 for i in range(1, 6)} | {"test_batch": 3}
    content = {}
    with tarfile.open(archive, "w:gz") as tar:
        def add(name, obj):
            payload = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

        for name, n in batches.items():
            chw = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
            labels = rng.integers(0, 10, n).tolist()
            content[name] = (chw, labels)
            add(name, {b"data": chw.reshape(n, -1), b"labels": labels, b"batch_label": name.encode()})
        add("batches.meta", {b"label_names": [n.encode() for n in data.CIFAR10_CLASSES], b"num_vis": 3072})
    train = data.load_cifar10(archive, "train")
    test = data.load_cifar10(archive, "test")
    assert train.class_names == data.CIFAR10_CLASSES and len(train) == 10 and len(test) == 3
    chw, labels = content["test_batch"]
    np.testing.assert_array_equal(test.images, chw.transpose(0, 2, 3, 1))  # CHW rows -> HWC images
    np.testing.assert_array_equal(test.labels, labels)
    np.testing.assert_array_equal(train.images[:2], content["data_batch_1"][0].transpose(0, 2, 3, 1))


def test_archive_with_code_is_refused(tmp_path):
    archive = str(tmp_path / "evil.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("batches.meta", "test_batch"):
            payload = pickle.dumps({"data": os.system}, protocol=2)  # a global that is not an array
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        data.load_cifar10(archive, "test")


def test_missing_sources_fail_fast_with_a_hint(tmp_path):
    start = time.perf_counter()
    with pytest.raises(data.DataNotFoundError, match="--data"):
        data.load_cifar10(None, "test", tfds_data_dir=str(tmp_path))
    assert time.perf_counter() - start < 60  # no download retries
    with pytest.raises(data.DataNotFoundError, match="does not exist"):
        data.load_cifar10(str(tmp_path / "nope.tar.gz"))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(data.DataNotFoundError, match="no images"):
        data.load_cifar10(str(tmp_path / "empty"))


def test_augment_is_a_padded_window_then_flip():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (16, 6, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(data.augment(images, rng, pad=0, flip=False), images)
    out = data.augment(images, np.random.default_rng(3), pad=2, flip=True)
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    flipped_any = False
    for img, p in zip(out, padded):
        windows = [p[y:y + 6, x:x + 5] for y in range(5) for x in range(5)]
        plain = any(np.array_equal(img, w) for w in windows)
        mirrored = any(np.array_equal(img, w[:, ::-1]) for w in windows)
        assert plain or mirrored
        flipped_any |= mirrored and not plain
    assert flipped_any


def test_batches_cover_the_data_once_and_are_seeded():
    ds = data.Dataset(np.arange(10, dtype=np.uint8)[:, None, None, None].repeat(3, -1) * np.ones((1, 2, 2, 1), np.uint8),
                      np.arange(10, dtype=np.int32), ("a",))
    first = [lab for _, lab in data.batches(ds, 4, shuffle=True, seed=5)]
    again = [lab for _, lab in data.batches(ds, 4, shuffle=True, seed=5)]
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(np.concatenate(first).tolist()) == list(range(10))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert [len(b) for _, b in data.batches(ds, 4, drop_last=True)] == [4, 4]
    for images, labels in data.batches(ds, 3):
        np.testing.assert_array_equal(images[:, 0, 0, 0], labels)  # images stay paired with labels


def test_prefetch_keeps_order_and_reraises():
    assert list(data.prefetch(iter(range(7)), size=2)) == list(range(7))

    def broken():
        yield 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        list(data.prefetch(broken()))


def test_closing_prefetch_stops_its_thread():
    import itertools
    import threading

    before = threading.active_count()
    it = data.prefetch(itertools.count(), size=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    deadline = time.perf_counter() + 10
    while threading.active_count() > before and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before


# ---------------------------------------------------------------- load_dataset: any tree, archive, tfds


def test_zip_tree_and_val_split_and_wordnet_names(tmp_path):
    import zipfile

    src = tmp_path / "tree"
    wnids = {"n01440764": "tench", "n02102040": "English springer"}
    rng = np.random.default_rng(0)
    expected = {}
    for split in ("train", "val"):
        for w in wnids:
            os.makedirs(src / split / w)
            img = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            Image.fromarray(img).save(src / split / w / "a.png")
            expected[(split, w)] = img
    archive = tmp_path / "tree.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for d, _, files in os.walk(src):
            for f in files:
                z.write(os.path.join(d, f), os.path.relpath(os.path.join(d, f), tmp_path))  # top folder "tree/"
    assert data.eval_split(str(archive)) == "val"
    val = data.load_dataset(str(archive), "val")
    assert val.class_names == ("tench", "English springer")
    np.testing.assert_array_equal(val.images[1], expected[("val", "n02102040")])
    assert list(val.labels) == [0, 1]


def test_mixed_sizes_are_resized_shorter_side_and_centre_cropped(tmp_path):
    root = tmp_path / "t"
    os.makedirs(root / "train" / "x")
    # 8 x 16 image (h x w): left half 0, right half 200 -> shorter side 8 -> 8 x 16 -> centre 8 x 8 crop
    img = np.zeros((8, 16, 3), np.uint8)
    img[:, 8:] = 200
    Image.fromarray(img).save(root / "train" / "x" / "wide.png")
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(root / "train" / "x" / "small.bmp")
    with pytest.raises(ValueError, match="different sizes"):
        data.load_dataset(str(root), "train")
    ds = data.load_dataset(str(root), "train", size=8)
    assert ds.images.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(ds.images[0], np.full((8, 8, 3), 7))  # "small.bmp" sorts first
    np.testing.assert_array_equal(ds.images[1], img[:, 4:12])  # exact centre crop, no resampling needed


def test_masks_are_found_by_path_and_sized_as_their_images(tmp_path):
    """A mask folder at the images' paths from the split folder on (a top folder above train/ not
    repeated, .bmp -> .png); mixed sizes: each mask gets its image's resize and centre crop."""
    rng = np.random.default_rng(0)
    masks = {}
    for name, (h, w) in (("a.bmp", (20, 12)), ("b.png", (12, 30)), ("c.png", (16, 16))):
        mask = np.zeros((h, w), np.uint8)
        y, x = rng.integers(0, 6, 2)
        mask[y:y + 6, x:x + 6] = 255
        os.makedirs(tmp_path / "tree" / "top" / "train" / "k", exist_ok=True)
        os.makedirs(tmp_path / "masks" / "train" / "k", exist_ok=True)
        Image.fromarray(np.stack([mask] * 3, -1)).save(tmp_path / "tree" / "top" / "train" / "k" / name)
        Image.fromarray(mask).save(tmp_path / "masks" / "train" / "k" / (name[0] + ".png"))
        masks[name[0]] = mask
    ds = data.load_dataset(str(tmp_path / "tree"), "train", size=12, masks=str(tmp_path / "masks"))
    assert ds.masks.shape == (3, 12, 12) and ds.masks.dtype == np.uint8
    np.testing.assert_array_equal(ds.masks, ds.images[..., 0])  # each image's first channel is its mask
    np.testing.assert_array_equal(ds.masks[2], np.asarray(Image.fromarray(masks["c"]).resize((12, 12),
                                                                                             Image.BILINEAR)))
    np.testing.assert_array_equal(ds.masks[1], masks["b"][:, 9:21])  # 12 x 30: centre crop, no resampling


def test_tfds_offline_fails_at_once_naming_the_local_alternative(tmp_path, monkeypatch):
    """No prepared copy and no network (every socket connect refused): one line, in well under a second."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # a closed port as well
    data.load_tfds.__module__  # imported
    import tensorflow_datasets  # noqa: F401  (import time is not the failure path)

    start = time.perf_counter()
    with pytest.raises(data.DataNotFoundError) as info:
        data.load_dataset("imagenette/160px", "train", tfds_data_dir=str(tmp_path))
    seconds = time.perf_counter() - start
    message = str(info.value)
    assert "network is unreachable" in message and "--data /path/to/tree" in message and "\n" not in message
    assert seconds < 10
    assert not data.is_local("imagenette/160px") and not data.is_local("tfds:cifar10")
    assert data.is_local(str(tmp_path)) and data.is_local("./x.tar.gz")
