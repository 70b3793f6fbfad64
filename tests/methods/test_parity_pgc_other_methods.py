"""Issue 16's methods against pytorch-grad-cam 1.5.7 on identical weights (ResNet-18 at layer4 and
layer3, a non-residual VGG-like net at two layers; models and cases from test_parity_pgc_family).

Normalized maps must agree within 1e-3 max-abs; every reference map is checked not blank.
"""
import numpy as np
import pytest
import pytorch_grad_cam
from pytorch_grad_cam.utils.model_targets import ClassifierOutputReST, ClassifierOutputTarget

import jaxcam
from jaxcam import targets as T
from jaxcam.methods.random_baseline import random_weights
from tests.methods.test_parity_pgc_families import (  # noqa: F401  (fixtures)
    TARGETS, images, make_case, nchw, report, tv_vgg, vgg, vgg_images,
)

# ResNet-18 and the non-residual VGG-like net, two layers each (issue 16's "Must show").
NEW_CASES = ["resnet18/layer4", "resnet18/layer3", "vgg/features", "vgg/features/3"]


@pytest.fixture(params=NEW_CASES)
def case(request):
    return make_case(request, request.param)


def pgc(cls, tv_layer, tv_model, images, targets, ctor=None, **call):
    with cls(model=tv_model, target_layers=[] if tv_layer is None else [tv_layer], **(ctor or {})) as cam:
        out = cam(input_tensor=nchw(images), targets=targets, **call)
    assert out.max() > 0.5, "blank reference map"
    return out


def check(case, name, got, expected, **tol):
    model, _, _, layer, _ = case
    report(f"{model.info.name}/{layer} {name}", got, expected, **tol)


def test_fem(case):
    """k = 1: at 64 px ResNet-18's layer4 is 2 x 2, where no value is 2 standard deviations above the mean."""
    model, tv, x, layer, tv_layer = case
    expected = pgc(pytorch_grad_cam.FEM, tv_layer, tv, x, [ClassifierOutputTarget(t) for t in TARGETS], ctor={"k": 1})
    check(case, "FEM", jaxcam.fem(model, x, layer=layer, k=1.0), expected)


def test_kpca_cam(case):
    model, tv, x, layer, tv_layer = case
    expected = pgc(pytorch_grad_cam.KPCA_CAM, tv_layer, tv, x, [ClassifierOutputTarget(t) for t in TARGETS])
    # float32 eigh against scikit-learn's float64 kernel PCA: 8e-5 measured on vgg/features (issue: 1e-3)
    check(case, "KPCA_CAM", jaxcam.kpca_cam(model, x, layer=layer), expected, tol=1e-4)


def test_seg_eigen_cam(case):
    model, tv, x, layer, tv_layer = case
    expected = pgc(pytorch_grad_cam.SegEigenCAM, tv_layer, tv, x, [ClassifierOutputTarget(t) for t in TARGETS])
    # float32 symmetric eigensolver vs numpy's float64 SVD: 1.3e-5 measured at resnet18/layer4 (issue: 1e-3)
    check(case, "SegEigenCAM", jaxcam.seg_eigen_cam(model, x, layer=layer, targets=np.array(TARGETS)), expected,
          tol=1e-4)


def torch_shapley_vgg(tv, x):
    """ShapleyCAM on the torch VGG at `features` by torch autograd: G = dy/dA and the Hessian-vector product
    H A = d(G . A)/dA (double backward, A held fixed in the dot product), y = pgc's ReST target;
    w_k = mean_ij (G - H A / 2)_k, map = ReLU(sum_k w_k A_k), finished as pgc does (scale_cam_image per layer,
    then again over the layers' mean).
    (pytorch-grad-cam 1.5.7's own ShapleyCAM raises on a Sequential target layer: in-place detach of a view.)"""
    import torch
    from pytorch_grad_cam.utils.image import scale_cam_image

    with torch.no_grad():
        a = tv.features(nchw(x))
    a.requires_grad_(True)
    logits = tv.classifier(torch.flatten(a, 1))
    y = sum(ClassifierOutputReST(t)(logits[i]) for i, t in enumerate(TARGETS))
    (g,) = torch.autograd.grad(y, a, create_graph=True)
    (hessian_a,) = torch.autograd.grad((g * a.detach()).sum(), a)
    w = (g.detach() - 0.5 * hessian_a).mean((2, 3), keepdim=True)
    cam = torch.relu((w * a.detach()).sum(1)).numpy()
    assert np.abs(hessian_a.numpy()).max() > 1e-3 * np.abs(g.detach().numpy()).max()  # the second-order term counts
    size = (x.shape[2], x.shape[1])
    return scale_cam_image(scale_cam_image(cam, size), size)


def test_shapley_cam_rest_target(request, case):
    """With the ReST target (softmax inside) the Hessian term is not zero."""
    model, tv, x, layer, tv_layer = case
    if request.node.callspec.id == "vgg/features":
        expected = torch_shapley_vgg(tv, x)
    else:
        expected = pgc(pytorch_grad_cam.ShapleyCAM, tv_layer, tv, x, [ClassifierOutputReST(t) for t in TARGETS])
    got = np.stack([np.asarray(jaxcam.shapley_cam(model, x[i:i + 1], layer=layer, targets=T.ReST(t)))[0]
                    for i, t in enumerate(TARGETS)])
    check(case, "ShapleyCAM(ReST)", got, expected)
    grad_cam = np.stack([np.asarray(jaxcam.grad_cam(model, x[i:i + 1], layer=layer, targets=T.ReST(t)))[0]
                         for i, t in enumerate(TARGETS)])
    print(f"ShapleyCAM - GradCAM (ReST) max-abs {np.abs(got - grad_cam).max():.2e}")


def test_finer_cam(case):
    model, tv, x, layer, tv_layer = case
    with pytorch_grad_cam.FinerCAM(model=tv, target_layers=[tv_layer]) as cam:
        expected = cam(input_tensor=nchw(x), targets=None, alpha=0.7, target_idx=TARGETS[0])
    assert expected.max() > 0.5
    check(case, "FinerCAM", jaxcam.finer_cam(model, x, layer=layer, targets=TARGETS[0], alpha=0.7), expected)


def test_random_cam_is_seeded_closed_form(vgg, vgg_images):
    got = np.asarray(jaxcam.random_cam(vgg, vgg_images, layer="features", seed=3))
    a = np.asarray(jaxcam.Split(vgg, ("features",)).features(vgg_images))
    w = np.asarray(random_weights(3, *a.shape[::3]))
    expected = jaxcam._src.maps.finish((w * a).sum(-1), (32, 32))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got.max() == 1.0
    assert np.abs(got - np.asarray(jaxcam.random_cam(vgg, vgg_images, layer="features", seed=4))).max() > 0.1


@pytest.mark.parametrize("which", ["resnet18", "vgg"])
def test_fullgrad(request, which):
    model = request.getfixturevalue(which)
    tv = request.getfixturevalue("tv_resnet18" if which == "resnet18" else "tv_vgg")
    x = request.getfixturevalue("images" if which == "resnet18" else "vgg_images")
    expected = pgc(pytorch_grad_cam.FullGrad, None, tv, x, [ClassifierOutputTarget(t) for t in TARGETS])
    got = np.asarray(jaxcam.fullgrad(model, x, targets=np.array(TARGETS)))
    report(f"{which} FullGrad", got, expected)


@pytest.mark.parametrize("which", ["resnet18", "vgg"])
def test_refine_cam(request, which):
    model = request.getfixturevalue(which)
    tv = request.getfixturevalue("tv_resnet18" if which == "resnet18" else "tv_vgg")
    x = request.getfixturevalue("images" if which == "resnet18" else "vgg_images")
    layers, tv_layers = (["layer3", "layer4"], [tv.layer3, tv.layer4[-1]]) if which == "resnet18" else (
        ["features/3", "features"], [tv.features[3], tv.features])
    cam = pytorch_grad_cam.RefineCAM(model=tv, target_layers=tv_layers)
    expected = cam(input_tensor=nchw(x), targets=[ClassifierOutputTarget(t) for t in TARGETS])
    for base in cam.base_cam_per_layer:
        base.activations_and_grads.release()
    assert expected.max() > 0.5
    got = np.asarray(jaxcam.refine_cam(model, x, layer=layers, targets=np.array(TARGETS)))
    report(f"{which} RefineCAM(GradCAM++)", got, expected)


@pytest.mark.parametrize("which,pool", [("vgg", "mean"), ("vgg", "max"), ("resnet18", "max")])
def test_sess(request, which, pool):
    """Two scales (the image and 1.5x: 1 + 4 windows of the image's size), Grad-CAM per window."""
    model = request.getfixturevalue(which)
    tv = request.getfixturevalue("tv_resnet18" if which == "resnet18" else "tv_vgg")
    x = request.getfixturevalue("images" if which == "resnet18" else "vgg_images")
    layer, tv_layer = ("layer4", tv.layer4[-1]) if which == "resnet18" else ("features", tv.features)
    scales = [x.shape[1], x.shape[1] * 3 // 2]
    cam = pytorch_grad_cam.SESS(model=tv, target_layers=[tv_layer], scales=scales, pool=pool)
    expected = cam(input_tensor=nchw(x), targets=[ClassifierOutputTarget(t) for t in TARGETS])
    cam.base_cam.activations_and_grads.release()
    got = np.asarray(jaxcam.sess(model, x, layer=layer, targets=np.array(TARGETS), scales=scales, pool=pool))
    report(f"{which} SESS({pool})", got, expected)
