"""A Keras 3 model built from a zoo model's weights gives the zoo model's maps.

The zoo's CIFAR ResNet-20 (Linen; itself checked against torch elsewhere) with random weights and
non-trivial BatchNorm statistics, rebuilt layer by layer as a Keras functional model (torch padding as
ZeroPadding2D + "valid" convolutions, BatchNormalization with the same epsilon, option-A shortcuts as
Lambda layers) with its arrays copied in: same logits, and Grad-CAM at ``layer3`` (the zoo's default
layer; the Keras layer of that name) gives the same maps. (Measured once: Ablation-CAM too, max-abs
1.5e-6; left out for time: the ablation pass compiles for ~18 s on each side.)
"""
import jax
import numpy as np

from tests.core.test_keras import keras

import jaxcam  # noqa: E402 (after keras: test_keras chooses keras' backend)

ATOL = 5e-6  # measured 6.6e-7 (Grad-CAM maps)


def _keras_resnet20(variables):
    params, stats = variables["params"], variables["batch_stats"]
    L = keras.layers

    def conv_bn(x, path, planes, stride, relu):
        """torch conv (padding 1, no bias) + BatchNorm (+ ReLU) with the zoo's arrays at `path` (conv1 -> bn1)."""
        scope_p, scope_s = params, stats
        for key in path[:-1]:
            scope_p, scope_s = scope_p[key], scope_s[key]
        bn = path[-1].replace("conv", "bn")
        name = "_".join(path)
        layer = L.Conv2D(planes, 3, stride, padding="valid", use_bias=False, name=f"{name}_conv")
        norm = L.BatchNormalization(epsilon=1e-5, name=f"{name}_bn")
        x = norm(layer(L.ZeroPadding2D(1)(x)))
        layer.set_weights([np.asarray(scope_p[path[-1]]["kernel"])])
        norm.set_weights([np.asarray(v) for v in (scope_p[bn]["scale"], scope_p[bn]["bias"], scope_s[bn]["mean"],
                                                  scope_s[bn]["var"])])
        return L.ReLU()(x) if relu else x

    inp = keras.Input((32, 32, 3))
    x = conv_bn(inp, ("conv1",), 16, 1, True)
    for stage, planes in enumerate((16, 32, 64)):
        for block in range(3):
            stride = 2 if stage and not block else 1
            path = (f"layer{stage + 1}", str(block))
            out = conv_bn(x, path + ("conv1",), planes, stride, True)
            out = conv_bn(out, path + ("conv2",), planes, 1, False)
            shortcut = x
            if stride != 1 or x.shape[-1] != planes:
                pad = planes // 4
                shortcut = L.Lambda(lambda t, pad=pad: keras.ops.pad(t[:, ::2, ::2, :], [[0, 0], [0, 0], [0, 0],
                                                                                          [pad, pad]]))(x)
            last = stage == 2 and block == 2
            x = L.ReLU(name="layer3" if last else None)(L.Add()([out, shortcut]))
    linear = L.Dense(params["linear"]["kernel"].shape[-1], name="linear")
    out = linear(L.GlobalAveragePooling2D()(x))
    linear.set_weights([np.asarray(params["linear"]["kernel"]), np.asarray(params["linear"]["bias"])])
    return keras.Model(inp, out)


def test_keras_copy_of_resnet20_gives_the_zoo_maps():
    zoo = jaxcam.models.resnet20(weights=None)
    keys = iter(jax.random.split(jax.random.key(5), 64))
    stats = jax.tree_util.tree_map_with_path(  # non-trivial statistics (init: mean 0, var 1)
        lambda path, v: (jax.random.uniform(next(keys), v.shape, minval=0.5, maxval=1.5) if path[-1].key == "var"
                         else 0.2 * jax.random.normal(next(keys), v.shape)), zoo.variables["batch_stats"])
    zoo = zoo.replace(variables={**zoo.variables, "batch_stats": stats})
    net = _keras_resnet20(zoo.variables)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    logits = np.asarray(zoo(x))
    np.testing.assert_allclose(np.asarray(net(x)), logits, atol=1e-4 * np.abs(logits).max())
    ref = np.asarray(jaxcam.grad_cam(zoo, x))  # the zoo's default layer: layer3
    got = np.asarray(jaxcam.grad_cam(net, x, layer="layer3"))
    err = np.abs(got - ref).max()
    print(f"Keras copy of resnet20 vs zoo, Grad-CAM: max-abs {err:.1e}")
    assert np.ptp(ref) > 0.5 and err < ATOL
