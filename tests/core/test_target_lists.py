"""A list of target callables, one per image (pytorch-grad-cam's ``targets=[ClassifierOutputTarget(3), ...]``).

References: Grad-CAM's closed form under a GAP + FC head, dy/dA = dy/dz W^T / #locations, in numpy.
"""
import numpy as np
import pytest

import jaxcam
from jaxcam import targets as T
from tests.helpers import finish as _finish, softmax as _softmax
from tests.methods.test_every_rank import _model, _parts


def _grad_cam(a, w, dy_dz):
    """Grad-CAM of a GAP+FC head: sum_k (dy/dz @ W^T)_k / L * A_k, per image."""
    g = dy_dz @ w.T  # (N, C); the 1 / L factor is a positive constant per image
    return _finish(np.einsum("nc,n...c->n...", g, a))


def test_a_list_of_targets_explains_one_target_per_image():
    model, x = _model((3, 3), (3, 6, 7, 2), seed=4)
    model = model.replace(info=jaxcam.ModelInfo(default_layer="features"))
    a, w, b = _parts(model, x)
    z = a.mean(axis=(1, 2)) @ w + b
    p = _softmax(z)
    dy_dz = np.zeros_like(z)
    dy_dz[0, 2] = 1.0  # ClassLogit(2)
    dy_dz[1] = p[1, 0] * (np.eye(3)[0] - p[1])  # ClassSoftmax(0)
    dy_dz[2] = 1.0  # RawScores
    targets = [T.ClassLogit(2), T.ClassSoftmax(0), T.RawScores()]
    expected = _grad_cam(a, w, dy_dz)
    np.testing.assert_allclose(np.asarray(jaxcam.grad_cam(model, x, targets=targets)), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(jaxcam.grad_cam(model, x, targets=T.PerImage(targets))), expected,
                               atol=1e-5)


def test_a_list_of_class_logits_is_their_ints_and_equal_targets_compare_equal():
    model, x = _model((3, 3), (2, 6, 6, 2), seed=5)
    model = model.replace(info=jaxcam.ModelInfo(default_layer="features"))
    a, w, b = _parts(model, x)
    dy_dz = np.eye(3)[[1, 2]]
    got = np.asarray(jaxcam.ablation_cam(model, x, targets=[T.ClassLogit(1), T.ClassLogit(2)], layer="features"))
    assert got.shape == (2, 6, 6)
    np.testing.assert_allclose(np.asarray(jaxcam.grad_cam(model, x, targets=(T.ClassLogit(1), T.ClassLogit(2)))),
                               _grad_cam(a, w, dy_dz), atol=1e-5)
    assert T.ClassLogit(3) == T.ClassLogit(3) and hash(T.ClassLogit(3)) == hash(T.ClassLogit(3))
    assert T.ClassLogit(3) != T.ClassSoftmax(3)
    mask = T.SemanticSegmentation(1, np.ones((2, 2)))
    assert mask == mask and mask != T.SemanticSegmentation(1, np.ones((2, 2)))  # arrays: by identity


def test_a_list_of_the_wrong_length_is_one_clear_line():
    model, x = _model((3, 3), (2, 6, 6, 2))
    model = model.replace(info=jaxcam.ModelInfo(default_layer="features"))
    with pytest.raises(ValueError, match="one per image") as err:
        jaxcam.grad_cam(model, x, targets=[T.ClassLogit(0)] * 3)
    assert "\n" not in str(err.value)
