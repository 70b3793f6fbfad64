"""Targets (jaxcam.targets) against pytorch-grad-cam 1.5.7's targets, and many targets per call.

Values: each target on random scores equals pytorch-grad-cam's on the same numbers (torch). Maps:
Grad-CAM with a segmentation target on a small fully-convolutional net (Flax and torch, identical
weights) equals pytorch-grad-cam's GradCAM with SemanticSegmentationTarget. Many targets:
targets (N, T) equal T single-target calls to 1e-5.
"""
import warnings

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest
import pytorch_grad_cam
import torch
from pytorch_grad_cam.utils import model_targets as pgc_targets

import jaxcam
from jaxcam import targets as T
from tests.torch_utils import nhwc_to_torch


@pytest.fixture(scope="module")
def scores():
    return np.random.default_rng(0).normal(size=(3, 7)).astype(np.float32) * 3


@pytest.mark.parametrize("ours,theirs", [
    (T.ClassLogit(2), pgc_targets.ClassifierOutputTarget(2)),
    (T.ClassSoftmax(4), pgc_targets.ClassifierOutputSoftmaxTarget(4)),
    (T.ReST(1), pgc_targets.ClassifierOutputReST(1)),
    (T.FinerWeighted(0, (3, 5), 0.6), pgc_targets.FinerWeightedTarget(0, [3, 5], 0.6)),
])
def test_class_targets_equal_pgc(scores, ours, theirs):
    np.testing.assert_allclose(ours(jnp.asarray(scores)), theirs(torch.from_numpy(scores)).numpy(), rtol=1e-5, atol=1e-5)


def test_binary_raw_and_concept_targets(scores):
    one = scores[:, :1]
    for c in (0, 1):
        expected = pgc_targets.BinaryClassifierOutputTarget(c)(torch.from_numpy(one)).numpy()[:, 0]
        np.testing.assert_allclose(T.Binary(c)(jnp.asarray(one)), expected)
    np.testing.assert_allclose(T.RawScores()(jnp.asarray(scores)), scores.sum(1), rtol=1e-5)
    concept = np.random.default_rng(1).normal(size=7).astype(np.float32)
    cos = torch.nn.CosineSimilarity(dim=-1)(torch.from_numpy(scores), torch.from_numpy(concept)[None]).numpy()
    np.testing.assert_allclose(T.SimilarityToConcept(concept)(jnp.asarray(scores)), cos, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(T.DifferenceFromConcept(concept)(jnp.asarray(scores)), 1 - cos, rtol=1e-5, atol=1e-6)


class TorchFCN(torch.nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, classes, 1),
        )

    def forward(self, x):
        return torch.nn.functional.interpolate(self.body(x), scale_factor=2, mode="nearest")


class Body(nn.Module):
    classes: int = 4

    @nn.compact
    def __call__(self, x):
        x = nn.max_pool(nn.relu(nn.Conv(8, (3, 3), padding=1, name="0")(x)), (2, 2), (2, 2))
        x = nn.Conv(8, (3, 3), padding=1, name="3")(x)
        return nn.Conv(self.classes, (1, 1), name="5")(nn.relu(x))


class FlaxFCN(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = Body(name="body")(x)
        return jnp.repeat(jnp.repeat(y, 2, axis=1), 2, axis=2)


def test_segmentation_target_matches_pgc():
    torch.manual_seed(0)
    tv = TorchFCN().eval()
    model = jaxcam.models.build(FlaxFCN(), jaxcam.ModelInfo(name="tiny_fcn", default_layer="body/3", input_size=16),
                                weights=tv.state_dict())
    x = np.random.default_rng(2).normal(size=(2, 16, 16, 3)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(model(jnp.asarray(x)), tv(nhwc_to_torch(x)).numpy().transpose(0, 2, 3, 1), atol=1e-5)
    mask = np.zeros((16, 16), np.float32)
    mask[3:11, 5:14] = 1
    got = np.asarray(jaxcam.grad_cam(model, x, layer="body/3", targets=T.SemanticSegmentation(2, mask)))
    with pytorch_grad_cam.GradCAM(model=tv, target_layers=[tv.body[3]]) as cam:
        expected = cam(input_tensor=nhwc_to_torch(x), targets=[pgc_targets.SemanticSegmentationTarget(2, mask)] * 2)
    assert expected.max() > 0.5
    err = np.abs(got - expected).max()
    print(f"parity segmentation GradCAM: max-abs {err:.2e}")
    assert err < 5e-6  # measured 6.6e-7 (2.4e-7 in an earlier run)


def test_class_targets_need_class_scores():
    model = jaxcam.models.build(FlaxFCN(), jaxcam.ModelInfo(name="tiny_fcn", default_layer="body/3", input_size=16))
    with pytest.raises(ValueError, match="callable target"):
        jaxcam.grad_cam(model, np.zeros((1, 16, 16, 3), np.float32), targets=1)


@pytest.fixture(scope="module")
def vgg_like():
    from tests.methods.test_parity_pgc_families import FlaxVGG
    return jaxcam.models.build(FlaxVGG(), jaxcam.ModelInfo(name="tiny_vgg", default_layer="features", input_size=32,
                                                           classifier="classifier/2"))


@pytest.mark.parametrize("method", ["grad_cam", "grad_cam_pp", "ablation_cam", "score_cam", "eigen_grad_cam"])
def test_many_targets_equal_single_calls(vgg_like, method):
    fn = getattr(jaxcam, method)
    x = np.random.default_rng(3).normal(size=(2, 32, 32, 3)).astype(np.float32)
    classes = np.array([[1, 4, 7], [0, 4, 9]])
    many = np.asarray(fn(vgg_like, x, layer="features/3", targets=classes))
    single = np.stack([np.asarray(fn(vgg_like, x, layer="features/3", targets=classes[:, t])) for t in range(3)], 1)
    assert many.shape == (2, 3, 32, 32) and single.max() > 0.5
    # batched targets sum the backward in another order: float32 noise on maps scaled to [0, 1]
    np.testing.assert_allclose(many, single, atol=1e-4)


def test_raw_maps_and_automatic_layer(vgg_like):
    x = np.random.default_rng(4).normal(size=(1, 32, 32, 3)).astype(np.float32)
    raw = np.asarray(jaxcam.hires_cam(vgg_like, x, layer="features", targets=3, normalize=False))
    split = jaxcam.Split(vgg_like, ("features",))
    a = split.features(jnp.asarray(x))
    import jax
    g = jax.grad(lambda a: split.head(jnp.asarray(x), a)[:, 3].sum())(a)
    expected = jax.image.resize((g * a).sum(-1), (1, 32, 32), "bilinear")
    np.testing.assert_allclose(raw, expected, rtol=1e-4, atol=1e-5)
    assert raw.min() < 0  # before the ReLU
    bare = jaxcam.Model(vgg_like.module, vgg_like.variables, jaxcam.ModelInfo(name="bare_vgg", input_size=32))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        auto = jaxcam.grad_cam(bare, x, targets=3)
    assert any("layer='features'" in str(w.message) for w in caught)
    np.testing.assert_allclose(auto, jaxcam.grad_cam(vgg_like, x, layer="features", targets=3), atol=1e-6)
