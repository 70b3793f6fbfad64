"""Explaining in bfloat16 (`Model.with_compute_dtype`, `jaxcam render --bf16`, issue 25).

The model's layers run in bfloat16 while the method's arithmetic stays float32. Checked against
pytorch-grad-cam's float32 maps on identical weights (torchvision ResNet-18 at 64 px and the CIFAR ResNet-20
at 32 px, randomized BatchNorm statistics): the bfloat16 maps stay within bfloat16's rounding of them, and differ from jaxcam's
float32 maps by more than float32 noise (so the layers did run in bfloat16).
"""
import contextlib
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import pytorch_grad_cam
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import jaxcam
import jaxcam.equinox
from jaxcam._src.split import Split
from tests.helpers import random_pngs
from tests.methods.test_transformers import tiny_vit  # noqa: F401 (fixture)
from tests.torch_utils import nhwc_to_torch

TARGETS = [3, 7]
# Measured max-abs against pgc's float32 maps (two images, Zen 4 with oneDNN's bfloat16 kernels): Grad-CAM
# 5.3e-3 (ResNet-18, layer4, 64 px), Score-CAM 9.1e-3 (ResNet-20, layer3, 32 px); jaxcam's float32 maps agree
# with pgc's within 1.3e-6 there.
BF16_TOL = {"grad_cam": 5e-2, "score_cam": 0.1}
F32_NOISE = 1e-4  # float32 maps agree with pgc's within 1e-5: a larger change means bfloat16 ran


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)  # ResNet-18's


def test_with_compute_dtype_stores_bfloat16_parameters_and_checks_its_argument(resnet18):
    fast = resnet18.with_compute_dtype(jnp.bfloat16)
    assert fast.info.compute_dtype == "bfloat16" and resnet18.info.compute_dtype is None
    assert {v.dtype for v in jax.tree_util.tree_leaves(fast.variables["params"])} == {jnp.dtype(jnp.bfloat16)}
    assert {v.dtype for v in jax.tree_util.tree_leaves(fast.variables["batch_stats"])} == {jnp.dtype(jnp.float32)}
    assert fast.with_compute_dtype("bfloat16") is fast
    back = fast.with_compute_dtype("float32")
    assert back.info.compute_dtype is None
    assert {v.dtype for v in jax.tree_util.tree_leaves(back.variables)} == {jnp.dtype(jnp.float32)}
    for bad in ("float16", "int8", "bf16x"):
        with pytest.raises(ValueError, match="compute_dtype must be one of float32, bfloat16"):
            resnet18.with_compute_dtype(bad)


def test_layers_run_in_bfloat16_and_hand_float32_to_the_method(resnet18, images):
    fast = resnet18.with_compute_dtype("bfloat16")
    x = jnp.asarray(images)
    jaxpr = jax.make_jaxpr(lambda m, x: m(x))(fast, x).jaxpr
    convs = [e for e in jaxpr.eqns if e.primitive.name in ("jaxcam_conv", "conv_general_dilated")]
    assert len(convs) == 20 and all(v.aval.dtype == jnp.bfloat16 for e in convs for v in e.invars)
    assert fast(x).dtype == jnp.float32
    split = Split(fast, ("layer4",))
    a = split.features(x)
    assert a.dtype == jnp.float32
    assert split.head(x, a).dtype == jnp.float32
    g = jax.grad(lambda a: split.head(x, a)[:, 3].sum())(a)
    assert g.dtype == jnp.float32 and float(jnp.abs(g).max()) > 0


CASES = {  # method -> (pgc class, jaxcam model fixture, torch model fixture, torch layer, jaxcam layer, px)
    "grad_cam": ("GradCAM", "resnet18", "tv_resnet18", lambda m: m.layer4[-1], "layer4", 64),
    "score_cam": ("ScoreCAM", "resnet20", "tv_resnet20", lambda m: m.layer3, "layer3", 32),  # 64 forwards per image
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bfloat16_maps_stay_within_bfloat16_rounding_of_pytorch_grad_cam(name, request):
    pgc, model, tv_model, tv_layer, layer, px = CASES[name]
    model, tv_model = request.getfixturevalue(model), request.getfixturevalue(tv_model)
    images = np.random.default_rng(0).normal(size=(2, px, px, 3)).astype(np.float32)
    with getattr(pytorch_grad_cam, pgc)(model=tv_model, target_layers=[tv_layer(tv_model)]) as cam:
        if pgc == "ScoreCAM":
            cam.batch_size = 64
        expected = cam(input_tensor=nhwc_to_torch(images), targets=[ClassifierOutputTarget(t) for t in TARGETS])
    method = getattr(jaxcam, name)
    fast = np.asarray(method(model.with_compute_dtype("bfloat16"), jnp.asarray(images), layer, TARGETS))
    full = np.asarray(method(model, jnp.asarray(images), layer, TARGETS))
    err, err32 = np.abs(fast - expected).max(), np.abs(full - expected).max()
    print(f"{name}: bfloat16 vs pgc float32 max-abs {err:.2e}, float32 vs pgc {err32:.2e}")
    assert err32 < 1e-5
    assert F32_NOISE < err < BF16_TOL[name]
    # the same image and target regions: each map's peak cell is the reference's, or within its top 5%
    for f, e in zip(fast, expected):
        assert e.ravel()[np.argmax(f)] >= np.quantile(e, 0.95)


def test_render_bf16_flag_reaches_the_library(tmp_path):
    from jaxcam import images as images_lib
    from jaxcam.cli import render

    folder = random_pngs(tmp_path / "in", ("a.png",), (40, 50, 3), seed=3)
    out = tmp_path / "out"
    argv = [str(folder), "--model", "resnet20", "--weights", "none", "--image-size", "32", "--method", "grad_cam",
            "--target", "3", "--save-maps", "--out", str(out), "--bf16"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert render.main(argv) == 0
    saved = np.load(out / "a_grad_cam.npy")
    model = jaxcam.models.load("resnet20", weights=None)
    x = model.preprocess(images_lib.load(str(folder / "a.png"), 32).image[None])
    fast = np.asarray(jaxcam.grad_cam(model.with_compute_dtype("bfloat16"), x, None, 3))[0]
    full = np.asarray(jaxcam.grad_cam(model, x, None, 3))[0]
    assert np.abs(saved - fast).max() < 1e-6  # measured 0: the same computation
    assert np.abs(saved - full).max() > F32_NOISE  # and not the float32 one


def _layer_dtypes(jaxpr):
    """The operand dtypes of every convolution and matrix product in `jaxpr` and the jaxprs inside it."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("jaxcam_conv", "conv_general_dilated", "dot_general"):
            found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found.extend(_layer_dtypes(inner))
    return found


def _explain(method, model, x, **kw):
    return getattr(jaxcam, method)(model, x, **kw)


@pytest.mark.parametrize("case", ["grad_cam", "score_cam", "cam", "fullgrad", "fullgrad-nnx", "legrad-vit", "grad_cam-equinox"])
def test_every_path_runs_the_layers_in_bfloat16(case, request):
    """The convolutions of each method's whole computation take bfloat16 operands: methods that call the
    network their own way (FullGrad's and LeGrad's interceptors, NNX's probed copy, CAM's structural check)
    and kinds whose layers insist on one dtype (Equinox) included; and the map differs from the same
    bfloat16-rounded weights computed in float32 by more than float32 noise (relative to the map's scale)."""
    method = case.split("-")[0]
    if case == "fullgrad-nnx":
        model, x = jaxcam.models.nnx_resnet18(num_classes=10), np.random.default_rng(0).normal(size=(1, 32, 32, 3))
    elif case == "legrad-vit":
        model = request.getfixturevalue("tiny_vit")[1]
        x = np.random.default_rng(0).normal(size=(1, model.module.image_size, model.module.image_size, 3))
    elif case == "grad_cam-equinox":
        import equinox as eqx

        k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
        net = eqx.nn.Sequential([eqx.nn.Conv2d(3, 4, 3, padding=1, key=k1), eqx.nn.Lambda(jax.nn.relu),
                                 eqx.nn.Conv2d(4, 6, 3, padding=1, key=k2), eqx.nn.Lambda(jax.nn.relu),
                                 eqx.nn.Lambda(lambda a: a.mean(axis=(1, 2))), eqx.nn.Linear(6, 3, key=k3)])
        model = jaxcam.equinox.model(net, default_layer="layers[3]")
        x = np.random.default_rng(0).normal(size=(2, 12, 12, 3))
    else:
        model, x = request.getfixturevalue("resnet18"), np.random.default_rng(0).normal(size=(1, 64, 64, 3))
    x = jnp.asarray(x, jnp.float32)
    fast = model.with_compute_dtype("bfloat16")
    # raw maps (no ReLU and min-max, which can map both precisions' few cells onto the same 0/1 values)
    kw = {"targets": 1, **({"final_activation": "none"} if method == "cam" else {"normalize": False})}
    convs = _layer_dtypes(jax.make_jaxpr(lambda m, x: _explain(method, m, x, **kw))(fast, x).jaxpr)
    network = [d for d in convs if "bfloat16" in d]
    assert network and all(d == ("bfloat16", "bfloat16") for d in network), convs  # no float32 x bfloat16 mix
    rounded = fast.with_compute_dtype("float32")  # the same rounded weights, computed in float32
    ref = _explain(method, rounded, x, **kw)
    relative = float(jnp.abs(_explain(method, fast, x, **kw) - ref).max() / jnp.abs(ref).max())
    assert relative > F32_NOISE, relative  # float32 noise is ~1e-6 of the map; bfloat16's rounding ~1e-2


def test_keras_models_are_refused_with_their_own_way():
    kind = type("K", (), {"own_dtype_policy": True, "__hash__": lambda self: 0})()
    model = jaxcam.Model(kind, {"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="mixed_bfloat16"):
        model.with_compute_dtype("bfloat16")
