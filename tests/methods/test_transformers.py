"""Vision transformers: jaxcam's ViT and Swin against torchvision 0.29.1 and pytorch-grad-cam 1.5.7.

Full size (ViT-B/16, Swin-T, 224 px, one forward each): torchvision's random init with a randomized
classifier (torchvision zero-initializes the ViT head), converted: logits agree to 1e-4 of their scale.

Tiny configurations of the same code (ViT: 32 px, patch 8, 2 layers, width 64; Swin: 32 px, patch 4,
window 2, depths (2, 2): shifted windows in both stages) on identical weights: Grad-CAM, Grad-CAM++,
Score-CAM, Ablation-CAM and Eigen-CAM at the default layer (the last block's first LayerNorm) equal
pytorch-grad-cam's with the reshape transform it needs for torchvision's models (ViT: drop the class
token, tokens to a grid; Swin: NHWC -> NCHW). jaxcam needs no argument: the zoo model declares it.

Ablation-CAM: pytorch-grad-cam's ViT ablation layer sets channel k of EVERY token, class token
included, to min(activations) - 1e7 (re-evaluated per ablated row, so the value drifts per channel).
jaxcam ablates channel k of the grid (the class token is not part of the map and keeps its value)
to 0, as Ablation-CAM's paper does. The reference uses pytorch-grad-cam's AblationCAM with an
ablation layer of those semantics (`GridAblation`), so the comparison checks everything else.
"""
import jax
import numpy as np
import pytest
import pytorch_grad_cam
import torch
from pytorch_grad_cam.ablation_layer import AblationLayerVit
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torchvision.models import swin_t, vit_b_16
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

import jaxcam
from tests.methods.test_parity_pgc_families import deterministic_svd_sign, report  # noqa: F401 (autouse fixture)
from tests.torch_utils import nhwc_to_torch

TOL = 1e-5  # measured 4.2e-7 to 2.6e-6 (GradCAM, GradCAM++, EigenCAM, ScoreCAM on the tiny ViT and Swin)
ABLATION_TOL = 2e-4  # measured 2.4e-5 (ViT) and 2.4e-5 (Swin)
TARGETS = [3, 7]
VIT = dict(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10)
SWIN = dict(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[2, 2], num_classes=10)


def randomize(model: torch.nn.Module, head: torch.nn.Linear, seed: int = 0) -> torch.nn.Module:
    """A classifier with logits of order 1 (torchvision's ViT head starts at zero, Swin's at std 0.02)
    and non-trivial LayerNorms (at init they are the identity: that would hide conversion bugs, and
    each token's channels would sum to 0, leaving Eigen-CAM's sign to rounding)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) / head.in_features ** 0.5)
        head.bias.copy_(0.1 * torch.randn(head.bias.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    return model.eval()


def vit_grid(tokens, side):
    """pytorch-grad-cam's ViT reshape transform: drop the class token, (N, h*w, C) -> (N, C, h, w)."""
    return tokens[:, 1:, :].reshape(tokens.size(0), side, side, tokens.size(2)).permute(0, 3, 1, 2)


class GridAblation(AblationLayerVit):
    """pytorch-grad-cam's ViT ablation layer with jaxcam's semantics: channel k of the grid tokens set
    to 0; the first `skip` tokens (the class token) keep their values."""

    def __init__(self, skip: int):
        super().__init__()
        self.skip = skip

    def __call__(self, x):
        out = self.activations
        for i in range(out.size(0)):
            out[i].view(-1, out.size(-1))[self.skip:, self.indices[i]] = 0
        return out


def pgc(name, model, layer, images, transform, **kw):
    with getattr(pytorch_grad_cam, name)(model=model, target_layers=[layer], reshape_transform=transform, **kw) as cam:
        if name == "ScoreCAM":
            cam.batch_size = 64
        return cam(input_tensor=nhwc_to_torch(images), targets=[ClassifierOutputTarget(t) for t in TARGETS])


def logits_agree(tv_model, model, x):
    with torch.no_grad():
        expected = tv_model(nhwc_to_torch(x)).numpy()
    got = np.asarray(jax.jit(lambda m, x: m(x))(model, x))  # compiled: far faster than op by op
    scale = np.abs(expected).max()
    err = np.abs(got - expected).max() / scale
    print(f"{model.info.name}: logits max-abs {err:.1e} of their scale {scale:.2f}")
    assert scale > 0.1 and err < 1e-4, (err, scale)


@pytest.mark.parametrize("which", ["vit_b_16", "swin_t"])
def test_full_size_logits_equal_torchvision(which):
    torch.manual_seed(0)
    tv_model = (vit_b_16 if which == "vit_b_16" else swin_t)().eval()
    randomize(tv_model, tv_model.heads.head if which == "vit_b_16" else tv_model.head)
    model = getattr(jaxcam.models, which)(weights=tv_model.state_dict())
    assert model.info.default_layer == {"vit_b_16": "encoder/layers/encoder_layer_11/ln_1",
                                        "swin_t": "features/7/1/norm1"}[which]
    x = np.random.RandomState(0).randn(1, 224, 224, 3).astype(np.float32)
    logits_agree(tv_model, model, x)


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    tv_model = VisionTransformer(**VIT).eval()
    randomize(tv_model, tv_model.heads.head)
    with torch.no_grad():
        tv_model.class_token.normal_()
    model = jaxcam.models.vision_transformer(**VIT, weights=tv_model.state_dict())
    side = VIT["image_size"] // VIT["patch_size"]
    return tv_model, model, tv_model.encoder.layers[-1].ln_1, lambda t: vit_grid(t, side), 1


@pytest.fixture(scope="module")
def tiny_swin():
    torch.manual_seed(0)
    tv_model = SwinTransformer(**SWIN, stochastic_depth_prob=0.0).eval()
    randomize(tv_model, tv_model.head)
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in SWIN.items()}
    model = jaxcam.models.swin_transformer(**cfg, input_size=32, weights=tv_model.state_dict())
    return tv_model, model, tv_model.features[-1][-1].norm1, lambda t: t.permute(0, 3, 1, 2), 0


@pytest.fixture(params=["tiny_vit", "tiny_swin"])
def case(request):
    tv_model, model, layer, transform, skip = request.getfixturevalue(request.param)
    size = model.info.input_size
    images = np.random.RandomState(1).randn(2, size, size, 3).astype(np.float32)
    return tv_model, model, layer, transform, skip, images


def test_methods_equal_pytorch_grad_cam(case):
    tv_model, model, layer, transform, skip, images = case
    name = model.info.name  # (logits: checked at full size; a separate compile here would cost seconds)
    grads = jaxcam.gradient_cams(model, images, targets=TARGETS, methods=("grad_cam", "grad_cam_pp"))
    report(f"{name} GradCAM", grads["grad_cam"], pgc("GradCAM", tv_model, layer, images, transform), TOL)
    report(f"{name} GradCAMPlusPlus", grads["grad_cam_pp"],
           pgc("GradCAMPlusPlus", tv_model, layer, images, transform), TOL)
    report(f"{name} EigenCAM", jaxcam.eigen_cam(model, images), pgc("EigenCAM", tv_model, layer, images, transform),
           TOL)
    report(f"{name} ScoreCAM", jaxcam.score_cam(model, images, targets=TARGETS),
           pgc("ScoreCAM", tv_model, layer, images, transform), TOL)
    report(f"{name} AblationCAM", jaxcam.ablation_cam(model, images, targets=TARGETS),
           pgc("AblationCAM", tv_model, layer, images, transform, ablation_layer=GridAblation(skip)), ABLATION_TOL)


def test_grid_round_trip_keeps_class_token(tiny_vit):
    """The head with the unchanged grid gives the model's logits; only grid tokens are replaced."""
    _, model, _, _, _ = tiny_vit
    x = np.random.RandomState(2).randn(2, 32, 32, 3).astype(np.float32)
    split = jaxcam.Split(model, tuple(model.info.default_layer.split("/")))

    @jax.jit
    def run(x):
        grid = split.features(x)
        return grid, split.layer_output(x), split.head(x, grid), model(x)

    grid, tokens, head, logits = map(np.asarray, run(x))
    assert grid.shape == (2, 4, 4, 64)
    np.testing.assert_array_equal(grid, tokens[:, 1:].reshape(2, 4, 4, 64))
    np.testing.assert_allclose(head, logits, rtol=1e-6, atol=1e-6)


def test_explain_and_layer_errors(tiny_vit):
    _, model, _, _, _ = tiny_vit
    images = np.random.RandomState(3).randint(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    out = jaxcam.explain("gradcam", model, images, batch_size=2)
    maps = np.asarray(out.maps)
    assert maps.shape == (3, 32, 32) and (maps.max(axis=(1, 2)) - maps.min(axis=(1, 2)) > 0.5).all()
    with pytest.raises(ValueError, match="encoder/layers/encoder_layer_1/ln_1") as err:
        jaxcam.grad_cam(model, model.preprocess(images), layer="blocks/11/norm1")
    assert "unknown layer 'blocks/11/norm1'" in str(err.value)
