"""Test building blocks shared by several test files (one definition each)."""
from pathlib import Path

import flax.linen as nn
import numpy as np
from PIL import Image


class ConvReLU(nn.Module):
    """3x3 convolution (padding 1) + ReLU; its kernel is named 'conv' (the twin torch nets copy it by name)."""

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(self.features, (3, 3), self.stride, padding=1, name="conv")(x))


def random_pngs(folder, names, shape, seed: int = 0):
    """Write uniform-noise RGB images of `shape` (H, W, 3) under `folder` (sub-folders made); returns `folder`."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)
    return folder


class Tiny(nn.Module):
    """conv1 -> conv2 (stride 2) -> global mean -> fc: 24 px inputs, 5 classes."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
        x = nn.relu(nn.Conv(16, (3, 3), strides=2, name="conv2")(x))
        return nn.Dense(5, name="fc")(x.mean(axis=(1, 2)))


def tiny_model():
    """`Tiny` with seed-0 weights as a jaxcam.Model (explained layer conv2)."""
    import jax
    import jax.numpy as jnp

    import jaxcam

    variables = Tiny().init(jax.random.key(0), jnp.zeros((1, 24, 24, 3)))
    info = jaxcam.ModelInfo(name="tiny", default_layer="conv2", classifier="fc", input_size=24)
    return jaxcam.Model(Tiny(), variables, info)


def tiny_images(n=7):
    return np.random.default_rng(0).integers(0, 256, (n, 24, 24, 3), dtype=np.uint8)


def render_folder(folder, out, batch_size: int = 2, method: str = "grad_cam"):
    """`jaxcam render <folder>` in-process on a random 32 px ResNet-20; returns (exit status, stdout + stderr)."""
    import contextlib
    import io

    from jaxcam.cli import render

    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        status = render.main([str(folder), "--method", method, "--model", "resnet20", "--weights", "none",
                              "--image-size", "32", "--batch-size", str(batch_size), "--out", str(out)])
    return status, text.getvalue()
