"""LeGrad against torchcam 0.5.0's ``LeGrad`` on the same tiny torchvision ViT (test_transformers' `tiny_vit`:
32 px, patch 8, 2 blocks, width 64, 4 heads; random weights converted by jaxcam's torch-weight loader).

torchcam's maps are (N, h, w) on the patch grid; they are finished here with numpy/torch only
(test_torchcam_methods' `finish`: ReLU, min-max, torch's half-pixel bilinear resize, min-max; or, for
``normalize=False``, torch's resize alone). Scores other than the logit: torchcam's ``score_projection``
is given the softmax / sigmoid of its default projection (the final norm and head on the mean token).
"""
import numpy as np
import pytest
import torch
from torchcam.methods import LeGrad

import jaxcam
from tests.methods.test_torchcam_methods import finish
from tests.methods.test_transformers import tiny_vit  # noqa: F401 (fixture)
from tests.torch_utils import nhwc_to_torch

TARGETS = [3, 7]
TOL = 3e-6  # measured 3.0e-7 (min-maxed maps at 32 px, both blocks)
RAW_TOL = 1.5e-8  # measured 8.1e-10 (softmax) and 1.4e-9 (sigmoid) on raw maps of scale 1.7e-3 and 6.7e-3


def torchcam_legrad(tv_model, images, blocks, normalized, projection=None):
    with LeGrad(tv_model, [tv_model.encoder.layers[i] for i in blocks], score_projection=projection) as extractor:
        scores = tv_model(nhwc_to_torch(images))
        return extractor(TARGETS, scores, normalized=normalized)[0].detach().numpy()


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(1).randn(2, 32, 32, 3).astype(np.float32)


def test_default_call_matches_torchcam(tiny_vit, images):  # noqa: F811
    tv_model, model, *_ = tiny_vit
    got = np.asarray(jaxcam.legrad(model, images, targets=TARGETS))  # default: the last four blocks (here both)
    expected = finish(torchcam_legrad(tv_model, images, [0, 1], normalized=True))
    err = np.abs(got - expected).max()
    print(f"LeGrad vs torchcam: max-abs {err:.1e}")
    assert got.shape == (2, 32, 32) and np.ptp(expected) > 0.5 and err < TOL


@pytest.mark.parametrize("score", ["softmax", "sigmoid"])
def test_scores_and_raw_maps_match_torchcam(tiny_vit, images, score):  # noqa: F811
    tv_model, model, *_ = tiny_vit
    space = {"softmax": lambda z: z.softmax(-1), "sigmoid": torch.sigmoid}[score]

    def projection(tokens):
        return space(tv_model.heads(tv_model.encoder.ln(tokens.mean(dim=1))))

    got = np.asarray(jaxcam.legrad(model, images, layer="encoder/layers/encoder_layer_1", targets=TARGETS,
                                   score=score, normalize=False))
    raw = torch.from_numpy(torchcam_legrad(tv_model, images, [1], normalized=False, projection=projection))
    expected = torch.nn.functional.interpolate(raw[:, None], (32, 32), mode="bilinear", align_corners=False)[:, 0]
    expected = expected.numpy()
    err, scale = np.abs(got - expected).max(), np.abs(expected).max()
    print(f"LeGrad {score} raw vs torchcam: max-abs {err:.1e} at scale {scale:.1e}")
    assert scale > 1e-4 and err < RAW_TOL


def test_refusals_name_what_to_pass(tiny_vit, images):  # noqa: F811
    _, model, *_ = tiny_vit
    with pytest.raises(ValueError, match="legrad takes encoder blocks as layer.*encoder_layer_1$"):
        jaxcam.legrad(model, images, layer="encoder/layers/encoder_layer_1/ln_1")
    swin = jaxcam.models.swin_transformer(patch_size=(4, 4), embed_dim=16, depths=(2, 2), num_heads=(2, 4),
                                          window_size=(2, 2), num_classes=10, input_size=32)
    with pytest.raises(ValueError, match="legrad needs a vision transformer .* for CNNs and Swin use"):
        jaxcam.legrad(swin, images)
    assert "legrad" not in jaxcam.methods.registry.names(any_model=True)  # 'all' runs on any model: not LeGrad
