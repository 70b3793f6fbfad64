"""Flax NNX: an nnx.Module passed straight to every method gives the Linen model's maps.

"torchvision weights" here: a torchvision ResNet-18 state_dict with torchvision's own random init
(no ImageNet file exists offline; nothing downloads), converted through the real torchvision -> Linen
converter and moved into the NNX module (`load_linen_variables`), exactly as a downloaded file would be.
The Linen model is the reference (itself checked against torchvision and pytorch-grad-cam elsewhere);
both are checked against torchvision's logits here.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
import jaxcam.nnx
from jaxcam.methods import registry

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


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
    x = jax.random.normal(jax.random.key(0), (1, 48, 48, 3))  # layer3: 3 x 3 x 256, layer4: 2 x 2 x 512
    with torch.no_grad():
        torch_logits = net(torch.from_numpy(np.array(x).transpose(0, 3, 1, 2))).numpy()
    return jaxcam.models.resnet18(num_classes=10, weights=state), jaxcam.models.nnx_resnet18(num_classes=10, weights=state), x, torch_logits


def test_nnx_resnet18_logits_equal_torchvision(pair):
    linen, nnx_model, x, torch_logits = pair
    np.testing.assert_allclose(np.asarray(nnx_model(x)), torch_logits, atol=1e-4)
    np.testing.assert_allclose(np.asarray(linen(x)), torch_logits, atol=1e-4)


# Per-method arguments (default: layer3): the layer, input size and the methods' own options that bound
# the work. The Score family runs one whole-network forward per channel (times samples): on layer1
# (64 channels) of a 32 px input, 2 samples, one chunk, instead of 256 channels x 10-35 samples.
SMALL = dict(size=32, layer="layer1", chunk_size=64)
ARGS = {
    "cam": dict(layer="layer4"),  # CAM needs GAP + FC after the layer; the NNX classifier is found by tracing
    "guided_backprop": {},  # no layer
    "sess": dict(layer="layer3", num_scales=2),
    "ablation_cam": dict(size=32, layer="layer3"),  # 256 heads through layer4 at 1 x 1 (2 x 2 costs ~10x)
    "score_cam": SMALL,
    "is_cam": dict(SMALL, num_samples=2),
    "ss_cam": dict(SMALL, num_samples=2),
}


@pytest.mark.parametrize("name", registry.names(any_model=True))  # legrad: ViTs only
def test_every_method_equals_the_linen_model(pair, name):
    linen, nnx_model, x, _ = pair
    fn = registry.get(name).fn
    kwargs = dict(ARGS.get(name, dict(layer="layer3")))
    size = kwargs.pop("size", None)
    if size is not None:
        x = jax.image.resize(x, (1, size, size, 3), "bilinear")
    ref, got = fn(linen, x, **kwargs), fn(nnx_model, x, **kwargs)
    if isinstance(ref, dict):  # several maps (gradient_cams)
        assert sorted(ref) == sorted(got)
        ref, got = np.stack([ref[k] for k in sorted(ref)]), np.stack([got[k] for k in sorted(ref)])
    ref, got = np.asarray(ref), np.asarray(got)
    assert np.abs(ref).max() > 0 and np.ptp(ref) > 0, "blank reference map"
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_guided_backprop_and_errors_on_a_model_given_as_functions():
    """Guided backprop reads the traced ReLUs of any JAX function: closed form of a 1x1-conv + ReLU +
    GAP + FC net. CAM and FullGrad need layers a plain function does not expose: one clear error each."""
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(3, 6)), jnp.float32), "fc": jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)}
    model = jaxcam.Model.from_functions(lambda p, x: jax.nn.relu(x @ p["w"]),
                                        lambda p, a: a.mean(axis=(1, 2)) @ p["fc"], params)
    x = jnp.asarray(rng.normal(size=(2, 5, 5, 3)), jnp.float32)
    got = np.asarray(jaxcam.guided_backprop(model, x, targets=1))
    w, fc, xs = np.asarray(params["w"]), np.asarray(params["fc"])[:, 1], np.asarray(x)
    g = np.where(fc > 0, fc, 0.0) / 25  # dy/dA (> 0 only) through the mean, then ReLU's input > 0
    expected = ((xs @ w > 0) * g) @ w.T
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(got, expected, atol=1e-6)
    cam_map = np.asarray(jaxcam.grad_cam(model, x, targets=1))
    np.testing.assert_allclose(np.asarray(jaxcam.guided_grad_cam(model, x, targets=1)),
                               expected * cam_map[..., None], atol=1e-6)
    with pytest.raises(ValueError, match="grad_cam"):
        jaxcam.cam(model, x, targets=1)
    with pytest.raises(ValueError, match="grad_cam"):
        jaxcam.fullgrad(model, x, targets=1)


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
    with pytest.raises(ValueError, match="GAP\\+FC"):  # layer3 is not followed by GAP + fc
        jaxcam.cam(net, x, layer="layer3")


def test_nnx_cam_finds_the_classifier_or_says_what_to_do():
    """CAM on an NNX module without ModelInfo.classifier: the Linear whose output is the model's output
    (here CAM = h*w * Grad-CAM before normalisation, so the maps equal); none such: one clear error."""
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)

        def __call__(self, x):
            return nnx.relu(self.conv(x))

    class Net(nnx.Module):
        def __init__(self, scale, rngs):
            self.block, self.fc, self.scale = Block(rngs), nnx.Linear(4, 3, rngs=rngs), scale

        def __call__(self, x):
            y = self.fc(self.block(x).mean(axis=(1, 2)))
            return y * self.scale if self.scale != 1 else y

    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
    net = Net(1, nnx.Rngs(0))
    ref = np.asarray(jaxcam.grad_cam(net, x, layer="block"))
    assert np.ptp(ref) > 0
    np.testing.assert_allclose(np.asarray(jaxcam.cam(net, x, layer="block")), ref, atol=1e-5)
    with pytest.raises(ValueError, match="cam needs the classifier"):
        jaxcam.cam(Net(2, nnx.Rngs(0)), x, layer="block")
