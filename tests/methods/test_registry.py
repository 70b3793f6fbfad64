"""The method registry: lookups, options that match the functions, validation, the chunk_size rename."""
import inspect
import warnings

import jax
import numpy as np
import pytest

import jaxcam
from jaxcam.methods import registry
from jaxcam.methods.registry import REGISTRY, Method, Option, get, names

SHARED = {"model", "x", "layer", "targets"}


OWN = ("ablation_cam", "spatial_ablation_cam", "fast_ablation_cam", "score_cam", "grad_cam", "hires_cam",
       "grad_cam_elementwise", "grad_cam_pp", "xgrad_cam", "layer_cam", "gradient_cams", "eigen_cam",
       "eigen_grad_cam", "cam", "guided_backprop", "guided_grad_cam")


def test_every_method_is_registered():
    exported = set(jaxcam.methods.__all__)
    assert set(OWN) <= set(names())
    for m in REGISTRY.values():  # every registered function is exported by jaxcam.methods
        assert m.fn.__name__ in exported or m.name in exported, m.name


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_options_match_the_function_signature(name):
    m = REGISTRY[name]
    params = inspect.signature(m.fn).parameters
    keywords = {p for p, v in params.items() if v.kind == v.KEYWORD_ONLY} - {"batch_size"}
    assert {o.name for o in m.options} <= keywords
    if name in OWN:  # every keyword option of these is declared (other files: their authors' tests)
        assert keywords - SHARED <= {o.name for o in m.options} | {"ablation_value"}
    for o in m.options:  # defaults documented in the registry are the function's
        default = params[o.name].default
        assert o.default == default or (o.name == "chunk_size" and default is None), (name, o.name)
        assert o.doc
    assert ("layer" in params) == m.takes_layer


@pytest.mark.parametrize("query, expected", [
    ("GradCAMPlusPlus", "grad_cam_pp"), ("gradcamplusplus", "grad_cam_pp"), ("ablation", "ablation_cam"),
    ("fast_ablation", "fast_ablation_cam"), ("spatial", "spatial_ablation_cam"), ("AblationCAM", "ablation_cam"),
    ("ScoreCAM", "score_cam"), ("grad-cam", "grad_cam"), ("layer", "layer_cam"), ("EigenGradCAM", "eigen_grad_cam"),
])
def test_lookup_by_alias_and_pgc_name(query, expected):
    assert get(query).name == expected


def test_unknown_name_names_the_closest():
    with pytest.raises(ValueError, match="Did you mean grad_cam"):
        get("gradcamm")


def test_filters():
    assert names(family="ablation") == ["ablation_cam", "fast_ablation_cam", "spatial_ablation_cam"]
    assert names(output="attribution") == ["guided_backprop", "guided_grad_cam"]
    assert "gradient_cams" in names(output="maps")


def test_duplicate_alias_is_refused():
    with pytest.raises(ValueError, match="already taken"):
        registry.register(Method("other", lambda *a: None, family="random", aliases=("ablation",)))
    assert "other" not in REGISTRY


def test_option_checks():
    assert Option("k", 1, "d", positive=True).check(3) == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="k must be a positive int"):
            Option("k", 1, "d", positive=True).check(bad)
    with pytest.raises(ValueError, match="score must be one of"):
        get("grad_cam").check(score="probability")
    with pytest.raises(ValueError, match="has no option window"):
        get("grad_cam").check(window=2)
    assert get("fast_ablation").check(window=2, chunk_size=4) == {"window": 2, "chunk_size": 4}


def test_methods_reject_bad_options_with_the_registry_message():
    model = jaxcam.models.resnet18(num_classes=3)
    x = np.zeros((1, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        jaxcam.ablation_cam(model, x, chunk_size=0)
    with pytest.raises(ValueError, match="window must be a positive int"):
        jaxcam.fast_ablation_cam(model, x, window=0)
    with pytest.raises(ValueError, match="score must be one of"):
        jaxcam.score_cam(model, x, score="nope")


def test_batch_size_still_works_with_a_deprecation_warning():
    model = jaxcam.models.resnet18(num_classes=3)
    x = jax.random.normal(jax.random.key(0), (1, 32, 32, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = jaxcam.score_cam(model, x, layer="layer3", chunk_size=128)  # layer4 is 1x1 at 32 px: blank
    with pytest.warns(DeprecationWarning, match="chunk_size"):
        old = jaxcam.score_cam(model, x, layer="layer3", batch_size=128)
    np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
    with pytest.warns(DeprecationWarning):
        jaxcam.ablation_cam(model, x, layer="layer4", batch_size=256)
    with pytest.raises(TypeError, match="pass chunk_size only"):
        jaxcam.ablation_cam(model, x, layer="layer4", batch_size=256, chunk_size=256)
