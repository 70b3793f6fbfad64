"""torch state_dict -> Flax variables, by name, for modules named like the torch ones.

A torch key ``a.b.0.weight`` lands at the Flax module path ``a/b/0``:
  Conv ``weight`` (O, I/groups, kh, kw) -> ``params .../kernel`` (kh, kw, I/groups, O)
  Linear ``weight`` (out, in)          -> ``params .../kernel`` (in, out)
  BatchNorm ``weight``/``bias``         -> ``params .../scale`` / ``bias``
  ``running_mean``/``running_var``      -> ``batch_stats .../mean`` / ``var``
  ``num_batches_tracked``               -> ignored
The module kind is read from the Flax template (a ``scale`` means BatchNorm). Leading ``module.``
prefixes (DataParallel) are stripped. Anything that does not fit -- a missing, extra or mis-shaped
key -- fails with one error that names every such key.
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional

import flax
import jax
import numpy as np

_IGNORED = ("num_batches_tracked",)


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, when torch happens to be installed
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def strip_prefix(state_dict: Mapping, prefix: str = "module.") -> dict:
    """Drop a leading `prefix` from every key that has it."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def torch_to_flax(
    state_dict: Mapping,
    template,
    rename: Optional[Callable[[str], Optional[str]]] = None,
):
    """Fill a Flax variables `template` (``{'params': ..., 'batch_stats': ...}``) from `state_dict`.

    Args:
      state_dict: torch key -> tensor or array.
      template: variables of the target module (e.g. from ``module.init`` or ``jax.eval_shape``);
        only its tree structure and leaf shapes are used.
      rename: optional ``torch_key -> flax-style dotted key`` (None drops the key) for modules whose
        names differ from torch's.

    Returns:
      New variables with the template's structure, float32 numpy leaves.
    """
    flat = {tuple(k): v for k, v in flax.traverse_util.flatten_dict(flax.core.unfreeze(template)).items()}
    out, unexpected, mismatched = {}, [], []
    for key, value in strip_prefix(state_dict).items():
        name = rename(key) if rename else key
        if name is None or name.rsplit(".", 1)[-1] in _IGNORED:
            continue
        *module, leaf = name.split(".")
        module = tuple(module)
        target, array = _place(flat, module, leaf, _to_numpy(value))
        if target is None:
            unexpected.append(key)
        elif tuple(flat[target].shape) != array.shape:
            mismatched.append(f"{key}: checkpoint {array.shape} vs model {tuple(flat[target].shape)} at {'/'.join(target)}")
        else:
            out[target] = array.astype(np.float32)
    missing = ["/".join(k) for k in flat if k not in out]
    if unexpected or missing or mismatched:
        parts = []
        if missing:
            parts.append(f"missing from the checkpoint ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            parts.append(f"not in the model ({len(unexpected)}): {', '.join(unexpected)}")
        if mismatched:
            parts.append(f"wrong shape ({len(mismatched)}): {'; '.join(mismatched)}")
        raise ValueError("the checkpoint does not fit the model:\n  " + "\n  ".join(parts))
    return flax.traverse_util.unflatten_dict(out)


def _place(flat, module, leaf, array):
    """Where a torch (module, leaf) goes in the flat Flax tree, and the array in Flax layout."""
    params, stats = ("params",) + module, ("batch_stats",) + module
    if leaf == "weight":
        if params + ("scale",) in flat:
            return params + ("scale",), array
        if params + ("kernel",) in flat:
            if array.ndim == 4:
                return params + ("kernel",), array.transpose(2, 3, 1, 0)
            if array.ndim == 2:
                return params + ("kernel",), array.T
            return params + ("kernel",), array
        if params + ("embedding",) in flat:
            return params + ("embedding",), array
    elif leaf == "bias" and params + ("bias",) in flat:
        return params + ("bias",), array
    elif leaf == "running_mean" and stats + ("mean",) in flat:
        return stats + ("mean",), array
    elif leaf == "running_var" and stats + ("var",) in flat:
        return stats + ("var",), array
    elif params + (leaf,) in flat:  # parameters stored under their torch name (e.g. cls_token)
        return params + (leaf,), array
    return None, array


def abstract_variables(module, input_shape=(1, 64, 64, 3)):
    """Variables' shapes of `module` without computing anything."""
    return jax.eval_shape(lambda x: module.init(jax.random.key(0), x), jax.ShapeDtypeStruct(input_shape, np.float32))
