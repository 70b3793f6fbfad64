"""ARCC and its parts against pytorch-grad-cam 1.5.7's metrics on identical weights (noise off on both sides)."""
import numpy as np
import pytest
import pytorch_grad_cam
from pytorch_grad_cam.metrics import arcc as pgc_arcc
from pytorch_grad_cam.metrics import road as pgc_road
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

import jaxcam
import jaxcam.metrics as M
from tests.methods.test_parity_pgc_families import nchw, tv_vgg, vgg, vgg_images  # noqa: F401  (fixtures)

CLASSES = [3, 8]


def test_arcc_matches_pgc(vgg, tv_vgg, vgg_images, monkeypatch):
    monkeypatch.setattr(pgc_road.NoisyLinearImputer.__init__, "__defaults__", (0.0, pgc_road.neighbors_weights))
    x = vgg_images
    maps = np.asarray(jaxcam.grad_cam(vgg, x, layer="features", targets=np.array(CLASSES)))
    with pytorch_grad_cam.GradCAM(model=tv_vgg, target_layers=[tv_vgg.features]) as base:
        pgc_maps = base(input_tensor=nchw(x), targets=[ClassifierOutputTarget(c) for c in CLASSES])
        assert np.abs(maps - pgc_maps).max() < 1e-3 and maps.max() > 0.5
        targets = [ClassifierOutputSoftmaxTarget(c) for c in CLASSES]
        want_complexity = pgc_arcc.Complexity()(maps)
        want_coherency = pgc_arcc.Coherency()(nchw(x), maps.copy(),
                                              [ClassifierOutputTarget(c) for c in CLASSES], tv_vgg, base)
        want = pgc_arcc.ARCC(base)(nchw(x), maps.copy(), targets, tv_vgg)
    np.testing.assert_allclose(M.complexity(maps), want_complexity, rtol=1e-5)
    got_coherency = M.coherency("grad_cam", vgg, x, maps, np.array(CLASSES), layer="features")
    np.testing.assert_allclose(got_coherency, want_coherency, atol=1e-3)
    got = M.arcc("grad_cam", vgg, x, maps, np.array(CLASSES), score="softmax", noise=0.0, tol=1e-7,
                 method_options={"layer": "features"})
    print(f"ARCC jaxcam {np.asarray(got)} pgc {want}")
    assert np.all(np.asarray(want) > 1e-4)  # small: ROAD's softmax changes are small on a random 10-class net
    np.testing.assert_allclose(got, want, rtol=1e-3)
