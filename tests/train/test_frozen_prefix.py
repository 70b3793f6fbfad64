"""FrozenPrefix (--freeze LAYER): features once, only the modules after the layer train."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxcam
from jaxcam import train


def test_frozen_prefix_features_head_and_step():
    model = jaxcam.models.resnet20(num_classes=10, seed=0)
    fp = train.FrozenPrefix(model, "layer2", image_size=8)
    assert ("layer3", "0", "conv1") in fp.tail and ("linear",) in fp.tail
    assert ("layer2", "2", "conv1") not in fp.tail and ("conv1",) not in fp.tail
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 8).astype(np.int32)
    tx = train.make_optimizer("sgd", optax.constant_schedule(0.1), trainable=fp.trainable)
    state = train.replicate(train.init_state(model, tx))
    (xb,) = train.shard_batch(images)
    feats = fp.features_fn()(state.variables(), xb, False)
    # the head on cached features = the whole model on the images (eval mode)
    full = model(train.preprocess(jnp.asarray(images), model.info.mean, model.info.std, 8))
    np.testing.assert_allclose(fp.make_eval_step()(state.variables(), feats), full, rtol=1e-5, atol=1e-5)
    # flipped view = features of the mirrored images
    flipped = fp.features_fn()(state.variables(), xb, True)
    (xf,) = train.shard_batch(images[:, :, ::-1].copy())
    np.testing.assert_allclose(flipped, fp.features_fn()(state.variables(), xf, False), atol=1e-5)

    # loss = cross-entropy of the train-mode tail (no label smoothing), by hand
    logits, _ = fp.split.apply_head(state.variables(), jnp.zeros((8, 8, 8, 3)), feats, train=True,
                                    mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
    ce = -np.mean(np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), labels[:, None], 1))
    new, metrics = fp.make_train_step(tx)(state, feats, *train.shard_batch(labels))
    flat0 = jax.tree_util.tree_leaves_with_path(model.variables["params"])
    flat1 = dict(jax.tree_util.tree_leaves_with_path(new.params))
    moved = {tuple(k.key for k in path[:-1]) for path, v in flat0 if not np.array_equal(flat1[path], v)}
    assert moved and all(m in fp.tail for m in moved)  # only the tail trains ...
    assert ("layer3", "0", "conv1") in moved and ("linear",) in moved
    stats0 = dict(jax.tree_util.tree_leaves_with_path(model.variables["batch_stats"]))
    for path, v in jax.tree_util.tree_leaves_with_path(new.batch_stats):
        module = tuple(k.key for k in path[:-1])
        assert np.array_equal(v, stats0[path]) != (module in fp.tail)  # ... and only its BN statistics move
    np.testing.assert_allclose(float(metrics["loss"]), ce, rtol=1e-5)
    # the trained state is a whole model again: its eval on images = the head on cached features
    trained = model.with_variables(jax.device_get(new.variables()))
    np.testing.assert_allclose(trained(train.preprocess(jnp.asarray(images), model.info.mean, model.info.std, 8)),
                               fp.make_eval_step()(new.variables(), feats), rtol=1e-5, atol=1e-5)
