"""Every option of the ablation family and both aug_smooth modes, value-checked by brute force.

The reference never touches jaxcam's split, masks or runner: the test model takes an explicit
``keep`` mask (and fill value) applied to its layer-`block2` output, so each ablation is one plain
forward of the whole model; drops, window averages, score spaces, final activations, test-time
augmentation and resizes are plain numpy / torch loops written here. The head after `block2` is
non-linear (conv + ReLU + mean + dense), so the softmax path through the full head is exercised.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxcam
from tests.helpers import ConvReLU

SIZE = 12  # block2 (stride 2) is 6 x 6 x 8
# Measured max-abs errors (float32 jaxcam vs float64 reference): logit scores <= 1e-5; differences
# of probabilities lose digits to cancellation before the min-max: <= 3e-5.
TOL, SOFTMAX_TOL = 2e-5, 1e-4


class AblatableNet(nn.Module):
    """block1 -> block2 (the explained layer, stride 2) -> [keep mask] -> conv+ReLU -> mean -> fc."""

    @nn.compact
    def __call__(self, x, keep=None, value=0.0, features=False):
        a = ConvReLU(6, name="block1")(x)
        a = ConvReLU(8, 2, name="block2")(a)
        if features:
            return a
        if keep is not None:
            a = jnp.where(keep, a, value)
        h = nn.relu(nn.Conv(8, (3, 3), padding=1, name="head_conv")(a))
        return nn.Dense(5, name="fc")(h.mean(axis=(1, 2)))


@pytest.fixture(scope="module")
def net():
    info = jaxcam.ModelInfo(name="ablatable", default_layer="block2", classifier="fc", input_size=SIZE)
    return jaxcam.models.build(MODULE, info, seed=3)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(7).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)


MODULE = AblatableNet()
_forward = jax.jit(lambda v, x, keep, value: MODULE.apply(v, x, keep, value))
_features = jax.jit(lambda v, x: MODULE.apply(v, x, features=True))


def logits(net, x, keep=None, value=0.0):
    return np.asarray(_forward(net.variables, x, keep, value), np.float64)


def space(z, score):
    if score == "logit":
        return z
    if score == "sigmoid":
        return 1 / (1 + np.exp(-z))
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def windows(n, window, stride):
    """Start rows of a window sliding over n cells, plus a last one flush with the edge."""
    size = min(window, n)
    return sorted(set(range(0, n - size + 1, stride)) | {n - size}), size


def minmax(cam):
    cam = cam - cam.min(axis=(1, 2), keepdims=True)
    top = cam.max(axis=(1, 2), keepdims=True)
    return np.where(top > 0, cam / np.where(top > 0, top, 1), 0.0)


def torch_resize(a, size):
    """Bilinear, half-pixel centres, no antialias: maps (N, h, w) or images (N, h, w, C)."""
    t = torch.from_numpy(np.asarray(a, np.float32))
    t = t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2)
    out = torch.nn.functional.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)
    return out[:, 0].numpy() if np.ndim(a) == 3 else out.permute(0, 2, 3, 1).numpy()


def finish(raw, size, act="relu"):
    n = raw.shape[0]
    if act == "relu":
        raw = np.maximum(raw, 0)
    elif act == "softmax":
        e = np.exp(raw.reshape(n, -1) - raw.reshape(n, -1).max(axis=1, keepdims=True))
        raw = (e / e.sum(axis=1, keepdims=True)).reshape(raw.shape)
    return minmax(torch_resize(minmax(raw), size))


def brute_force(net, x, method, targets=None, score="logit", act="relu", value=0.0, window=1, stride=1, raw=False):
    """The method's map from one full forward per ablation, in Python loops."""
    base = logits(net, x)
    classes = base.argmax(1) if targets is None else np.broadcast_to(targets, (len(x),))
    pick = np.arange(len(x)), classes
    y = space(base, score)[pick]
    a = np.asarray(_features(net.variables, x), np.float64)  # (N, h, w, C)
    n, h, w, c = a.shape
    if method == "ablation_cam":
        weights = np.zeros((n, c))
        for k in range(c):
            keep = np.ones((1, 1, 1, c), bool)
            keep[..., k] = False
            weights[:, k] = (y - space(logits(net, x, keep, value), score)[pick]) / y
        cam = np.einsum("nc,nhwc->nhw", weights, a)
    else:
        total, count = np.zeros((n, h, w)), np.zeros((h, w))
        rows, wh = windows(h, window, stride)
        cols, ww = windows(w, window, stride)
        for r in rows:
            for q in range(len(cols)):
                col = cols[q]
                keep = np.ones((1, h, w, 1), bool)
                keep[:, r : r + wh, col : col + ww] = False
                drop = y - space(logits(net, x, keep, value), score)[pick]
                if method == "spatial_ablation_cam":
                    drop = drop / y
                total[:, r : r + wh, col : col + ww] += drop[:, None, None]
                count[r : r + wh, col : col + ww] += 1
        cam = total / count
        if method == "spatial_ablation_cam":
            cam = cam * a.sum(axis=-1)
    return cam if raw else finish(cam, x.shape[1:3], act)


def check(got, want, atol):
    want = np.asarray(want)
    assert (want.max(axis=(1, 2)) - want.min(axis=(1, 2)) > 0.5).all(), "reference map is blank"
    err = np.abs(np.asarray(got) - want).max()
    print(f"max-abs error {err:.1e}")
    assert err < atol, err


def test_fast_ablation_defaults_softmax_full_head(net, x):
    """The default call (score="softmax", argmax targets, relu, value 0, 1x1 windows)."""
    check(jaxcam.fast_ablation_cam(net, x), brute_force(net, x, "fast_ablation_cam", score="softmax"), SOFTMAX_TOL)


def test_fast_ablation_softmax_with_callable_target(net, x):
    """A callable target can only go through the full head: y = p_1 + p_3."""
    def two_classes(scores):
        return scores[:, 1] + scores[:, 3]

    got = jaxcam.fast_ablation_cam(net, x, targets=two_classes)
    base = space(logits(net, x), "softmax")
    y = base[:, 1] + base[:, 3]
    drops = np.zeros((2, 6, 6))
    for i in range(6):
        for j in range(6):
            keep = np.ones((1, 6, 6, 1), bool)
            keep[:, i, j] = False
            p = space(logits(net, x, keep), "softmax")
            drops[:, i, j] = y - (p[:, 1] + p[:, 3])
    check(got, finish(drops, (SIZE, SIZE)), 2 * SOFTMAX_TOL)  # measured 7e-5: a sum of two differences


@pytest.mark.parametrize(
    "method, options",
    [
        ("fast_ablation_cam", dict(score="sigmoid")),
        ("fast_ablation_cam", dict(score="logit", final_activation="softmax")),
        ("fast_ablation_cam", dict(final_activation="none", ablation_value=0.7)),
        ("fast_ablation_cam", dict(window=2, stride=1, targets=None)),  # overlapping windows: 25 positions
        ("fast_ablation_cam", dict(window=4, stride=3, score="logit", final_activation="none")),  # last window moved back
        ("ablation_cam", dict(score="softmax")),
        ("ablation_cam", dict(score="sigmoid", ablation_value=-0.5)),
        ("ablation_cam", dict(final_activation="softmax")),
        ("spatial_ablation_cam", dict(score="sigmoid", window=3, stride=2, final_activation="none")),
        ("fast_ablation_cam", dict(chunk_size=3)),
        ("spatial_ablation_cam", dict(score="softmax", final_activation="softmax")),
        ("spatial_ablation_cam", dict(ablation_value=0.4, chunk_size=2)),
    ],
)
def test_option_values_match_brute_force(net, x, method, options):
    options = dict(options)
    targets = options.pop("targets", np.array([1, 3]))
    got = getattr(jaxcam, method)(net, x, layer="block2", targets=targets, **options)
    ref = dict(options)
    ref.pop("chunk_size", None)  # ablated copies per chunk: never changes the map
    want_score = ref.pop("score", "softmax" if method == "fast_ablation_cam" else "logit")
    want = brute_force(
        net, x, method, targets, score=want_score,
        act=ref.pop("final_activation", "relu"), value=ref.pop("ablation_value", 0.0), **ref,
    )
    check(got, want, TOL if want_score == "logit" else SOFTMAX_TOL)


@pytest.mark.parametrize("method", ["fast_ablation_cam", "spatial_ablation_cam"])
def test_normalize_false_is_the_raw_map_resized(net, x, method):
    """normalize=False: the brute-force raw map (no final activation, no min-max) resized to the input."""
    targets = np.array([1, 3])
    score = "softmax" if method == "fast_ablation_cam" else "logit"
    got = np.asarray(getattr(jaxcam, method)(net, x, layer="block2", targets=targets, normalize=False))
    want = torch_resize(brute_force(net, x, method, targets, score=score, raw=True), (SIZE, SIZE))
    err = np.abs(got - want).max() / np.abs(want).max()
    print(f"max-abs error / scale {err:.1e}")
    assert err < SOFTMAX_TOL  # measured 9.3e-6 (fast, softmax) and 1.4e-6 (spatial) relative to the largest value


@pytest.mark.parametrize("method,mode", [("fast_ablation_cam", "multiply"), ("fast_ablation_cam", "scale"),
                                         ("fast_ablation_cam", True), ("spatial_ablation_cam", True),
                                         ("spatial_ablation_cam", "scale")])
def test_aug_smooth_modes_match_brute_force(net, x, method, mode):
    """Six views {identity, horizontal flip} x {0.9, 1.0, 1.1}: pixel values multiplied ("multiply")
    or the image resized to round(12 * factor) = 11, 12, 13 px ("scale"); each view's map (brute force)
    is brought back to 12 x 12 and unflipped; the mean is min-maxed."""
    targets = np.array([2, 4])
    got = getattr(jaxcam, method)(net, x, targets=targets, aug_smooth=mode)
    score = "softmax" if method == "fast_ablation_cam" else "logit"
    mode = "multiply" if mode is True else mode
    views = []
    for flip in (False, True):
        base = x[:, :, ::-1].copy() if flip else x
        for factor in (0.9, 1.0, 1.1):
            if mode == "multiply":
                m = brute_force(net, base * np.float32(factor), method, targets, score)
            else:
                side = int(round(SIZE * factor))
                view = base if side == SIZE else torch_resize(base, (side, side))
                m = brute_force(net, view, method, targets, score)
                m = m if side == SIZE else torch_resize(m, (SIZE, SIZE))
            views.append(m[:, :, ::-1] if flip else m)
    check(got, minmax(np.mean(views, axis=0)), SOFTMAX_TOL)
