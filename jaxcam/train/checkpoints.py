"""Orbax checkpoints of a training run: ``<run>/checkpoints/{last,best}``, each the train state plus a
JSON ``meta`` (model, classes, image size, history, config); `load_checkpoint` rebuilds the model alone.

(Not to be confused with `jaxcam.models.torch_io`, which reads PyTorch weight files.)
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import jax
import orbax.checkpoint as ocp

from jaxcam.models.loading import CheckpointMismatchError, load_checkpoint  # noqa: F401  (re-exported)
from jaxcam.train.steps import TrainState



class Checkpoints:
    """Orbax checkpoints of a run: ``<dir>/last`` (every epoch) and ``<dir>/best`` (best test accuracy).

    Each checkpoint holds the train state and a JSON ``meta`` (model name, num_classes, class names,
    image size, epoch, metrics history, config) so that `load_checkpoint` can rebuild the model alone.
    A new checkpoint is written completely before the previous one is removed, so a kill at any
    moment leaves a usable ``last``.
    """

    def __init__(self, directory: str):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
        self._managers = {kind: ocp.CheckpointManager(os.path.join(self.directory, kind), options=options,
                                                      item_names=("state", "meta"))
                          for kind in ("last", "best")}

    def save(self, epoch: int, state: TrainState, meta: dict, best: bool) -> None:
        state_tree = _state_dict(state)
        for kind in ("last", "best") if best else ("last",):
            self._managers[kind].save(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state_tree), meta=ocp.args.JsonSave(meta)))

    def wait(self) -> None:
        for manager in self._managers.values():
            manager.wait_until_finished()

    def latest_meta(self) -> Optional[dict]:
        manager = self._managers["last"]
        step = manager.latest_step()
        if step is None:
            return None
        return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore_last(self, template: TrainState, expect: Dict[str, Any]) -> Optional[Tuple[TrainState, dict]]:
        """(state, meta) of the last checkpoint, or None if there is none.

        Raises:
          CheckpointMismatchError: the checkpoint's model/num_classes/image_size differ from `expect`
            or its arrays do not fit `template`.
        """
        meta = self.latest_meta()
        if meta is None:
            return None
        check_meta(meta, expect, self.directory)
        manager = self._managers["last"]
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _state_dict(template))
        try:
            restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract)))["state"]
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointMismatchError(
                f"the checkpoint in {self.directory} does not fit this model/optimizer ({e}); "
                "use another output directory or the same options as the run that wrote it") from e
        return template.replace(**restored), meta


def check_meta(meta: dict, expect: Dict[str, Any], where: str) -> None:
    """Raise `CheckpointMismatchError` naming every field of `expect` that `meta` contradicts."""
    diffs = [f"{k}: checkpoint {meta.get(k)!r} vs requested {v!r}" for k, v in expect.items() if meta.get(k) != v]
    if diffs:
        raise CheckpointMismatchError(
            f"the checkpoint in {where} was written by another configuration ({'; '.join(diffs)}); "
            "pass the same options to resume it, or choose a new output directory")


def _state_dict(state: TrainState) -> dict:
    return {"step": state.step, "params": state.params, "batch_stats": state.batch_stats, "opt_state": state.opt_state}
