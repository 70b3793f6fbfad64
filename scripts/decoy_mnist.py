"""Decoy Fashion-MNIST: CAM guidance makes a model ignore a shortcut (docs/differentiable.md).

The construction of Decoy MNIST (Ross et al. 2017, "Right for the right reasons"), on Fashion-MNIST:
every image gets a PATCH x PATCH square in a random corner; in training images its gray level encodes
the class (255 - 25 * label), in test images it is random. The same small CNN is trained three ways
with the same budget (steps, batch, optimizer, seeds):

    clean    clean images (no patch)
    decoy    decoy images
    guided   decoy images + WEIGHT * jaxcam.losses.guidance_loss(avoid=the patch): the share of the
             raw Grad-CAM map's energy on the patch (and a MARGIN-pixel ring around it)

and reports test accuracy on the decoy test set (random patches; clean test set for "clean"), mean
and spread over the seeds, and the share of the (normalized) Grad-CAM energy on the patch.

    python scripts/decoy_mnist.py                      # 3 seeds, writes docs/decoy_mnist.png
    python scripts/decoy_mnist.py --rival --kinds guided  # guide the top wrong class's map too (best)
    python scripts/decoy_mnist.py --steps 100 --seeds 1   # a quick look

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` (installed with apt-get when missing and
running as root; otherwise the script says what to install).
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
import multiprocessing
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxcam
from jaxcam import losses

DATA = "/usr/share/datasets/fashion-mnist"
PATCH = 4
MARGIN = 6  # pixels around the patch: the receptive field of conv3's cells (the decoy leaks that far)
LAYER = "conv3"


def locate_fashion_mnist() -> str:
    """The folder of Debian's dataset-fashion-mnist, installing the package when missing (root only)."""
    if os.path.exists(os.path.join(DATA, "train-images-idx3-ubyte.gz")):
        return DATA
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.exit(f"decoy_mnist: Fashion-MNIST not found in {DATA}; install it: sudo apt-get install dataset-fashion-mnist")
    print("installing dataset-fashion-mnist with apt-get ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], check=True, env=env)
    return DATA


def read_idx(path: str) -> np.ndarray:
    """An IDX file (gzip): uint8 images (N, 28, 28) or labels (N,)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def add_decoy(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, random_level: bool):
    """Images with the patch in a random corner, and the (N, 28, 28) masks to avoid (patch + margin)."""
    n, h, w = images.shape
    out = images.copy()
    avoid = np.zeros((n, h, w), np.float32)
    corner = rng.integers(0, 4, n)
    level = rng.integers(0, 10, n) if random_level else labels
    gray = (255 - 25 * level).astype(np.uint8)
    for i in range(n):
        r = 0 if corner[i] < 2 else h - PATCH
        c = 0 if corner[i] % 2 == 0 else w - PATCH
        out[i, r:r + PATCH, c:c + PATCH] = gray[i]
        avoid[i, max(r - MARGIN, 0):r + PATCH + MARGIN, max(c - MARGIN, 0):c + PATCH + MARGIN] = 1.0
    return out, avoid


class SmallCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (3, 3), name="conv1")(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(32, (3, 3), name="conv2")(x))
        x = nn.relu(nn.Conv(32, (3, 3), name="conv3")(x))
        return nn.Dense(10, name="fc")(x.reshape(x.shape[0], -1))  # a flat head reads the corners directly


def to_input(images):
    return (jnp.asarray(images, jnp.float32)[..., None] / 255.0 - 0.29) / 0.35


def train(images, labels, avoid, *, seed: int, steps: int, batch: int, weight: float, method: str = "grad_cam",
          rival: bool = False):
    """Adam, `steps` steps of `batch` images; the guidance term only when `weight` > 0. Returns params."""
    net = SmallCNN()
    params = net.init(jax.random.key(seed), to_input(images[:1]))["params"]
    tx = optax.adam(1e-3)

    def loss_fn(params, x, y, mask):
        model = jaxcam.Model(net, {"params": params}, jaxcam.ModelInfo(default_layer=LAYER))
        logits = model(x)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        if weight == 0:
            return ce
        targets = y
        if rival:  # also the map of the highest-scoring wrong class
            wrong = jnp.argmax(jnp.where(jax.nn.one_hot(y, 10, dtype=bool), -jnp.inf, logits), -1)
            targets = jnp.stack([y, jax.lax.stop_gradient(wrong)], axis=1)
        return ce + weight * losses.guidance_loss(model, x, avoid=mask, method=method, targets=targets)

    @jax.jit
    def step(params, opt_state, x, y, mask):
        grads = jax.grad(loss_fn)(params, x, y, mask)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    opt_state = tx.init(params)
    order = np.random.default_rng(seed).permutation(len(images))
    for s in range(steps):
        idx = order[(s * batch) % len(order):][:batch]
        if len(idx) < batch:
            idx = order[:batch]
        params, opt_state = step(params, opt_state, to_input(images[idx]), jnp.asarray(labels[idx]), jnp.asarray(avoid[idx]))
    return params


def evaluate(params, images, labels, avoid, method: str = "grad_cam", batch: int = 500):
    """(test accuracy, mean share of the normalized map's energy on the avoid region)."""
    model = jaxcam.Model(SmallCNN(), {"params": params}, jaxcam.ModelInfo(default_layer=LAYER))

    @jax.jit
    def one(x, y, mask):
        correct = jnp.sum(jnp.argmax(model(x), -1) == y)
        share = losses.energy_share(jaxcam.registry.get(method).fn(model, x, LAYER, y), mask).sum()
        return correct, share

    correct = share = 0.0
    for start in range(0, len(images), batch):
        c, s = one(to_input(images[start:start + batch]), jnp.asarray(labels[start:start + batch]),
                   jnp.asarray(avoid[start:start + batch]))
        correct, share = correct + float(c), share + float(s)
    return correct / len(images), share / len(images)


def figure(path, runs, test_images, test_labels, method: str = "grad_cam"):
    """Test images with the map of each kind of model (seed 0)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = np.arange(6)
    fig, axes = plt.subplots(len(runs) + 1, len(picks), figsize=(1.6 * len(picks), 1.7 * (len(runs) + 1)))
    for j, i in enumerate(picks):
        axes[0, j].imshow(test_images[i], cmap="gray")
        axes[0, j].set_title(f"label {test_labels[i]}", fontsize=7)
    for row, (kind, params) in enumerate(runs.items(), start=1):
        model = jaxcam.Model(SmallCNN(), {"params": params}, jaxcam.ModelInfo(default_layer=LAYER))
        x = to_input(test_images[picks])
        maps = np.asarray(jaxcam.registry.get(method).fn(model, x, LAYER, jnp.asarray(test_labels[picks])))
        pred = np.asarray(jnp.argmax(model(x), -1))
        for j in range(len(picks)):
            axes[row, j].imshow(test_images[picks[j]], cmap="gray")
            axes[row, j].imshow(maps[j], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            axes[row, j].set_title(f"{kind}: pred {pred[j]}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


def load(train_size: int, test_size: int):
    """(train images, labels, decoy images, their avoid masks, test images, labels, decoy test images, masks)."""
    folder = locate_fashion_mnist()
    rng = np.random.default_rng(0)
    train_x = read_idx(os.path.join(folder, "train-images-idx3-ubyte.gz"))[:train_size]
    train_y = read_idx(os.path.join(folder, "train-labels-idx1-ubyte.gz"))[:train_size]
    test_x = read_idx(os.path.join(folder, "t10k-images-idx3-ubyte.gz"))[:test_size]
    test_y = read_idx(os.path.join(folder, "t10k-labels-idx1-ubyte.gz"))[:test_size]
    decoy_x, decoy_avoid = add_decoy(train_x, train_y, rng, random_level=False)
    test_decoy_x, test_avoid = add_decoy(test_x, test_y, rng, random_level=True)
    return train_x, train_y, decoy_x, decoy_avoid, test_x, test_y, test_decoy_x, test_avoid


def run_seed(seed: int, args) -> dict:
    """{kind: (test accuracy, energy share on the patch, params as numpy)} of one seed's three runs."""
    train_x, train_y, decoy_x, decoy_avoid, test_x, test_y, test_decoy_x, test_avoid = load(args.train_size, args.test_size)
    kinds = {"clean": (train_x, 0.0, test_x), "decoy": (decoy_x, 0.0, test_decoy_x),
             "guided": (decoy_x, args.weight, test_decoy_x)}
    kinds = {k: v for k, v in kinds.items() if k in args.kinds.split(",")}
    out = {}
    for kind, (images, weight, test_images) in kinds.items():
        t = time.time()
        params = train(images, train_y, decoy_avoid, seed=seed, steps=args.steps, batch=args.batch, weight=weight,
                       method=args.method, rival=args.rival)
        acc, share = evaluate(params, test_images, test_y, test_avoid, args.method)
        out[kind] = (acc, share, jax.tree_util.tree_map(np.asarray, params))
        print(f"seed {seed} {kind:6s}: test accuracy {acc:.4f}, {args.method} energy on the patch {share:.3f} "
              f"({time.time() - t:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=3, help="seeds run in parallel processes")
    parser.add_argument("--method", default="hires_cam", help="the map guided and measured")
    parser.add_argument("--weight", type=float, default=10.0, help="guidance loss weight")
    parser.add_argument("--rival", action="store_true", help="also guide the map of the top wrong class")
    parser.add_argument("--kinds", default="clean,decoy,guided", help="which of the three trainings to run")
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--figure", default="docs/decoy_mnist.png")
    args = parser.parse_args(argv)

    locate_fashion_mnist()
    print(f"load average before: {os.getloadavg()}", flush=True)
    t = time.time()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            per_seed = list(pool.map(run_seed, range(args.seeds), [args] * args.seeds))
    else:
        per_seed = [run_seed(seed, args) for seed in range(args.seeds)]
    print(f"\n{args.steps} steps x {args.batch} images, {args.seeds} seeds, {args.method} guidance weight "
          f"{args.weight}, {time.time() - t:.0f} s")
    print(f"| training | test accuracy (mean ± std) | {args.method} energy on the patch region (mean ± std) |")
    print("|---|---|---|")
    for kind in per_seed[0]:
        acc, share = np.array([run[kind][:2] for run in per_seed]).T
        print(f"| {kind} | {acc.mean():.3f} ± {acc.std():.3f} | {share.mean():.3f} ± {share.std():.3f} |")
    print(f"load average after: {os.getloadavg()}")
    if args.figure:
        _, _, _, _, _, test_y, test_decoy_x, _ = load(args.train_size, args.test_size)
        figure(args.figure, {kind: run[2] for kind, run in per_seed[0].items()}, test_decoy_x, test_y, args.method)


if __name__ == "__main__":
    main()
