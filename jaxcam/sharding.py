"""The device mesh jaxcam uses everywhere (explain, render, evaluate, training): one helper, one axis.

    mesh = jaxcam.sharding.batch_mesh()                 # 1-D mesh over the local devices, axis "batch"
    x = jax.device_put(x, jaxcam.sharding.batch_sharding(mesh))   # split along the first axis
    images[jaxcam.sharding.process_share(len(images))]  # this host's share in a multi-host run
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "batch"


def batch_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A 1-D mesh with axis ``BATCH_AXIS`` over `devices` (default: all local devices)."""
    devices = list(devices) if devices is not None else jax.local_devices()
    return Mesh(np.asarray(devices), (BATCH_AXIS,))


def batch_sharding(mesh: Optional[Mesh] = None) -> NamedSharding:
    """Arrays split along their first (batch) axis over the mesh."""
    return NamedSharding(mesh if mesh is not None else batch_mesh(), PartitionSpec(BATCH_AXIS))


def replicated(mesh: Optional[Mesh] = None) -> NamedSharding:
    """Arrays (model variables, state) copied onto every device of the mesh."""
    return NamedSharding(mesh if mesh is not None else batch_mesh(), PartitionSpec())


def process_share(num_items: int) -> slice:
    """This process's contiguous share of `num_items` items in a multi-host run (all of them on one host).

    With ``jax.distributed.initialize()`` each host explains its own share on its local devices; CAMs
    are per image, so no cross-host communication is needed:
    ``jaxcam.explain(method, model, images[jaxcam.process_share(len(images))])``.
    """
    index, count = jax.process_index(), jax.process_count()
    return slice(num_items * index // count, num_items * (index + 1) // count)


def round_to_devices(batch_size: int, num_devices: int) -> int:
    """`batch_size` rounded up to a multiple of the number of devices (a positive int is required)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return -(-int(batch_size) // num_devices) * num_devices
