"""Faithfulness metrics: closed forms, scipy, and pytorch-grad-cam 1.5.7 on identical weights and maps."""
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import torch
import torchvision
from PIL import Image
from pytorch_grad_cam.metrics import road as pgc_road
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

import jaxcam
import jaxcam.metrics as M

SIZE = 48
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))


@pytest.fixture(scope="module")
def torch_model():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-trivial eval-mode BatchNorm, so conversion errors would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
    return model


@pytest.fixture(scope="module")
def model(torch_model):
    return jaxcam.models.resnet18(num_classes=10, weights=torch_model.state_dict())


@pytest.fixture(scope="module")
def data(model):
    x = np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    maps = np.asarray(jaxcam.grad_cam(model, x, layer="layer3"))
    return x, maps


def to_torch(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


class MeanPixel(nn.Module):
    """One class whose logit is the mean of all input values: deletion curves have a closed form."""

    @nn.compact
    def __call__(self, x):
        return x.mean(axis=(1, 2, 3))[:, None]


def expected_curve(x, sal, base, steps, insert):
    """Numpy: pixels ordered by decreasing saliency (stable), round(k * HW / steps) changed at step k."""
    n, h, w, c = x.shape
    out = np.zeros((n, steps + 1))
    for i in range(n):
        order = np.argsort(-sal[i].ravel(), kind="stable")
        for k in range(steps + 1):
            changed = np.zeros(h * w, bool)
            changed[order[: int(np.round(k * h * w / steps))]] = True
            changed = changed.reshape(h, w, 1)
            img = np.where(changed, x[i], base[i]) if insert else np.where(changed, base[i], x[i])
            out[i, k] = img.mean()
    return out


@pytest.mark.parametrize("baseline", ["zeros", "mean"])
def test_deletion_and_insertion_curves_closed_form(baseline):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 12, 10, 3)).astype(np.float32)
    sal = rng.random((2, 12, 10)).astype(np.float32)
    sal[0, :2] = 0.5  # ties: broken by row-major index
    model = jaxcam.Model(MeanPixel(), {})
    base = np.zeros_like(x) if baseline == "zeros" else np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)
    for insert, fn in ((False, M.deletion_curve), (True, M.insertion_curve)):
        curve = np.asarray(fn(model, x, sal, targets=0, steps=7, baseline=baseline, score="logit"))
        want = expected_curve(x, sal, base, 7, insert)
        np.testing.assert_allclose(curve, want, atol=1e-5)
        np.testing.assert_allclose(np.asarray(M.auc(curve)), np.trapezoid(want, dx=1 / 7, axis=1), atol=1e-5)


def test_blur_baseline_matches_scipy():
    x = np.random.default_rng(2).normal(size=(1, 40, 36, 2)).astype(np.float32)
    got = np.asarray(M.gaussian_blur(jnp.asarray(x)))
    kw = dict(sigma=(0, 5, 5, 0), truncate=11 / 5, mode="constant")
    want = scipy.ndimage.gaussian_filter(x, **kw) / scipy.ndimage.gaussian_filter(np.ones_like(x), **kw)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("score, target", [("softmax", ClassifierOutputSoftmaxTarget), ("logit", ClassifierOutputTarget)])
def test_confidence_metrics_match_pytorch_grad_cam(model, torch_model, data, score, target):
    x, maps = data
    classes = np.asarray(model(x)).argmax(-1)
    targets = [target(int(c)) for c in classes]
    want = CamMultImageConfidenceChange()(to_torch(x), maps, targets, torch_model)
    np.testing.assert_allclose(np.asarray(M.confidence_change(model, x, maps, score=score)), want, atol=1e-4)
    # Average Drop / Increase from torch's own Y and O (Chattopadhyay et al.'s formulas).
    with torch.no_grad():
        y = np.array([t(o).item() for t, o in zip(targets, torch_model(to_torch(x)))])
        o = np.array([t(v).item() for t, v in zip(targets, torch_model(to_torch(x * maps[..., None])))])
    np.testing.assert_allclose(
        np.asarray(M.average_drop(model, x, maps, score=score)), 100 * np.maximum(y - o, 0) / y, atol=1e-3
    )
    np.testing.assert_array_equal(np.asarray(M.increase_in_confidence(model, x, maps, score=score)), 100.0 * (o > y))


@pytest.mark.parametrize("order, metric", [("morf", ROADMostRelevantFirst), ("lerf", ROADLeastRelevantFirst)])
def test_road_matches_pytorch_grad_cam(model, torch_model, data, order, metric):
    """Noise off on both sides (pgc's noise comes from torch's RNG); everything else identical."""
    x, maps = data
    classes = np.asarray(model(x)).argmax(-1)
    got = np.asarray(M.road(model, x, maps, percentiles=(20, 80), order=order, noise=0.0, tol=1e-7))
    for j, p in enumerate((20, 80)):
        pgc = metric(p)
        pgc.perturbation.imputer.noise = 0.0
        want = pgc(to_torch(x), maps.copy(), [ClassifierOutputSoftmaxTarget(int(c)) for c in classes], torch_model)
        np.testing.assert_allclose(got[:, j], want, atol=1e-4)


def test_imputer_keeps_known_pixels_and_adds_noise_only_where_imputed():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, 32, 32, 3)).astype(np.float32))
    keep = jnp.asarray(rng.random((2, 32, 32)) < 0.6)
    clean = np.asarray(M.noisy_linear_impute(x, keep, noise=0.0, tol=1e-7))
    noisy = np.asarray(M.noisy_linear_impute(x, keep, noise=0.5, key=jax.random.key(1), tol=1e-7))
    k = np.asarray(keep)[..., None].repeat(3, -1)
    np.testing.assert_array_equal(clean[k], np.asarray(x)[k])
    np.testing.assert_array_equal(noisy[k], np.asarray(x)[k])
    assert abs(np.std(noisy[~k] - clean[~k]) - 0.5) < 0.03
    # Each imputed pixel is the weighted mean of its in-image neighbours (1/6 edge, 1/12 diagonal).
    w = np.array([[1, 2, 1], [2, 0, 2], [1, 2, 1]], np.float64) / 12
    sums = scipy.ndimage.correlate(clean.astype(np.float64), w[None, :, :, None], mode="constant")
    norm = scipy.ndimage.correlate(np.ones_like(clean, np.float64), w[None, :, :, None], mode="constant")
    np.testing.assert_allclose(clean[~k], (sums / norm)[~k], atol=1e-4)


@pytest.fixture
def pgc_road_without_noise(monkeypatch):
    """pgc's imputer draws its noise from torch's RNG: every imputer pgc builds gets noise=0."""
    imputer = pgc_road.NoisyLinearImputer.__init__
    monkeypatch.setattr(imputer, "__defaults__", (0.0,) + imputer.__defaults__[1:])


def test_road_combined_matches_pytorch_grad_cam(model, torch_model, data, pgc_road_without_noise):
    x, maps = data
    classes = np.asarray(model(x)).argmax(-1)
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]
    want = pgc_road.ROADCombined(percentiles=[20, 80])(to_torch(x), maps.copy(), targets, torch_model)
    got = np.asarray(M.road_combined(model, x, maps, percentiles=(20, 80), noise=0.0, tol=1e-7))
    assert np.abs(want).max() > 1e-3  # the perturbations change the scores
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_all_metrics_match_pytorch_grad_cam_and_torch(model, torch_model, data, pgc_road_without_noise):
    """One all_metrics call against pgc's metric classes (noise off) and torch's own scores."""
    x, maps = data
    out = M.all_metrics(model, x, maps, steps=0, percentiles=(20, 80), noise=0.0, tol=1e-7)
    classes = np.asarray(out["target"])
    with torch.no_grad():
        logits = torch_model(to_torch(x))
    np.testing.assert_array_equal(classes, logits.numpy().argmax(-1))
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]
    with torch.no_grad():
        y = np.array([t(o).item() for t, o in zip(targets, logits)])
        o = np.array([t(v).item() for t, v in zip(targets, torch_model(to_torch(x * maps[..., None])))])
    np.testing.assert_allclose(out["score"], y, atol=1e-5)
    np.testing.assert_allclose(out["explained_score"], o, atol=1e-5)
    np.testing.assert_allclose(out["average_drop"], 100 * np.maximum(y - o, 0) / y, atol=1e-3)
    np.testing.assert_array_equal(out["increase_in_confidence"], 100.0 * (o > y))
    want = CamMultImageConfidenceChange()(to_torch(x), maps, targets, torch_model)
    np.testing.assert_allclose(out["confidence_change"], want, atol=1e-4)
    morf = pgc_road.ROADMostRelevantFirstAverage([20, 80])(to_torch(x), maps.copy(), targets, torch_model)
    lerf = pgc_road.ROADLeastRelevantFirstAverage([20, 80])(to_torch(x), maps.copy(), targets, torch_model)
    np.testing.assert_allclose(np.asarray(out["road_morf"]).mean(1), morf, atol=1e-4)
    np.testing.assert_allclose(np.asarray(out["road_lerf"]).mean(1), lerf, atol=1e-4)
    np.testing.assert_allclose(out["road_combined"], (lerf - morf) / 2, atol=1e-4)  # pgc ROADCombined's formula


def test_all_metrics_curves_closed_form():
    """Deletion / insertion curves and their AUC from all_metrics against the numpy closed form."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 12, 10, 3)).astype(np.float32)
    sal = rng.random((2, 12, 10)).astype(np.float32)
    model = jaxcam.Model(MeanPixel(), {})
    out = M.all_metrics(model, x, sal, targets=0, steps=7, baseline="zeros", percentiles=(), score="logit")
    for name, insert in (("deletion", False), ("insertion", True)):
        want = expected_curve(x, sal, np.zeros_like(x), 7, insert)
        np.testing.assert_allclose(out[name], want, atol=1e-5)
        np.testing.assert_allclose(out[name + "_auc"], np.trapezoid(want, dx=1 / 7, axis=1), atol=1e-5)
    np.testing.assert_allclose(out["score"], x.mean(axis=(1, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(out["explained_score"], (x * sal[..., None]).mean(axis=(1, 2, 3)), atol=1e-6)
    assert "road_morf" not in out


def test_clear_errors(model, data):
    x, maps = data
    with pytest.raises(ValueError, match="one map per image"):
        M.average_drop(model, x, maps[:, :10])
    with pytest.raises(ValueError, match="baseline must be one of"):
        M.deletion_curve(model, x, maps, baseline="black")
    with pytest.raises(ValueError, match="order must be one of"):
        M.road(model, x, maps, order="top")
    with pytest.raises(ValueError, match="percentiles"):
        M.road(model, x, maps, percentiles=(120,))
    with pytest.raises(ValueError, match=r"one class per image; got targets of shape \(\d+, 2\)"):
        M.average_drop(model, x, maps, targets=np.zeros((x.shape[0], 2), np.int32))
