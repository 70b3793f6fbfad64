"""The torch checkpoint reader (no torch, no pickled code), safetensors, and `jaxcam.models.load`'s checks."""
import collections
import os

import ml_dtypes
import numpy as np
import pytest
import torch

import jax

from jaxcam.models import load
from jaxcam.models.torch_io import CheckpointError, read_state_dict, read_torch
from jaxcam.models.loading import download

ZIP, LEGACY = True, False


def sample_state_dict():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=gen)
    sd = collections.OrderedDict()
    sd["conv.weight"] = torch.randn(4, 3, 3, 3, generator=gen)
    sd["view.transposed"] = base.t()  # non-contiguous view sharing a storage
    sd["view.slice"] = base[2:, 1:4]  # storage offset + strides
    sd["half"] = torch.randn(7, generator=gen).half()
    sd["bf16"] = torch.randn(3, 2, generator=gen).bfloat16()
    sd["count"] = torch.tensor(12, dtype=torch.long)
    sd["mask"] = torch.tensor([True, False, True])
    sd["empty"] = torch.zeros(0, 4)
    return sd


def as_numpy(tensor):
    if tensor.dtype == torch.bfloat16:
        return tensor.float().numpy().astype(ml_dtypes.bfloat16)
    return tensor.numpy()


@pytest.mark.parametrize("zip_format", [ZIP, LEGACY])
def test_round_trip_through_torch_save(tmp_path, zip_format):
    sd = sample_state_dict()
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in sd.items()}}, path,
               _use_new_zipfile_serialization=zip_format)
    got = read_state_dict(path)
    assert list(got) == list(sd)
    for key, tensor in sd.items():
        want = as_numpy(tensor)
        assert got[key].dtype == want.dtype and got[key].shape == want.shape, key
        np.testing.assert_array_equal(got[key], want, err_msg=key)
    assert read_torch(path)["epoch"] == 3


@pytest.mark.parametrize("zip_format", [ZIP, LEGACY])
def test_parameters_and_bare_state_dict(tmp_path, zip_format):
    net = torch.nn.Linear(3, 2)
    path = tmp_path / "params.pth"
    torch.save({"weight": net.weight, "bias": net.bias}, path, _use_new_zipfile_serialization=zip_format)
    got = read_state_dict(path)
    np.testing.assert_array_equal(got["weight"], net.weight.detach().numpy())


class RunsCode:
    """Unpickling this would call os.system: a checkpoint that tries to run code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("zip_format", [ZIP, LEGACY])
def test_code_in_pickle_is_refused_and_not_run(tmp_path, zip_format):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hook": RunsCode(marker)}, path,
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(CheckpointError, match="refusing to load .*system.* could run code"):
        read_state_dict(path)
    assert not marker.exists()


def test_plain_pickle_with_code_is_refused(tmp_path):
    import pickle

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.th"
    path.write_bytes(pickle.dumps(RunsCode(marker)))
    with pytest.raises(CheckpointError):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("zip_format", [ZIP, LEGACY])
@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_file_is_refused(tmp_path, zip_format, keep):
    path = tmp_path / "cut.pth"
    torch.save({"state_dict": sample_state_dict()}, path, _use_new_zipfile_serialization=zip_format)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="truncated"):
        read_state_dict(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"hello, not a checkpoint")
    with pytest.raises(CheckpointError):
        read_state_dict(path)
    with pytest.raises(FileNotFoundError):
        read_state_dict(tmp_path / "missing.pth")


def test_safetensors(tmp_path):
    from safetensors.numpy import save_file

    arrays = {"module.a.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.int64)}
    save_file(arrays, str(tmp_path / "w.safetensors"))
    got = read_state_dict(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(got["a.weight"], arrays["module.a.weight"])
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(CheckpointError):
        read_state_dict(tmp_path / "bad.safetensors")


# --------------------------------------------------------------------- load(): fit checks, heads, saves


@pytest.fixture(scope="module")
def resnet20_state_dict(tv_resnet20):
    """A torch CIFAR ResNet-20 with randomized BatchNorm weights, biases, running means and variances
    (default statistics would hide a weight <-> running_var swap), its numpy state_dict, and a batch."""
    sd = {k: v.numpy() for k, v in tv_resnet20.state_dict().items()}
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
    with torch.no_grad():
        logits = tv_resnet20(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    return sd, x, logits


def test_state_dict_round_trip_through_load(resnet20_state_dict, tmp_path):
    """numpy state_dict and a torch.save'd file both load to torch's logits."""
    sd, x, logits = resnet20_state_dict
    assert not np.allclose(sd["layer1.0.bn1.running_var"], 1) and not np.allclose(sd["layer1.0.bn1.weight"], 1)
    np.testing.assert_allclose(np.asarray(load("resnet20", weights=sd)(x)), logits, rtol=1e-4, atol=1e-4)
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "r20.pth")
    np.testing.assert_allclose(np.asarray(load("resnet20", weights=str(tmp_path / "r20.pth"))(x)), logits,
                               rtol=1e-4, atol=1e-4)


def test_misfitting_state_dict_names_the_keys(resnet20_state_dict):
    sd, _, _ = resnet20_state_dict
    bad = dict(sd)
    del bad["layer2.1.bn1.running_var"]
    bad["layer9.0.conv1.weight"] = np.zeros((16, 16, 3, 3), np.float32)
    bad["layer1.0.conv2.weight"] = np.zeros((16, 16, 5, 5), np.float32)
    with pytest.raises(ValueError) as info:
        load("resnet20", weights=bad)
    message = str(info.value)
    assert "layer2/1/bn1/var" in message and "missing" in message
    assert "layer9.0.conv1.weight" in message and "not in the model" in message
    assert "layer1.0.conv2.weight" in message and "wrong shape" in message


def test_new_head_keeps_the_body(resnet20_state_dict):
    sd, _, _ = resnet20_state_dict
    model = load("resnet20", weights=sd)
    five = load("resnet20", weights=sd, num_classes=5)
    assert five.variables["params"]["linear"]["kernel"].shape == (64, 5)
    np.testing.assert_array_equal(np.asarray(five.variables["params"]["layer3"]["2"]["conv2"]["kernel"]),
                                  np.asarray(model.variables["params"]["layer3"]["2"]["conv2"]["kernel"]))
    assert five.info.class_names == ()


def test_saved_variables(resnet20_state_dict):
    sd, x, logits = resnet20_state_dict
    model = load("resnet20", weights=sd)
    saved = {"model": "resnet20", "variables": jax.tree_util.tree_map(np.asarray, model.variables),
             "class_names": list("abcdefghij")}
    again = load(saved)
    assert again.info.class_names == tuple("abcdefghij")
    np.testing.assert_allclose(np.asarray(again(x)), logits, rtol=1e-4, atol=1e-4)  # torch's, not our own
    with pytest.raises(ValueError, match="do not fit"):
        load({"model": "resnet32", "variables": saved["variables"]})


def test_unknown_model_and_offline_download(tmp_path):
    with pytest.raises(ValueError, match="known: .*resnet20"):
        load("resnet21", weights=None)
    with pytest.raises(OSError, match="pass it as weights="):  # nothing listens on port 9: fails at once
        download("http://127.0.0.1:9/resnet18-f37072fd.pth", directory=str(tmp_path), timeout=2)
