"""Every registry method on every model kind equals the same network as a Flax Linen model, by value.

One small network (stem conv -> tanh -> `features` (conv + ReLU) -> global average pool -> Dense(3)) is
built as Flax Linen, Flax NNX, Equinox, Keras 3 (JAX backend) and plain functions
(`jaxcam.Model.from_functions`), with every array COPIED from the Linen one, on 1-D (N, L, C), 2-D
(N, H, W, C) and 3-D (N, D, H, W, C) inputs. First the kinds' logits must equal Linen's (the weights were
copied right); then every registry method defined on that kind and rank must give Linen's map.

Why equality with Linen is a value test: the Linen maps of this network are checked against independent
references on 1-D and 3-D inputs in tests/methods/test_every_rank.py (closed forms under the GAP + FC head,
brute-force numpy loops, FullGrad by hand, the same network laid on a 2-D grid for the methods without a
short closed form) and on 2-D inputs against pytorch-grad-cam / torchcam (tests/methods/test_parity_*.py,
test_torchcam_methods.py). The method code is the same for every kind; what differs is the split
mechanism (how a kind hands out the layer's activations and re-runs the head on new ones), so a kind
whose maps equal Linen's carries those checks: the cells of docs/every_model.md marked `V` by this file.

Not run (refused, as docs/every_model.md lists): `sess` on 1-D / 3-D, `cam` on plain functions (no
classifier weights), `fullgrad` on Equinox / Keras / plain functions (no bias layers exposed), `legrad`
(jaxcam's ViT only). The refusals are checked to raise here.

Cost (issue 27): tiny inputs, the Linen maps computed once per rank (module-scoped), every method of one
(kind, rank) in one test, and on Keras 1-D / 2-D and NNX 1-D / 3-D the 17 methods that
tests/core/test_kinds_by_value.py checks there against closed forms and brute-force loops are not run again.
`jaxcam.list_layers` is checked on every kind, also after an inner layer was explained (a Keras regression).
"""
import os
import sys

if "keras" not in sys.modules:
    os.environ.setdefault("KERAS_BACKEND", "jax")

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

import jaxcam  # noqa: E402
import jaxcam.equinox  # noqa: E402
import jaxcam.keras  # noqa: E402
import jaxcam.nnx  # noqa: E402
from jaxcam.methods import registry  # noqa: E402
from tests.core.test_kinds_by_value import GRADIENT_RULES, OTHERS, NNXGapNet  # noqa: E402
from tests.methods.test_every_rank import GapNet  # noqa: E402  (the network: stem conv, tanh, features conv + ReLU, GAP, Dense)

# kernel, input shape, input seed (chosen so that no image's map is blank for any method: a blank map on both
# sides would compare nothing)
RANKS = {"1d": ((3,), (2, 10, 2), 6), "2d": ((3, 3), (2, 8, 9, 3), 2), "3d": ((3, 3, 3), (2, 3, 5, 4, 1), 3)}
KINDS = ("nnx", "equinox", "keras", "functions")
LOGIT_TOL = 1e-5
# maps in [0, 1]; most are bit-identical to Linen's (error 0.0), the rest measured (worst of the 12 cases):
TOL = 1e-6  # measured 3.0e-7 (ablation_cam), 1.2e-7 (score_cam, ss_cam), 8.9e-8 (is_cam)
LOCATION_TOL = 3e-5  # spatial_ablation_cam: measured 7.2e-6 (3-D); (y - y_loc) / y of close logits, min-maxed

OPTIONS = {"random_cam": {"seed": 1}, "ss_cam": {"num_samples": 3}, "is_cam": {"num_samples": 3},
           "smoothgrad_cam_pp": {"num_samples": 3}, "deep_feature_factorization": {"n_components": 2, "iterations": 20},
           "sess": {"num_scales": 2}, "refine_cam": {"layer": ["stem", "features"]},
           "fullgrad": {"layer": None}, "guided_backprop": {"layer": None}}
SINGLE_LAYER = {"refine_cam": {"layer": "features"}}  # plain functions expose one layer


def refused(kind, rank):
    """{method: why} of the methods not defined on this kind and rank."""
    out = {"legrad": "jaxcam's ViT only"}
    if rank != "2d":
        out["sess"] = "images only"
    if kind == "functions":
        out["cam"] = "no classifier weights"
    if kind in ("equinox", "keras", "functions"):
        out["fullgrad"] = "no bias layers exposed"
    return out


# (kind, rank)s whose closed-form / brute-force methods are value-tested directly in tests/core/test_kinds_by_value.py:
# skipped here (issue 27: the suite's cost); every other method of those cells runs here
BY_VALUE = {("keras", "1d"), ("keras", "2d"), ("nnx", "1d"), ("nnx", "3d")}
BY_VALUE_METHODS = GRADIENT_RULES + OTHERS + ("ablation_cam", "spatial_ablation_cam", "fast_ablation_cam", "score_cam")


def methods(kind, rank):
    skip = BY_VALUE_METHODS if (kind, rank) in BY_VALUE else ()
    return [m for m in registry.names() if m not in refused(kind, rank) and m not in skip]


def options(kind, name):
    opts = dict(OPTIONS.get(name, {}))
    if kind == "functions":
        opts.update(SINGLE_LAYER.get(name, {}))
    opts.setdefault("layer", "features")
    return opts


def run(model, x, name, opts):
    out = registry.get(name)(model, x, **opts)
    return [np.asarray(v) for v in jax.tree_util.tree_leaves(out)]


# ------------------------------------------------------------------ the network, five ways


def _linen(kernel, x):
    variables = GapNet(kernel).init(jax.random.key(len(kernel)), x)
    # non-zero biases (Linen starts them at zero), so a bias copied wrong shows in the logits
    variables = jax.tree_util.tree_map_with_path(
        lambda path, v: 0.3 * jax.random.normal(jax.random.key(len(path)), v.shape) if path[-1].key == "bias" else v,
        variables)
    return jaxcam.Model(GapNet(kernel), variables, jaxcam.ModelInfo(classifier="fc"))


def _arrays(linen):
    p = linen.variables["params"]
    return {k: (np.asarray(v["kernel"]), np.asarray(v["bias"]))
            for k, v in (("stem", p["stem"]), ("conv", p["features"]["conv"]), ("fc", p["fc"]))}


def _nnx(kernel, channels, arrays):
    net = NNXGapNet(kernel, channels, nnx.Rngs(0))
    for layer, name in ((net.stem, "stem"), (net.features.conv, "conv"), (net.fc, "fc")):
        layer.kernel[...] = jnp.asarray(arrays[name][0])
        layer.bias[...] = jnp.asarray(arrays[name][1])
    return jaxcam.nnx.model(net, jaxcam.ModelInfo(classifier="fc"))


class EqxFeatures(eqx.Module):
    conv: eqx.nn.Conv

    def __call__(self, x):
        return jax.nn.relu(self.conv(x))


class EqxGapNet(eqx.Module):
    """Per example, channels first (Equinox's convention; jaxcam vmaps it and moves the channel axis)."""

    stem: eqx.nn.Conv
    features: EqxFeatures
    fc: eqx.nn.Linear

    def __call__(self, x):
        a = self.features(jnp.tanh(self.stem(x)))
        return self.fc(a.mean(axis=tuple(range(1, a.ndim))))


def _eqx_conv(rank, kernel, bias):
    """An eqx.nn.Conv holding a Linen kernel (*k, I, O) as (O, I, *k) and its bias as (O, 1, ...)."""
    conv = eqx.nn.Conv(rank, kernel.shape[-2], kernel.shape[-1], kernel.shape[:-2], padding="SAME",
                       key=jax.random.key(0))
    weight = jnp.asarray(np.transpose(kernel, (rank + 1, rank) + tuple(range(rank))))
    return eqx.tree_at(lambda c: (c.weight, c.bias), conv, (weight, jnp.asarray(bias).reshape((-1,) + (1,) * rank)))


def _equinox(kernel, channels, arrays):
    rank = len(kernel)
    fc = eqx.nn.Linear(5, 3, key=jax.random.key(0))
    fc = eqx.tree_at(lambda f: (f.weight, f.bias), fc, (jnp.asarray(arrays["fc"][0].T), jnp.asarray(arrays["fc"][1])))
    net = EqxGapNet(_eqx_conv(rank, *arrays["stem"]), EqxFeatures(_eqx_conv(rank, *arrays["conv"])), fc)
    return jaxcam.equinox.model(net, jaxcam.ModelInfo(classifier="fc"))


def _keras(kernel, channels, arrays):
    rank = len(kernel)
    conv = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}[rank]
    pool = {1: keras.layers.GlobalAveragePooling1D, 2: keras.layers.GlobalAveragePooling2D,
            3: keras.layers.GlobalAveragePooling3D}[rank]
    inp = keras.Input((None,) * rank + (channels,))
    stem = conv(4, kernel, padding="same", name="stem")
    h = keras.layers.Activation("tanh", name="tanh")(stem(inp))
    body = conv(5, kernel, padding="same", name="conv")
    f = keras.layers.ReLU(name="features")(body(h))
    fc = keras.layers.Dense(3, name="fc")
    net = keras.Model(inp, fc(pool(name="gap")(f)))
    for layer, name in ((stem, "stem"), (body, "conv"), (fc, "fc")):
        layer.set_weights(list(arrays[name]))
    return jaxcam.keras.model(net, jaxcam.ModelInfo(classifier="fc"))


def _functions(kernel, channels, arrays):
    params = {k: {"kernel": jnp.asarray(w), "bias": jnp.asarray(b)} for k, (w, b) in arrays.items()}
    space = "DHW"[3 - len(kernel):]
    numbers = (f"N{space}C", f"{space}IO", f"N{space}C")

    def conv(p, x):
        return jax.lax.conv_general_dilated(x, p["kernel"], (1,) * (x.ndim - 2), "SAME",
                                            dimension_numbers=numbers) + p["bias"]

    def features(p, x):
        return jax.nn.relu(conv(p["conv"], jnp.tanh(conv(p["stem"], x))))

    def head(p, a):
        return a.mean(axis=tuple(range(1, a.ndim - 1))) @ p["fc"]["kernel"] + p["fc"]["bias"]

    return jaxcam.Model.from_functions(features, head, params)


BUILD = {"nnx": _nnx, "equinox": _equinox, "keras": _keras, "functions": _functions}


@pytest.fixture(params=list(RANKS), scope="module")
def linen(request):
    """(rank, Linen model, x, {(method, layer option): Linen's maps}) for every method any kind runs."""
    rank = request.param
    kernel, shape, seed = RANKS[rank]
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    model = _linen(kernel, x)
    maps = {}
    for kind in KINDS:
        for name in methods(kind, rank):
            opts = options(kind, name)
            key = (name, repr(opts))
            if key not in maps:
                maps[key] = run(model, x, name, opts)
    return rank, model, x, maps


@pytest.mark.parametrize("kind", KINDS)
def test_every_method_equals_the_linen_map(linen, kind):
    rank, reference, x, maps = linen
    kernel = RANKS[rank][0]
    model = BUILD[kind](kernel, x.shape[-1], _arrays(reference))
    logit_error = float(np.abs(np.asarray(model(x)) - np.asarray(reference(x))).max())
    assert logit_error < LOGIT_TOL, logit_error  # the weights were copied right
    layers = jaxcam.list_layers(model, x.shape)
    assert "features" in layers, layers

    errors = {}
    for name in methods(kind, rank):
        opts = options(kind, name)
        got, ref = run(model, x, name, opts), maps[(name, repr(opts))]
        assert len(got) == len(ref) and got, name
        for g, r in zip(got, ref):
            assert g.shape == r.shape, (name, g.shape, r.shape)
            assert np.isfinite(r).all(), name
            per_image = r.reshape(len(x), -1)
            assert (per_image.max(1) > per_image.min(1)).all(), name  # no blank map (blank = blank tests nothing)
        errors[name] = max(float(np.abs(g - r).max()) for g, r in zip(got, ref))
    worst = sorted(errors, key=errors.get, reverse=True)[:4]
    print(f"{kind} {rank}: logits {logit_error:.1e}, {len(errors)} methods, worst "
          + ", ".join(f"{m} {errors[m]:.1e}" for m in worst))
    too_far = {m: e for m, e in errors.items() if e >= (LOCATION_TOL if m == "spatial_ablation_cam" else TOL)}
    assert not too_far, too_far

    # explaining an inner layer (refine_cam's "stem") leaves the layers as they were, at a new input size too
    # (Keras once lost every layer after an explained one: its head graph re-calls them)
    assert jaxcam.list_layers(model, (1,) + x.shape[1:]) == layers

    for name, why in refused(kind, rank).items():  # the refusals: one line each
        with pytest.raises((ValueError, TypeError)) as err:
            registry.get(name)(model, x, **options(kind, name))
        assert "\n" not in str(err.value), (name, why)
