"""One SGD step of jaxcam.train (fast jaxcam.nn path and the plain path) equals torch's on identical weights."""
import jax
import numpy as np
import optax
import pytest

import jaxcam
from jaxcam import nn as jnn
from jaxcam import train

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


def _torch_step(net, images, labels, mean, std, lr):
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=0.0)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    loss = torch.nn.functional.cross_entropy(net(x.float()), torch.from_numpy(labels).long())
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


@pytest.mark.parametrize("plain", [False, True])
def test_resnet18_sgd_step_matches_torch(plain):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=5)
    model = jaxcam.models.resnet18(num_classes=5, weights=net.state_dict())
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, 4).astype(np.int32)
    lr = 0.1
    tx = optax.sgd(lr, momentum=0.9, nesterov=True)
    with jnn.plain(plain):
        step = train.make_train_step(model, tx, 32)
        state, metrics = step(train.init_state(model, tx), *train.shard_batch(images, labels))
    before = jax.tree_util.tree_map(np.asarray, model.variables["params"])
    loss = _torch_step(net, images, labels, model.info.mean, model.info.std, lr)
    np.testing.assert_allclose(float(metrics["loss"]), loss, rtol=1e-5)
    want = jaxcam.models.resnet18(num_classes=5, weights=net.state_dict()).variables["params"]
    flat_got = jax.tree_util.tree_leaves_with_path(state.params)
    flat_want = dict(jax.tree_util.tree_leaves_with_path(want))
    flat_before = dict(jax.tree_util.tree_leaves_with_path(before))
    moved = 0
    for path, got in flat_got:
        got, ref, old = np.asarray(got), np.asarray(flat_want[path]), flat_before[path]
        # Relative to the tensor's scale. At lr 0.1 the update dominates the first layers, and float32
        # noise of the gradient alone is ~1e-4 of its scale (measured against a float64 gradient:
        # conv1 kernel, plain lax 1.1e-4, fast path 0.6e-4; bn1 bias 0.8e-4 / 0.7e-4), so 5e-4.
        tol = 5e-4 * np.abs(ref).max()
        np.testing.assert_allclose(got, ref, rtol=0, atol=tol, err_msg=str(path))
        moved += np.abs(ref - old).max() > 1e-4
    assert moved > 10  # the step changed the parameters (the comparison is not of two unchanged copies)
