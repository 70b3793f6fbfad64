"""Every option value of the layer CAM methods against pytorch-grad-cam 1.5.7 on identical weights.

One tiny GAP network (conv-ReLU x2, the explained block, conv-ReLU head, global average pool, fc) is
built in Flax and in torch with the same weights. Each case sets ONE option of ONE method to a
non-default value and compares jaxcam's map with pgc's map for the same setting:

- ``score``: pgc's target callables (logit: ClassifierOutputTarget, softmax: ClassifierOutputSoftmaxTarget,
  sigmoid: a callable taking sigmoid(output)[c]);
- ``final_activation``: pgc computes the raw map (its ``get_cam_image``); the activation is applied to it in
  numpy (softmax over the map's cells; "none": shifted to be >= 0, which pgc's min-max does not see);
- ``eigen_smooth``, ``aug_smooth=True``/``"multiply"``: pgc's own (jaxcam min-maxes the mean of the views);
- ``aug_smooth="scale"``: six views (flip x {0.9, 1, 1.1}) resized by torch (bilinear, half-pixel), each
  pgc map resized back, flipped back, averaged, min-maxed;
- ``normalize=False``: pgc's raw map resized by torch to the input size (no activation, no min-max);
- ``chunk_size``: must not change the map;
- method-specific options through pgc's own constructor arguments (FEM ``k``, KPCA ``kernel``/``gamma``),
  Score-CAM's ``align_corners=False`` through a half-pixel upsampler in pgc's place.

`COVERAGE` at the end maps every (method, option, value) of the registry to the test that checks it (here
or elsewhere); `test_every_registry_option_value_is_covered` fails on any value missing from it.
"""
import importlib

import flax.linen as nn
import jax
import numpy as np
import pytest
import pytorch_grad_cam
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

import jaxcam
from tests.helpers import ConvReLU
from jaxcam.methods import registry

SIZE = 12
TARGETS = [1, 3]
TOL = 2e-5  # measured (printed by each case): see MEASURED below


# ------------------------------------------------------------------ the twin networks


class TorchBlock(torch.nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, 3, stride, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = TorchBlock(3, 6)
        self.block2 = TorchBlock(6, 8, 2)
        self.head = TorchBlock(8, 8)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.head(self.block2(self.block1(x))).mean((2, 3)))


class FlaxNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        a = ConvReLU(8, 2, name="block2")(ConvReLU(6, name="block1")(x))
        return nn.Dense(5, name="fc")(ConvReLU(8, name="head")(a).mean((1, 2)))


@pytest.fixture(scope="module")
def twins():
    torch.manual_seed(4)
    tv = TorchNet().eval()
    with torch.no_grad():
        for p in tv.parameters():
            p.mul_(1.5)
    info = jaxcam.ModelInfo(name="option_twin", default_layer="block2", classifier="fc", input_size=SIZE)
    model = jaxcam.models.build(FlaxNet(), info, weights=tv.state_dict())
    x = np.random.default_rng(2).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(model(x), tv(nchw(x)).numpy(), atol=1e-5)
    return model, tv, x


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))


# ------------------------------------------------------------------ references


def torch_resize(maps, size):
    t = torch.from_numpy(np.asarray(maps, np.float32))[:, None]
    return torch.nn.functional.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[:, 0].numpy()


def minmax(cam):
    cam = cam - cam.min(axis=(1, 2), keepdims=True)
    top = cam.max(axis=(1, 2), keepdims=True)
    return np.where(top > 0, cam / np.where(top > 0, top, 1), 0.0)


def pgc_targets(score):
    if score == "logit":
        return [ClassifierOutputTarget(t) for t in TARGETS]
    if score == "softmax":
        return [ClassifierOutputSoftmaxTarget(t) for t in TARGETS]
    return [lambda o, t=t: torch.sigmoid(o)[..., t] for t in TARGETS]


class HalfPixelUpsample(torch.nn.Module):
    """Stands in for torch.nn.UpsamplingBilinear2d (align_corners=True) in pgc's Score-CAM."""

    def __init__(self, size):
        super().__init__()
        self.size = size

    def forward(self, x):
        return torch.nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)


def random_weights(seed, n, c):
    """random_cam's documented weights: Uniform(-1, 1) of shape (N, 1, 1, C) from jax.random.key(seed)."""
    w = jax.random.uniform(jax.random.key(seed), (n, 1, 1, c), minval=-1.0, maxval=1.0)
    return np.asarray(w)[:, 0, 0, :]


class FcWeightsCAM(pytorch_grad_cam.base_cam.BaseCAM):
    """CAM (Zhou et al.) inside pgc's machinery: w_k = W_fc[c, k] (closed form for a GAP + fc head)."""

    def __init__(self, model, target_layers, reshape_transform=None):
        super().__init__(model, target_layers, reshape_transform, uses_gradients=False)

    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
        return self.model.fc.weight.detach().numpy()[[t.category for t in targets]]


class TorchcamWeights(pytorch_grad_cam.base_cam.BaseCAM):
    """pgc's machinery (views, eigen_smooth, the finish) with torchcam 0.5.0's channel weights for SS-CAM,
    IS-CAM and SmoothGrad-CAM++, fed jaxcam's noise; score "softmax"/"sigmoid" = torchcam on a model whose
    outputs are softmax/sigmoid of the logits. SmoothGrad-CAM++ at num_samples=1 (see
    tests/test_methods_new_torchcam.py: torchcam uses the last sample's gradient, jaxcam their mean)."""

    extractor = None
    num_samples = 2

    def __init__(self, model, target_layers, reshape_transform=None):
        super().__init__(model, target_layers, reshape_transform, uses_gradients=False)
        self.score = "logit"

    def noise(self, size):
        raise NotImplementedError

    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
        from torchcam import methods as torchcam_methods

        squash = {"logit": torch.nn.Identity(), "softmax": torch.nn.Softmax(-1), "sigmoid": torch.nn.Sigmoid()}
        scored = torch.nn.Sequential(self.model, squash[self.score]).eval()
        cls = getattr(torchcam_methods, self.extractor)
        extra = {} if self.extractor == "ISCAM" else {"std": self.std}
        with cls(scored, target_layer="0.block2", num_samples=self.num_samples, **extra) as ex:
            if self.extractor != "ISCAM":
                ex._distrib = FixedNoise(lambda s, size: self.noise(s, size))
            inp = input_tensor.detach().clone().requires_grad_(self.extractor == "SmoothGradCAMpp")
            with torch.set_grad_enabled(self.extractor == "SmoothGradCAMpp"):
                scored(inp)
            return ex._get_weights([t.category for t in targets])[0].detach().numpy()


class SSCAMWeights(TorchcamWeights):
    extractor, std, seed = "SSCAM", 2.0, 0

    def noise(self, s, size):
        from jaxcam.methods.ss_cam import mask_noise

        n, c, h, w = size
        return np.stack([np.asarray(mask_noise(self.seed, s, k, (n, h, w), self.std)) for k in range(c)], 1)


class ISCAMWeights(TorchcamWeights):
    extractor = "ISCAM"


class SmoothGradWeights(TorchcamWeights):
    extractor, std, seed, num_samples = "SmoothGradCAMpp", 0.3, 0, 1

    def noise(self, s, size):
        from jaxcam.methods.smoothgrad_cam_pp import input_noise

        n, c, h, w = size
        return np.asarray(input_noise(self.seed, s, (n, h, w, c), self.std)).transpose(0, 3, 1, 2)


class FixedNoise:
    def __init__(self, noise):
        self.noise, self.calls = noise, 0

    def sample(self, size):
        out = torch.from_numpy(np.array(self.noise(self.calls, tuple(size)), np.float32))
        self.calls += 1
        return out


PGC = {  # jaxcam method -> (pgc class, constructor keywords)
    "grad_cam": ("GradCAM", {}), "hires_cam": ("HiResCAM", {}), "grad_cam_elementwise": ("GradCAMElementWise", {}),
    "grad_cam_pp": ("GradCAMPlusPlus", {}), "xgrad_cam": ("XGradCAM", {}), "layer_cam": ("LayerCAM", {}),
    "eigen_cam": ("EigenCAM", {}), "eigen_grad_cam": ("EigenGradCAM", {}), "score_cam": ("ScoreCAM", {}),
    "ablation_cam": ("AblationCAM", {}), "fem": ("FEM", {}), "kpca_cam": ("KPCA_CAM", {}),
    "shapley_cam": ("ShapleyCAM", {}), "random_cam": ("RandomCAM", {}), "seg_eigen_cam": ("SegEigenCAM", {}),
    "cam": (FcWeightsCAM, {}), "ss_cam": (SSCAMWeights, {}), "is_cam": (ISCAMWeights, {}),
    "smoothgrad_cam_pp": (SmoothGradWeights, {}),
}
LAYER = {"cam": "head"}  # CAM needs the layer that feeds the global average pool
FIXED = {"ss_cam": {"num_samples": 2}, "is_cam": {"num_samples": 2}, "smoothgrad_cam_pp": {"num_samples": 1}}


def pgc_map(method, tv, x, score="logit", final_activation="relu", raw=False, eigen_smooth=False,
            aug_smooth=False, ctor=None, align_corners=True, seed=0, layer="block2"):
    """pgc's map of `method` on images x (NHWC numpy), with the settings above applied as described."""
    name, defaults = PGC[method]
    cls = name if isinstance(name, type) else getattr(pytorch_grad_cam, name)
    cam = cls(model=tv, target_layers=[getattr(tv, layer)], **{**defaults, **(ctor or {})})
    if isinstance(cam, TorchcamWeights):
        cam.score = score
        score = "logit"
    if method == "score_cam":
        cam.batch_size = 64
    captured = []
    get_cam_image = cam.get_cam_image

    def patched(input_tensor, target_layer, targets, activations, grads, smooth):
        if method == "fem" and smooth:  # pgc's FEM ignores eigen_smooth: project its weighted activations
            th = activations.mean((2, 3), keepdims=True) + cam.k * activations.std((2, 3), keepdims=True)
            r = signed_projection((activations > th).mean((2, 3), keepdims=True) * activations)
        else:
            r = get_cam_image(input_tensor, target_layer, targets, activations, grads, smooth)
        r = np.asarray(r, np.float64)
        captured.append(r)
        if final_activation == "softmax":
            flat = r.reshape(len(r), -1)
            e = np.exp(flat - flat.max(1, keepdims=True))
            r = (e / e.sum(1, keepdims=True)).reshape(r.shape)
        elif final_activation == "none":
            r = r - r.min(axis=(1, 2), keepdims=True)
        return np.float32(r)

    cam.get_cam_image = patched
    if method == "random_cam":
        cam.get_cam_weights = lambda input_tensor, *a: random_weights(seed, *a[-1].shape[:2])
    patch = None
    if not align_corners:
        patch = torch.nn.UpsamplingBilinear2d
        torch.nn.UpsamplingBilinear2d = HalfPixelUpsample
    try:
        out = cam(input_tensor=nchw(x), targets=pgc_targets(score), eigen_smooth=eigen_smooth, aug_smooth=aug_smooth)
    finally:
        if patch is not None:
            torch.nn.UpsamplingBilinear2d = patch
        cam.activations_and_grads.release()
    if raw:
        assert len(captured) == 1
        return torch_resize(captured[0], x.shape[1:3])
    return out


def signed_projection(weighted):
    """pgc's get_2d_projection with jaxcam's sign: the SVD's sign is arbitrary; jaxcam takes v1 with
    sum(v1) >= 0, i.e. the projection P = X_c v1 that correlates positively with the centered channel sum
    X_c 1 (P . X_c 1 = s1^2 sum(v1)). Patched into every pgc module that projects (see `pgc_map`)."""
    projection = np.asarray(get_2d_projection(weighted), np.float64)
    channel_sum = np.nan_to_num(np.asarray(weighted, np.float64)).sum(1)
    centered = channel_sum - channel_sum.mean(axis=(1, 2), keepdims=True)
    sign = np.where((projection * centered).sum(axis=(1, 2)) < 0, -1.0, 1.0)
    return np.float32(projection * sign[:, None, None])


PROJECTING = ["base_cam", "eigen_cam", "eigen_grad_cam", "hirescam", "grad_cam_elementwise", "layer_cam"]


@pytest.fixture(autouse=True)
def _signed_projections(monkeypatch):
    for name in PROJECTING:
        module = importlib.import_module(f"pytorch_grad_cam.{name}")
        if hasattr(module, "get_2d_projection"):
            monkeypatch.setattr(module, "get_2d_projection", signed_projection)


def pgc_scale_smooth(method, tv, x, **kw):
    """aug_smooth="scale": flips x {0.9, 1, 1.1} image rescalings, each map brought back, mean, min-max."""
    size = x.shape[1:3]
    views = []
    for flip in (False, True):
        base = x[:, :, ::-1] if flip else x
        for factor in (0.9, 1.0, 1.1):
            scaled = tuple(max(1, round(s * factor)) for s in size)
            t = torch.nn.functional.interpolate(nchw(base), size=scaled, mode="bilinear", align_corners=False)
            img = t.numpy().transpose(0, 2, 3, 1) if scaled != size else base
            m = torch_resize(pgc_map(method, tv, img, **kw), size) if scaled != size else pgc_map(method, tv, img, **kw)
            views.append(m[:, :, ::-1] if flip else m)
    return minmax(np.mean(views, axis=0))


# ------------------------------------------------------------------ the cases

SHARED = [("score", "softmax"), ("score", "sigmoid"), ("final_activation", "softmax"), ("final_activation", "none"),
          ("eigen_smooth", True), ("aug_smooth", True), ("aug_smooth", "multiply"), ("aug_smooth", "scale"),
          ("normalize", False)]
SPECIFIC = {
    "score_cam": [("align_corners", False), ("chunk_size", 3)],
    "ablation_cam": [("chunk_size", 3)],
    "fem": [("k", 1.0), ("k", 2.0)],
    "kpca_cam": [("kernel", k) for k in ("rbf", "poly", "linear", "cosine", "sigmoid")] + [("gamma", 0.05)],
    "random_cam": [("seed", 5)],
    "ss_cam": [("seed", 3), ("std", 0.7), ("chunk_size", 3)],
    "is_cam": [("chunk_size", 3), ("num_samples", 3)],
    "smoothgrad_cam_pp": [("seed", 3), ("std", 0.6)],
}


def cases():
    out = []
    for method in PGC:
        names = {o.name for o in registry.get(method).options}
        for option, value in SHARED + SPECIFIC.get(method, []):
            if option in names:
                out.append(pytest.param(method, option, value, id=f"{method}-{option}={value}"))
    return out


def reference(method, option, value, tv, x):
    kw = {}
    if option == "score":
        kw["score"] = value
    elif option == "final_activation":
        kw["final_activation"] = value
    elif option == "normalize":
        kw["raw"] = True
    elif option == "eigen_smooth":
        kw["eigen_smooth"] = value
    elif option in ("k", "kernel", "gamma"):
        kw["ctor"] = {option: value}
    elif option == "align_corners":
        kw["align_corners"] = value
    elif option == "seed":
        kw["seed"] = value
    kw["layer"] = LAYER.get(method, "block2")
    name = PGC[method][0]
    if isinstance(name, type) and issubclass(name, TorchcamWeights):
        fixed = {"seed": name.seed if hasattr(name, "seed") else 0, "std": getattr(name, "std", 0),
                 "num_samples": FIXED[method]["num_samples"]}
        if option in fixed:
            fixed[option] = value
        kw.pop("seed", None)
        PGC[method] = (type(name.__name__, (name,), dict(fixed)), {})
    try:
        if option == "aug_smooth":
            if value == "scale":
                return pgc_scale_smooth(method, tv, x, layer=kw["layer"])
            return minmax(pgc_map(method, tv, x, aug_smooth=True, layer=kw["layer"]))
        return pgc_map(method, tv, x, **kw)
    finally:
        PGC[method] = (name, {})


@pytest.mark.parametrize("method,option,value", cases())
def test_option_value_matches_pgc(twins, method, option, value):
    model, tv, x = twins
    options = {**FIXED.get(method, {}), option: value}
    got = np.asarray(registry.get(method)(model, x, LAYER.get(method, "block2"), np.array(TARGETS), **options))
    expected = reference(method, option, value, tv, x)
    if option == "normalize":
        scale = np.abs(expected).max()
        assert scale > 0
        err = np.abs(got - expected).max() / scale
    else:
        span = expected.max(axis=(1, 2)) - expected.min(axis=(1, 2))
        assert (span > 0.5).all(), "the reference map is blank"
        err = np.abs(got - expected).max()
    print(f"MEASURED {method} {option}={value}: {err:.2e}")
    assert err < TOL, err


# ------------------------------------------------------------------ composite methods and the rest


def views_mean(fn, x, mode):
    """aug_smooth by hand: flips x {0.9, 1, 1.1} ("multiply": pixel values; "scale": torch resize), each view's
    map (fn) brought back onto x's pixels, mean, min-max."""
    size = x.shape[1:3]
    out = []
    for flip in (False, True):
        base = np.ascontiguousarray(x[:, :, ::-1] if flip else x)
        for factor in (0.9, 1.0, 1.1):
            if mode == "multiply":
                m = fn(base * np.float32(factor))
            else:
                scaled = tuple(max(1, round(s * factor)) for s in size)
                if scaled == tuple(size):
                    m = fn(base)
                else:
                    img = torch.nn.functional.interpolate(nchw(base), size=scaled, mode="bilinear",
                                                          align_corners=False).numpy().transpose(0, 2, 3, 1)
                    m = torch_resize(fn(np.ascontiguousarray(img)), size)
            out.append(m[:, :, ::-1] if flip else m)
    return minmax(np.mean(out, axis=0))


def compare(what, got, expected, raw=False, tol=TOL):
    got = np.asarray(got)
    if raw:
        err = np.abs(got - expected).max() / np.abs(expected).max()
    else:
        span = expected.max(axis=(1, 2)) - expected.min(axis=(1, 2))
        assert (span > 0.5).all(), f"{what}: the reference map is blank"
        err = np.abs(got - expected).max()
    print(f"MEASURED {what}: {err:.2e}")
    assert err < tol, (what, err)


RULE_CLASSES = {"grad_cam": "GradCAM", "hires_cam": "HiResCAM", "grad_cam_elementwise": "GradCAMElementWise",
                "grad_cam_pp": "GradCAMPlusPlus", "xgrad_cam": "XGradCAM", "layer_cam": "LayerCAM"}
FINER_CASES = ([("base", b) for b in RULE_CLASSES] + [("comparisons", (1, 2)), ("alpha", 0.3)]
               + [o for o in SHARED if o[0] != "score"])


@pytest.mark.parametrize("option,value", FINER_CASES, ids=[f"{o}={v}" for o, v in FINER_CASES])
def test_finer_cam_options_match_pgc(twins, option, value):
    """pgc's FinerCAM (base_method = the rule's class, comparison_categories = the ranks)."""
    model, tv, x = twins
    options = {"alpha": 0.7, option: value}
    base = options.get("base", "grad_cam")
    act = options.get("final_activation", "relu")

    def reference(images):
        finer = pytorch_grad_cam.FinerCAM(model=tv, target_layers=[tv.block2],
                                          base_method=getattr(pytorch_grad_cam, RULE_CLASSES[base]))
        captured = []
        inner = finer.base_cam.get_cam_image

        def patched(*args):
            r = np.asarray(inner(*args), np.float64)
            captured.append(r)
            return np.float32(activate(r, act))

        finer.base_cam.get_cam_image = patched
        try:
            out = finer(input_tensor=nchw(images), targets=None, alpha=options["alpha"], target_idx=TARGETS[0],
                        eigen_smooth=options.get("eigen_smooth", False),
                        comparison_categories=list(options.get("comparisons", (1, 2, 3))))
        finally:
            finer.base_cam.activations_and_grads.release()
        return torch_resize(captured[-1], images.shape[1:3]) if option == "normalize" else out

    aug = options.get("aug_smooth", False)
    expected = views_mean(reference, x, "multiply" if aug is True else aug) if aug else reference(x)
    got = jaxcam.finer_cam(model, x, layer="block2", targets=TARGETS[0], **options)
    compare(f"finer_cam {option}={value}", got, expected, raw=option == "normalize")


def activate(r, act):
    if act == "softmax":
        flat = r.reshape(len(r), -1)
        e = np.exp(flat - flat.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True)).reshape(r.shape)
    if act == "none":
        return r - r.min(axis=(1, 2), keepdims=True)
    return r


def test_refine_cam_base_matches_pgc(twins):
    model, tv, x = twins
    cam = pytorch_grad_cam.RefineCAM(model=tv, target_layers=[tv.block1, tv.block2], base_method=pytorch_grad_cam.HiResCAM)
    expected = cam(input_tensor=nchw(x), targets=[ClassifierOutputTarget(t) for t in TARGETS])
    for base in cam.base_cam_per_layer:
        base.activations_and_grads.release()
    got = jaxcam.refine_cam(model, x, layer=["block1", "block2"], targets=np.array(TARGETS), base="hires_cam")
    compare("refine_cam base=hires_cam", got, expected)


@pytest.mark.parametrize("options", [{"base": "hires_cam", "scales": [12, 18]}, {"num_scales": 2},
                                     {"smooth": False, "scales": [12, 18]}, {"chunk_size": 1000, "scales": [12, 18]}],
                         ids=["base", "num_scales", "smooth", "chunk_size"])
def test_sess_options_match_pgc(twins, options):
    model, tv, x = twins
    ctor = dict(options)
    base = ctor.pop("base", "grad_cam")
    ctor.pop("chunk_size", None)  # jaxcam's grouping of patches per call (1000: all in one call), not pgc's
    cam = pytorch_grad_cam.SESS(model=tv, target_layers=[tv.block2],
                                base_method=getattr(pytorch_grad_cam, RULE_CLASSES[base]), **ctor)
    expected = cam(input_tensor=nchw(x), targets=[ClassifierOutputTarget(t) for t in TARGETS])
    cam.base_cam.activations_and_grads.release()
    got = jaxcam.sess(model, x, layer="block2", targets=np.array(TARGETS), **options)
    compare(f"sess {options}", got, expected)


GRADIENT_CASES = [o for o in SHARED] + [("methods", (m,)) for m in RULE_CLASSES]


@pytest.mark.parametrize("option,value", GRADIENT_CASES, ids=[f"{o}={v}" for o, v in GRADIENT_CASES])
def test_gradient_cams_options_match_pgc(twins, option, value):
    """`gradient_cams` (all six rules in one pass) with one option set: each rule against pgc."""
    model, tv, x = twins
    got = jaxcam.gradient_cams(model, x, layer="block2", targets=np.array(TARGETS), **{option: value})
    names = list(value) if option == "methods" else list(RULE_CLASSES)
    assert sorted(got) == sorted(names)
    for name in names:
        expected = reference(name, option, value, tv, x) if option != "methods" else pgc_map(name, tv, x)
        compare(f"gradient_cams[{name}] {option}={value}", got[name], expected, raw=option == "normalize")


@pytest.mark.parametrize("score", ["logit", "softmax", "sigmoid"])
def test_affine_shortcut_ablation_matches_pgc(twins, score, monkeypatch):
    """At `head` (feeding only the global average pool and fc) ablation takes its affine shortcut
    (no head re-run) for logit and sigmoid scores; each score space against pgc's AblationCAM."""
    model, tv, x = twins
    ablation = importlib.import_module("jaxcam.methods.ablation")
    calls = []
    shortcut = ablation._affine_ablated_logits
    monkeypatch.setattr(ablation, "_affine_ablated_logits", lambda *a: calls.append(1) or shortcut(*a))
    got = jaxcam.ablation_cam(model, x, layer="head", targets=np.array(TARGETS), score=score, chunk_size=5)
    assert bool(calls) == (score != "softmax"), "the affine shortcut serves logit and sigmoid scores (softmax needs every logit)"
    compare(f"ablation_cam affine head score={score}", got, pgc_map("ablation_cam", tv, x, score=score, layer="head"))


@pytest.mark.parametrize("option,value", [("score", "softmax"), ("score", "sigmoid"), ("aug_smooth", True),
                                          ("aug_smooth", "multiply"), ("aug_smooth", "scale")])
def test_fullgrad_options_match_pgc(twins, option, value):
    model, tv, x = twins

    def reference(images, **call):
        with pytorch_grad_cam.FullGrad(model=tv, target_layers=[]) as cam:
            return cam(input_tensor=nchw(images), targets=pgc_targets(call.get("score", "logit")))

    if option == "aug_smooth":
        expected = views_mean(reference, x, "multiply" if value is True else value)
    else:
        expected = reference(x, score=value)
    got = jaxcam.fullgrad(model, x, targets=np.array(TARGETS), **{option: value})
    compare(f"fullgrad {option}={value}", got, expected)


# ------------------------------------------------------------------ coverage of the registry's options

HERE = "tests/methods/test_option_values_pgc.py"
BRUTE = "tests/methods/test_option_values.py"
DEFAULTS = {  # method -> the test of its default call against an independent reference
    "ablation_cam": "tests/methods/test_ablation.py::test_resnet18_layer3_ablation_cam_equals_brute_force",
    "cam": "tests/methods/test_families.py::test_cam_by_hand",
    "deep_feature_factorization": "tests/methods/test_dff_reference.py::test_dff_matches_pgc",
    "eigen_cam": "tests/methods/test_parity_pgc_families.py::test_eigen_methods_match",
    "eigen_grad_cam": "tests/methods/test_parity_pgc_families.py::test_eigen_methods_match",
    "fast_ablation_cam": f"{BRUTE}::test_fast_ablation_defaults_softmax_full_head",
    "fem": f"{HERE}::test_option_value_matches_pgc",
    "finer_cam": "tests/methods/test_parity_pgc_other_methods.py::test_finer_cam",
    "fullgrad": "tests/methods/test_parity_pgc_other_methods.py::test_fullgrad",
    "gradient_cams": "tests/methods/test_parity_pgc_families.py::test_gradient_methods_match",
    "guided_backprop": "tests/methods/test_parity_pgc_families.py::test_guided_backprop_matches",
    "guided_grad_cam": "tests/methods/test_parity_pgc_families.py::test_guided_grad_cam_matches",
    "is_cam": "tests/methods/test_torchcam_methods.py::test_is_cam_matches_torchcam",
    "kpca_cam": "tests/methods/test_parity_pgc_other_methods.py::test_kpca_cam",
    "legrad": "tests/methods/test_legrad.py::test_default_call_matches_torchcam",
    "random_cam": "tests/methods/test_random_reference.py::test_random_cam_matches_numpy",
    "refine_cam": "tests/methods/test_parity_pgc_other_methods.py::test_refine_cam",
    "score_cam": "tests/methods/test_parity_pgc_families.py::test_score_cam_matches",
    "seg_eigen_cam": "tests/methods/test_parity_pgc_other_methods.py::test_seg_eigen_cam",
    "sess": "tests/methods/test_parity_pgc_other_methods.py::test_sess",
    "shapley_cam": "tests/methods/test_parity_pgc_other_methods.py::test_shapley_cam_rest_target",
    "smoothgrad_cam_pp": "tests/methods/test_torchcam_methods.py::test_smoothgrad_cam_pp_matches_definition",
    "spatial_ablation_cam": f"{BRUTE}::test_option_values_match_brute_force",
    "ss_cam": "tests/methods/test_torchcam_methods.py::test_ss_cam_matches_torchcam",
}
for _m in RULE_CLASSES:
    DEFAULTS[_m] = "tests/methods/test_parity_pgc_families.py::test_single_gradient_methods_match"

ANY = "*"  # an option without a list of choices: checked at (at least) one non-default value


def coverage():
    """{(method, option, value or ANY): test} for every non-default value checked somewhere."""
    table = {}
    for param in cases():
        method, option, value = param.values
        key = value if registry.get(method).option(option).choices else ANY
        table[(method, option, key)] = f"{HERE}::test_option_value_matches_pgc[{param.id}]"
    for option, value in FINER_CASES:
        key = value if registry.get("finer_cam").option(option).choices else ANY
        table[("finer_cam", option, key)] = f"{HERE}::test_finer_cam_options_match_pgc"
    for option, value in GRADIENT_CASES:  # methods: each rule alone
        table[("gradient_cams", option, ANY if option == "methods" else value)] = \
            f"{HERE}::test_gradient_cams_options_match_pgc"
    for option, value in [("score", "softmax"), ("score", "sigmoid"), ("aug_smooth", True),
                          ("aug_smooth", "multiply"), ("aug_smooth", "scale")]:
        table[("fullgrad", option, value)] = f"{HERE}::test_fullgrad_options_match_pgc"
    for value in ("softmax", "sigmoid"):
        table[("legrad", "score", value)] = f"tests/methods/test_legrad.py::test_scores_and_raw_maps_match_torchcam[{value}]"
    table[("legrad", "normalize", False)] = "tests/methods/test_legrad.py::test_scores_and_raw_maps_match_torchcam"
    for method in ("guided_backprop", "guided_grad_cam"):
        for value in ("softmax", "sigmoid"):
            table[(method, "score", value)] = \
                f"tests/methods/test_parity_pgc_families.py::test_guided_scores_match[{value}]"
    table[("refine_cam", "base", ANY)] = f"{HERE}::test_refine_cam_base_matches_pgc"
    for option in ("base", "num_scales", "chunk_size"):
        table[("sess", option, ANY)] = f"{HERE}::test_sess_options_match_pgc"
    table[("fullgrad", "normalize", False)] = "tests/methods/test_every_rank.py::test_fullgrad_by_hand_on_any_rank"
    table[("sess", "smooth", False)] = f"{HERE}::test_sess_options_match_pgc"
    table[("sess", "pool", "max")] = "tests/methods/test_parity_pgc_other_methods.py::test_sess"
    table[("ablation_cam", "score", "sigmoid")] = f"{HERE}::test_affine_shortcut_ablation_matches_pgc"  # + block2
    table[("ablation_cam", "ablation_value", ANY)] = f"{BRUTE}::test_option_values_match_brute_force"
    for method in ("fast_ablation_cam", "spatial_ablation_cam"):
        for option, value in [("score", "softmax"), ("score", "sigmoid"), ("score", "logit"),
                              ("final_activation", "softmax"), ("final_activation", "none"),
                              ("ablation_value", ANY), ("chunk_size", ANY), ("window", ANY), ("stride", ANY)]:
            table[(method, option, value)] = f"{BRUTE}::test_option_values_match_brute_force"
        table[(method, "normalize", False)] = f"{BRUTE}::test_normalize_false_is_the_raw_map_resized"
        for value in (True, "multiply", "scale"):
            table[(method, "aug_smooth", value)] = f"{BRUTE}::test_aug_smooth_modes_match_brute_force"
    table[("fem", "k", ANY)] = f"{HERE}::test_option_value_matches_pgc[fem-k=1.0]"
    for option in ("iterations", "seed"):
        table[("deep_feature_factorization", option, ANY)] = \
            "tests/methods/test_dff_reference.py::test_dff_iterations_and_seed_match_a_numpy_solver"
    table[("deep_feature_factorization", "n_components", ANY)] = "tests/methods/test_dff_reference.py::test_dff_matches_pgc"
    table[("smoothgrad_cam_pp", "num_samples", ANY)] = \
        "tests/methods/test_torchcam_methods.py::test_smoothgrad_cam_pp_matches_definition"
    table[("ss_cam", "num_samples", ANY)] = "tests/methods/test_torchcam_methods.py::test_ss_cam_matches_torchcam"
    table[("grad_cam", "reshape_transform", ANY)] = \
        "tests/methods/test_families.py::test_token_grad_cam_matches_perturbation_gradient"
    table[("ablation_cam", "reshape_transform", ANY)] = \
        "tests/methods/test_families.py::test_token_ablation_writes_back_into_tokens"
    for method in registry.names():
        if method not in ("grad_cam", "ablation_cam") and "reshape_transform" in {o.name for o in registry.get(method).options}:
            table[(method, "reshape_transform", ANY)] = \
                "tests/methods/test_reshape_transform.py::test_reshape_transform_equals_the_grid_model"
    return table


# Option values with no value test yet (each is reported by name; the list may only shrink). Empty since
# 2026-12-05 (reshape_transform of every method: tests/methods/test_reshape_transform.py).
GAPS = set()


def test_every_registry_option_value_is_covered():
    """Every value of every option of every registered method is the default (checked by DEFAULTS[method]) or
    has a value test listed in `coverage()`; new options or values fail here until a test is listed."""
    import os

    table = coverage()
    missing, root = [], os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for name in registry.names():
        method = registry.get(name)
        assert name in DEFAULTS, f"{name}: no test of its default call listed"
        for opt in method.options:
            values = [v for v in opt.choices if v is not opt.default and not (type(v) is type(opt.default) and v == opt.default)] \
                if opt.choices else [ANY]
            for value in values:
                if (name, opt.name, value) not in table and (name, opt.name, value) not in GAPS:
                    missing.append((name, opt.name, value))
    assert not missing, f"option values with no value test: {missing}"
    stale = [g for g in GAPS if g in table]
    assert not stale, f"covered now, remove from GAPS: {stale}"
    for test in set(table.values()) | set(DEFAULTS.values()):  # every listed test exists
        path, func = test.split("::")
        func = func.split("[")[0]
        with open(os.path.join(root, path)) as f:
            assert f"def {func}(" in f.read(), test
    print(f"{len(table)} option values covered, {len(GAPS)} gaps: {sorted(GAPS, key=str)}")
