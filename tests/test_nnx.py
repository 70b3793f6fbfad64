"""Flax NNX: an nnx.Module passed straight to every method gives the Linen model's maps.

Both ResNet-18s load the same torchvision state_dict (random torchvision init, no download) through
the same converter; the Linen model is the reference (itself checked against torchvision elsewhere).
"""
import os

import jax
import numpy as np
import pytest

import jaxcam
import jaxcam.nnx
from jaxcam.methods import registry

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

# methods that read Linen internals directly (module.apply with capture/intercept of many layers)
LINEN_ONLY = {"cam", "fullgrad", "guided_backprop", "guided_grad_cam"}


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    x = jax.random.normal(jax.random.key(0), (1, 48, 48, 3))  # layer3: 3 x 3 x 256
    with torch.no_grad():
        torch_logits = net(torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2))).numpy()
    return jaxcam.models.resnet18(num_classes=10, weights=state), jaxcam.models.nnx_resnet18(num_classes=10, weights=state), x, torch_logits


def test_nnx_resnet18_logits_equal_torchvision(pair):
    _, nnx_model, x, torch_logits = pair
    np.testing.assert_allclose(np.asarray(nnx_model(x)), torch_logits, atol=1e-4)


# whole-network forwards per channel (256 here): minutes on a loaded 2-core CPU; run with JAXCAM_SLOW=1
HEAVY = {"is_cam", "ss_cam", "score_cam"}
_slow = pytest.mark.skipif(not os.environ.get("JAXCAM_SLOW"), reason="slow (> 20 s): set JAXCAM_SLOW=1")


@pytest.mark.parametrize("name", [pytest.param(n, marks=_slow) if n in HEAVY else n
                                  for n in registry.names() if n not in LINEN_ONLY])
def test_every_method_equals_the_linen_model(pair, name):
    linen, nnx_model, x, _ = pair
    fn = registry.get(name).fn
    ref, got = fn(linen, x, layer="layer3"), fn(nnx_model, x, layer="layer3")
    if isinstance(ref, dict):  # several maps (gradient_cams)
        assert sorted(ref) == sorted(got)
        ref, got = np.stack([ref[k] for k in sorted(ref)]), np.stack([got[k] for k in sorted(ref)])
    ref, got = np.asarray(ref), np.asarray(got)
    assert np.abs(ref).max() > 0, "blank reference map"
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_a_raw_nnx_module_and_attribute_paths():
    from flax import nnx

    from jaxcam.models import nnx_resnet

    net = nnx_resnet.ResNet18(num_classes=10, rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(1), (1, 32, 32, 3))
    linen = jaxcam.models.resnet18(num_classes=10, seed=1)
    nnx_resnet.load_linen_variables(net, linen.variables)
    np.testing.assert_allclose(np.asarray(jaxcam.grad_cam(net, x, layer="layer3/1")),
                               np.asarray(jaxcam.grad_cam(linen, x, layer="layer3/1")), atol=1e-5)
    with pytest.raises(ValueError, match="layer4/1/conv2"):
        jaxcam.grad_cam(net, x, layer="layer5")
