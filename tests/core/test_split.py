"""The core: the split mechanism, torchvision-exact ResNets, Grad-CAM and the ablation family.

Every method check is against something independent of jaxcam: torchvision's logits and layer
outputs on the same weights, closed forms for a GAP+FC head, and pytorch-grad-cam's maps.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

import jaxcam
from jaxcam._src.split import Split
from jaxcam.methods.ablation import ablated_scores, window_masks
from tests.torch_utils import layer_output, nhwc_to_torch, randomize_batchnorm

SIZE = 96
PARITY_TOL = {"GradCAM": 1e-5, "AblationCAM": 1e-4}  # measured: see test_maps_match_pytorch_grad_cam -s


def normalize(cam):
    """pytorch-grad-cam's per-image normalization, in numpy."""
    cam = cam - cam.min(axis=(1, 2), keepdims=True)
    return cam / (1e-7 + cam.max(axis=(1, 2), keepdims=True))


def upsample(cam, size):
    """Bilinear half-pixel upsampling (as cv2.resize) with torch, then min-max again (as pgc)."""
    t = torch.from_numpy(cam[:, None].astype(np.float32))
    return normalize(torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)[:, 0].numpy())


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)


# ---------------------------------------------------------------- models ----------------------


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_resnet_logits_match_torchvision(arch):
    torch.manual_seed(1)
    tv = randomize_batchnorm(getattr(torchvision.models, arch)(num_classes=7), seed=1)
    model = getattr(jaxcam.models, arch)(num_classes=7, weights=tv.state_dict())
    x = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        expected = tv(nhwc_to_torch(x)).numpy()
    got = np.asarray(model(jnp.asarray(x)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_converter_names_bad_keys(tv_resnet18):
    state = dict(tv_resnet18.state_dict())
    state.pop("layer1.0.conv1.weight")
    state["extra.weight"] = torch.zeros(3)
    state["fc.weight"] = torch.zeros(5, 512)
    with pytest.raises(ValueError) as err:
        jaxcam.models.resnet18(num_classes=10, weights=state)
    msg = str(err.value)
    assert "layer1/0/conv1/kernel" in msg and "extra.weight" in msg and "fc.weight" in msg


# ---------------------------------------------------------------- split -----------------------


@pytest.mark.parametrize("layer", ["layer4", "layer4/1", "layer3/1/bn2", "layer2/0/downsample"])
def test_split_features_match_torch_and_head_completes_forward(tv_resnet18, resnet18, images, layer):
    module = tv_resnet18
    for name in layer.split("/"):
        module = getattr(module, name) if not name.isdigit() else module[int(name)]
    split = Split(resnet18, jaxcam._src.split.parse_layer(layer))
    x = jnp.asarray(images)
    a = split.features(x)
    np.testing.assert_allclose(np.asarray(a), layer_output(tv_resnet18, module, nhwc_to_torch(images)), atol=2e-4, rtol=2e-4)
    # Inside a residual block the head must keep the skip path: head(x, A) is the whole forward.
    np.testing.assert_allclose(np.asarray(split.head(x, a)), np.asarray(resnet18(x)), atol=1e-4, rtol=1e-4)


class UserNet(nn.Module):
    """A user-written model with a skip connection around `body`."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), name="stem")(x))
        y = nn.relu(nn.Conv(8, (3, 3), name="body")(x))
        return nn.Dense(4, name="head")(jnp.mean(x + y, axis=(1, 2)))


def test_split_on_user_model_replaces_only_the_layer():
    module = UserNet()
    x = jax.random.normal(jax.random.key(0), (3, 16, 16, 3))
    variables = module.init(jax.random.key(1), x)
    split = Split(jaxcam.Model(module, variables), ("body",))
    p = variables["params"]
    stem = nn.relu(jax.lax.conv_general_dilated(x, p["stem"]["kernel"], (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["stem"]["bias"])
    replacement = jax.random.normal(jax.random.key(2), (3, 16, 16, 8))
    expected = jnp.mean(stem + nn.relu(replacement), axis=(1, 2)) @ p["head"]["kernel"] + p["head"]["bias"]
    np.testing.assert_allclose(split.head(x, replacement), expected, atol=1e-5)
    assert split.head(x, replacement, classes=jnp.array([0, 1, 2])).shape == (3, 4)  # no classifier named


def test_unknown_layer_lists_valid_paths(resnet18, images):
    with pytest.raises(ValueError, match=r"unknown layer 'layer9'.*layer4/1"):
        jaxcam.grad_cam(resnet18, images, layer="layer9")


# ---------------------------------------------------------------- closed forms ----------------


def test_grad_cam_equals_cam_for_gap_fc_head(tv_resnet18, resnet18, images):
    """Under GAP + FC, dy/dA_k = W[c, k] / hw everywhere, so Grad-CAM is CAM = sum_k W[c,k] A_k."""
    a = layer_output(tv_resnet18, tv_resnet18.layer4, nhwc_to_torch(images))
    w = tv_resnet18.fc.weight.detach().numpy()
    targets = np.array([3, 7])
    cam = np.einsum("nhwc,nc->nhw", a, w[targets])
    expected = upsample(normalize(np.maximum(cam, 0)), (SIZE, SIZE))
    got = np.asarray(jaxcam.grad_cam(resnet18, images, layer="layer4", targets=targets))
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_ablating_a_channel_under_gap_fc_drops_w_times_mean(tv_resnet18, resnet18, images):
    """Zeroing channel k of A before GAP + FC lowers logit c by exactly W[c, k] * mean(A_k)."""
    x = jnp.asarray(images)
    split = Split(resnet18, ("layer4",))
    a = split.features(x)
    classes = jnp.array([1, 4])
    keep = ~jnp.eye(a.shape[-1], dtype=bool)
    y = np.asarray(resnet18(x))[np.arange(2), classes]
    got = np.asarray(ablated_scores(split, x, a, keep, classes, classes, "logit", 0.0, 128))  # (C, N)
    w = tv_resnet18.fc.weight.detach().numpy()[np.asarray(classes)]  # (N, C)
    expected = y[None] - (w * np.asarray(a).mean(axis=(1, 2))).T
    np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-4)

    # ... and the map is ReLU(sum_k w_k A_k) with w_k = W[c, k] mean(A_k) / y.
    a_np = layer_output(tv_resnet18, tv_resnet18.layer4, nhwc_to_torch(images))
    weights = w * a_np.mean(axis=(1, 2)) / y[:, None]
    cam = np.maximum(np.einsum("nc,nhwc->nhw", weights, a_np), 0)
    maps = np.asarray(jaxcam.ablation_cam(resnet18, images, layer="layer4", targets=np.asarray(classes)))
    np.testing.assert_allclose(maps, upsample(normalize(cam), (SIZE, SIZE)), atol=1e-3)


def test_fast_ablation_of_linear_head_is_exact():
    """Head = mean over locations, then Dense: ablating location (i,j) drops logit c by W[:,c].A_ij / hw."""

    class Linear(nn.Module):
        @nn.compact
        def __call__(self, x):
            a = nn.Conv(6, (3, 3), name="conv")(x)
            return nn.Dense(3, name="fc")(a.mean(axis=(1, 2)))

    module = Linear()
    x = jax.random.normal(jax.random.key(0), (2, 4, 5, 3))
    variables = module.init(jax.random.key(1), x)
    model = jaxcam.Model(module, variables, jaxcam.ModelInfo(default_layer="conv", classifier="fc"))
    a = Split(model, ("conv",)).features(x)
    w = variables["params"]["fc"]["kernel"][:, 2]
    drop = jnp.einsum("nhwc,c->nhw", a, w) / 20.0
    got = jaxcam.fast_ablation_cam(model, x, targets=2, score="logit", final_activation="none")
    lo, hi = drop.min(axis=(1, 2), keepdims=True), drop.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(got, (drop - lo) / (hi - lo), atol=1e-5)
    # spatial ablation: (drop / y) * sum_k A_k
    y = model(x)[:, 2]
    spatial = drop / y[:, None, None] * a.sum(-1)
    got = jaxcam.spatial_ablation_cam(model, x, targets=2, final_activation="none")
    lo, hi = spatial.min(axis=(1, 2), keepdims=True), spatial.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(got, (spatial - lo) / (hi - lo), atol=1e-5)


def test_window_masks_cover_every_location_with_stride():
    keep, cover = window_masks(5, 4, window=2, stride=2)
    assert keep.shape == (3 * 2, 5, 4, 1)
    assert np.all(np.asarray(cover).sum(0) >= 1)  # the last row is covered by a window moved back
    np.testing.assert_array_equal(np.asarray(keep)[..., 0], np.asarray(cover) == 0)


# ---------------------------------------------------------------- pytorch-grad-cam parity -----


@pytest.mark.parametrize("name", ["GradCAM", "AblationCAM"])
def test_maps_match_pytorch_grad_cam(tv_resnet18, resnet18, images, name):
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [3, 7]  # classes whose reference maps are not blank for this seed (asserted below)
    with getattr(pytorch_grad_cam, name)(model=tv_resnet18, target_layers=[tv_resnet18.layer4[-1]]) as cam:
        expected = cam(input_tensor=nhwc_to_torch(images), targets=[ClassifierOutputTarget(t) for t in targets])
    assert (np.ptp(expected, axis=(1, 2)) > 0.5).all(), "blank reference map"
    fn = {"GradCAM": jaxcam.grad_cam, "AblationCAM": jaxcam.ablation_cam}[name]
    got = np.asarray(fn(resnet18, images, layer="layer4", targets=np.array(targets)))
    err = np.abs(got - expected).max()
    print(f"parity {name}: max-abs {err:.1e}")
    assert err < PARITY_TOL[name], err


# ---------------------------------------------------------------- head-only cost --------------


def test_ablation_cam_costs_at_most_1_5_forward_passes(resnet18):
    """XLA's own FLOP count: ablating all 512 channels of layer4 re-runs only the head. Counted on XLA's
    convolutions (`native(False)`): XLA's cost analysis does not see inside oneDNN's custom calls."""
    x = jnp.zeros((1, 64, 64, 3))

    def flops(fn):
        with jaxcam.nn.native(False):
            return jax.jit(fn).lower(resnet18, x).compile().cost_analysis()["flops"]

    forward = flops(lambda m, x: m(x))
    ablation = flops(lambda m, x: jaxcam.ablation_cam(m, x, layer="layer4", chunk_size=512))
    assert ablation <= 1.5 * forward, (ablation, forward)


# ---------------------------------------------------------------- targets & inputs ------------


def test_targets_forms_agree(resnet18, images):
    argmax = np.asarray(resnet18(jnp.asarray(images))).argmax(-1)
    by_none = jaxcam.grad_cam(resnet18, images)
    by_ints = jaxcam.grad_cam(resnet18, images, targets=argmax)
    np.testing.assert_allclose(by_none, by_ints, atol=1e-6)

    def first_class(scores):
        return scores[:, 1]

    np.testing.assert_allclose(
        jaxcam.grad_cam(resnet18, images, targets=first_class), jaxcam.grad_cam(resnet18, images, targets=1), atol=1e-6
    )


def test_literal_design_card_call(resnet18, images):
    maps = jaxcam.ablation_cam(resnet18, images, layer="layer4")
    assert maps.shape == (2, SIZE, SIZE) and maps.dtype == jnp.float32
    assert float(maps.min()) == 0.0 and float(maps.max()) == 1.0


@pytest.mark.parametrize(
    "x, kwargs, error, match",
    [
        (np.zeros((SIZE, SIZE, 3), np.float32), {}, ValueError, r"x\[None\]"),
        (np.zeros((2, 3, SIZE, SIZE), np.float32), {}, ValueError, "NCHW"),
        (np.zeros((0, SIZE, SIZE, 3), np.float32), {}, ValueError, "empty batch"),
        (np.zeros((2, SIZE, SIZE, 3), np.uint8), {}, TypeError, "preprocess"),
        (np.zeros((2, SIZE, SIZE, 3), np.float32), {"targets": 10}, ValueError, "out of range"),
        (np.zeros((2, SIZE, SIZE, 3), np.float32), {"targets": [1, 2, 3]}, ValueError, "one class per image"),
        (np.zeros((2, SIZE, SIZE, 3), np.float32), {"score": "prob"}, ValueError, "score must be"),
        (np.zeros((2, SIZE, SIZE, 3), np.float32), {"final_activation": "tanh"}, ValueError, "final_activation"),
        (np.zeros((2, SIZE, SIZE, 3), np.float32), {"chunk_size": 0}, ValueError, "chunk_size"),
    ],
)
def test_bad_input_is_a_clear_error(resnet18, x, kwargs, error, match):
    with pytest.raises(error, match=match):
        jaxcam.ablation_cam(resnet18, x, layer="layer4", **kwargs)


def test_constant_map_is_zeros_not_nan():
    class Flat(nn.Module):
        @nn.compact
        def __call__(self, x):
            a = nn.Conv(4, (1, 1), name="conv", kernel_init=nn.initializers.zeros)(x)
            return nn.Dense(3, name="fc")(a.mean(axis=(1, 2)))

    module = Flat()
    x = jnp.ones((2, 8, 8, 3))
    model = jaxcam.Model(module, module.init(jax.random.key(0), x), jaxcam.ModelInfo(default_layer="conv", classifier="fc"))
    for method in (jaxcam.grad_cam, jaxcam.ablation_cam, jaxcam.spatial_ablation_cam, jaxcam.fast_ablation_cam):
        maps = np.asarray(method(model, x))
        assert np.all(maps == 0), method.__name__


def test_half_precision_is_computed_in_float32(resnet18, images):
    """bfloat16 weights and input are upcast inside the jit: the drops survive (bf16 would drown them)."""
    half = resnet18.with_variables(jax.tree_util.tree_map(lambda v: v.astype(jnp.bfloat16), resnet18.variables))
    ref = np.asarray(jaxcam.fast_ablation_cam(resnet18, images, layer="layer4"))
    got = jaxcam.fast_ablation_cam(half, jnp.asarray(images, jnp.bfloat16), layer="layer4")
    assert got.dtype == jnp.float32
    assert np.corrcoef(np.ravel(got), np.ravel(ref))[0, 1] > 0.99
