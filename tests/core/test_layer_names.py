"""One layer resolver: every zoo model lists its layers at its own input size (no shape given), ViT
and Swin included, and an unknown name gets the closest valid ones, the same way everywhere."""
import pytest

import jaxcam
from jaxcam._src.split import LayerError, check_layer
from jaxcam.models import loading


@pytest.mark.parametrize("name", sorted(loading.REGISTRY))
def test_list_layers_needs_no_shape(name):
    model = loading.abstract(name)  # shapes only: nothing read, nothing computed
    layers = jaxcam.list_layers(model)
    assert layers and model.info.default_layer in layers
    assert check_layer(model, model.info.default_layer) == tuple(model.info.default_layer.split("/"))


def test_a_loaded_model_too():
    model = jaxcam.models.load("resnet20", weights=None)
    assert jaxcam.list_layers(model) == jaxcam.list_layers(model, (1, 32, 32, 3))


def test_unknown_layer_names_the_closest():
    model = loading.abstract("swin_t")
    with pytest.raises(LayerError, match=r"unknown layer 'features/7/9' for swin_t \(did you mean 'features/7/"):
        check_layer(model, "features/7/9")
