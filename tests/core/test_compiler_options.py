"""Channel ablation is compiled with XLA:CPU compiler options at top level, and plainly inside traces."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcam
from jaxcam._src import runner
from jaxcam.methods import ablation


@pytest.fixture(scope="module")
def model_and_x():
    model = jaxcam.models.resnet18(num_classes=10)
    x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
    return model, x


def test_top_level_uses_options_and_traces_fall_back(monkeypatch):
    from jaxcam._src import compile as compile_lib

    core = ablation.ablation_cam_map
    assert core.cpu_compiler_options
    if jax.default_backend() == "cpu":
        monkeypatch.delenv("XLA_FLAGS", raising=False)
        monkeypatch.delenv("JAXCAM_CPU_TUNING", raising=False)
        assert runner._run_jit.options(core.cpu_compiler_options) == {
            **compile_lib.CPU_TUNING, **core.cpu_compiler_options}
    calls = []
    f = compile_lib.jit(lambda v: v * 2, extra_options={"xla_cpu_use_fusion_emitters": False})
    monkeypatch.setattr(f, "plain", lambda *a: calls.append("plain") or a[0] * 2)
    assert float(f(1.0)) == 2.0 and calls == []  # top level: the tuned jit
    assert float(jax.jit(lambda v: f(v))(1.0)) == 2.0
    assert calls == ["plain"] or jax.default_backend() != "cpu"  # options are refused on nested jits


def test_same_maps_at_top_level_under_jit_and_vmap(model_and_x):
    model, x = model_and_x
    targets = jnp.array([1, 3], jnp.int32)
    top = jaxcam.ablation_cam(model, x, layer="layer4", targets=targets)
    jitted = jax.jit(lambda x: jaxcam.ablation_cam(model, x, layer="layer4", targets=targets))(x)
    mapped = jax.vmap(lambda xi, t: jaxcam.ablation_cam(model, xi[None], layer="layer4", targets=t[None])[0])(x, targets)
    np.testing.assert_allclose(np.asarray(top), np.asarray(jitted), atol=2e-4)
    np.testing.assert_allclose(np.asarray(top), np.asarray(mapped), atol=2e-4)
    # closed form at layer4 of a GAP + fc head: logit drop of channel k = fc[k, c] * mean_ij A_k
    a = jaxcam.Split(model, ("layer4",)).features(x)
    logits = model(x)
    y = logits[jnp.arange(2), targets]
    kernel = model.variables["params"]["fc"]["kernel"][:, targets].T  # (N, C)
    weights = kernel * a.mean(axis=(1, 2)) / y[:, None]
    raw = jax.nn.relu(jnp.einsum("nc,nhwc->nhw", weights, a))
    lo, hi = raw.min(axis=(1, 2), keepdims=True), raw.max(axis=(1, 2), keepdims=True)
    expect = jax.image.resize((raw - lo) / (hi - lo), (2, 64, 64), "bilinear")
    expect = (expect - expect.min(axis=(1, 2), keepdims=True)) / (expect.max(axis=(1, 2), keepdims=True) - expect.min(axis=(1, 2), keepdims=True))
    np.testing.assert_allclose(np.asarray(top), np.asarray(expect), atol=1e-4)
