"""Deep Feature Factorization: NMF quality against scikit-learn's NMF (pytorch-grad-cam's solver), the
concepts' top classes against a numpy classifier, the overlay's colours by hand."""
import numpy as np
import pytest
from sklearn.decomposition import NMF

import jaxcam
from jaxcam.methods.dff import concept_colors, nmf


def test_nmf_reconstructs_as_well_as_sklearn():
    rng = np.random.default_rng(0)
    v = (rng.random((16, 5)) @ rng.random((5, 120))).astype(np.float32) + 0.01 * rng.random((16, 120)).astype(np.float32)
    w, h = (np.asarray(t) for t in nmf(v, 5, 400, 0))
    assert (w >= 0).all() and (h >= 0).all()
    ours = np.linalg.norm(v - w @ h) / np.linalg.norm(v)
    sk = NMF(n_components=5, init="random", random_state=0, max_iter=400)
    ref = np.linalg.norm(v - sk.fit_transform(v) @ sk.components_) / np.linalg.norm(v)
    print(f"NMF relative error: jaxcam {ours:.4f}, scikit-learn {ref:.4f}")
    assert ours < max(1.2 * ref, 0.02)


def test_dff_concepts_maps_and_classes():
    model = jaxcam.models.resnet18(num_classes=10)
    x = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
    f = jaxcam.deep_feature_factorization(model, x, layer="layer4", n_components=3, top_k=2)
    assert f.concepts.shape == (512, 3) and f.maps.shape == (2, 3, 64, 64)
    assert np.allclose(np.asarray(f.maps).max(axis=(2, 3)), 1.0)
    fc = model.variables["params"]["fc"]
    logits = np.asarray(f.concepts).T @ np.asarray(fc["kernel"]) + np.asarray(fc["bias"])
    np.testing.assert_array_equal(np.asarray(f.top_classes), np.argsort(-logits, axis=1)[:, :2])
    no_head = jaxcam.deep_feature_factorization(model, x, layer="layer3", n_components=2)
    assert no_head.top_classes is None  # layer3's 256 channels do not fit the 512-input classifier
    maps = jaxcam.methods.registry.get("dff")(model, x, "layer4", n_components=3)
    np.testing.assert_allclose(maps["concept_1"], f.maps[:, 1])


def test_factorization_overlay_colours_the_strongest_concept():
    maps = np.zeros((2, 4, 4), np.float32)
    maps[0, :, :2] = 1.0
    maps[1, :, 2:] = 0.5
    out = jaxcam.factorization_overlay(np.zeros((4, 4, 3), np.uint8), maps, image_weight=0.0)
    colors = concept_colors(2)
    full = colors / colors.max(1, keepdims=True)
    np.testing.assert_allclose(out[0, 0] / 255.0, full[0], atol=1 / 255)
    np.testing.assert_allclose(out[0, 3] / 255.0, 0.5 * full[1], atol=1 / 255)
    with pytest.raises(ValueError, match="concept_maps"):
        jaxcam.factorization_overlay(np.zeros((5, 5, 3)), maps)
