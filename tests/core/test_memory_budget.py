"""jaxcam._src.memory_budget: sizes parse, XLA's compiled sizes grow with the chunk, and the plan fits the limit.

The plan is checked against brute force: the compiled size of every chunk on a tiny model.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import jaxcam
from jaxcam._src import memory_budget as memory


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (3, 3), name="conv1")(x))
        return nn.Dense(5, name="fc")(x.mean(axis=(1, 2)))


@pytest.fixture(scope="module")
def model():
    variables = Tiny().init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    return jaxcam.Model(Tiny(), variables, jaxcam.ModelInfo(name="tiny", default_layer="conv1", classifier="fc",
                                                            input_size=32))


def test_parse_bytes():
    assert memory.parse_bytes("4G") == 4 << 30
    assert memory.parse_bytes("512 MiB") == 512 << 20
    assert memory.parse_bytes("1.5g") == int(1.5 * (1 << 30))
    assert memory.parse_bytes("1000") == 1000
    for bad in ("", "G", "-1G", "4 parsecs", "0"):
        with pytest.raises(ValueError, match="memory size"):
            memory.parse_bytes(bad)


@pytest.fixture(scope="module")
def sizes(model):
    """Compiled bytes of Score-CAM (16 channels) at batch 4 for every chunk 1..16, and at batch 2, chunk 1."""
    by_chunk = {c: memory.compiled_bytes(jaxcam.score_cam, model, 4, 32, None, **{_kw(): c}) for c in (1, 2, 4, 8, 16)}
    return by_chunk, memory.compiled_bytes(jaxcam.score_cam, model, 2, 32, None, **{_kw(): 1})


def _kw():
    return memory.chunk_keyword(jaxcam.score_cam)


def test_compiled_size_grows_with_the_chunk(sizes):
    by_chunk, _ = sizes
    values = [by_chunk[c] for c in sorted(by_chunk)]
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_plan_fits_the_limit_and_is_not_needlessly_small(model, sizes):
    by_chunk, _ = sizes
    base = 100 << 20
    limit = base + by_chunk[4]  # chunk 4 fits exactly, 8 does not
    plan = memory.plan(jaxcam.score_cam, model, image_size=32, batch_size=4, max_bytes=limit, channels=16,
                       baseline=base)
    assert plan.batch_size == 4 and plan.predicted_bytes <= limit
    assert 4 <= plan.chunk_size < 8
    assert plan.predicted_bytes == base + memory.compiled_bytes(jaxcam.score_cam, model, 4, 32, None,
                                                                **{_kw(): plan.chunk_size})


def test_plan_lowers_the_batch_then_refuses(model, sizes):
    by_chunk, batch2 = sizes
    base = 100 << 20
    plan = memory.plan(jaxcam.score_cam, model, image_size=32, batch_size=4, max_bytes=base + batch2,
                       channels=16, baseline=base)
    assert plan.batch_size < 4 and plan.predicted_bytes <= base + batch2
    with pytest.raises(ValueError, match="raise --max-memory"):
        memory.plan(jaxcam.score_cam, model, image_size=32, batch_size=4, max_bytes=base + 1000, channels=16,
                    baseline=base)


def test_limit_argument():
    import argparse

    assert memory.limit_argument("auto") == "auto"
    assert memory.limit_argument("2G") == 2 << 30
    with pytest.raises(argparse.ArgumentTypeError):
        memory.limit_argument("lots")
