"""The pieces of a training run: optimizer + schedule, a jitted train/eval step sharded over all
local devices, and the frozen-prefix mode (features computed once). `jaxcam.train.fit` puts them together.

    state = train.init_state(model, tx)
    step = train.make_train_step(model, tx)          # input size: model.info.input_size
    state, metrics = step(state, *train.shard_batch(images_uint8, labels))

Images go into the steps as uint8 (N, h, w, 3); the step converts, resizes to the model's input size
(``model.info.input_size``, or an explicit `image_size`) and normalizes with the model's mean/std on
the device.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcam._src.compile import jit as tuned_jit
from jaxcam._src.split import Split, check_layer
from jaxcam._src.host_memory import reuse_host_memory  # noqa: F401  (re-exported)
from jaxcam._src.model import Model
from jaxcam import losses
from jaxcam.models import loading
from jaxcam.sharding import BATCH_AXIS, batch_mesh

DATA_AXIS = BATCH_AXIS  # one mesh axis name for training and explaining (jaxcam.sharding)


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training: step count, params, BatchNorm statistics, optimizer state."""

    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any

    def variables(self) -> dict:
        return {"params": self.params, "batch_stats": self.batch_stats} if self.batch_stats else {"params": self.params}


# ---------------------------------------------------------------- optimizer


SCHEDULES = ("cosine", "onecycle", "step", "plateau", "constant")


def make_schedule(name: str, peak_lr: float, total_steps: int, warmup_steps: int = 0,
                  milestones: Optional[Sequence[int]] = None, gamma: float = 0.1) -> optax.Schedule:
    """Learning-rate schedule over `total_steps`.

    "cosine": linear warmup then cosine decay to 0; "onecycle": optax's one-cycle (30% ramp up);
    "step": constant, multiplied by `gamma` at each of `milestones` (step indices; default 50% and
    75% of training); "plateau": constant here, scaled by `Plateau` between epochs
    (reduce-on-plateau); "constant".
    """
    total_steps = max(int(total_steps), 1)
    if name == "cosine":
        warmup = min(warmup_steps, total_steps - 1)
        return optax.warmup_cosine_decay_schedule(0.0 if warmup else peak_lr, peak_lr, warmup, total_steps, 0.0)
    if name == "onecycle":
        return optax.cosine_onecycle_schedule(total_steps, peak_lr)
    if name == "step":
        if milestones is None:
            milestones = (total_steps // 2, (3 * total_steps) // 4)
        boundaries: Dict[int, float] = {}
        for m in milestones:
            boundaries[int(m)] = boundaries.get(int(m), 1.0) * gamma
        return optax.piecewise_constant_schedule(peak_lr, boundaries)
    if name in ("constant", "plateau"):
        return optax.constant_schedule(peak_lr)
    raise ValueError(f"unknown schedule {name!r}; use one of {', '.join(SCHEDULES)}")


class Plateau:
    """Reduce-on-plateau (``optax.contrib.reduce_on_plateau``) driven once per epoch by a validation loss.

    The optimizer must end in the scale built by `make_optimizer(..., lr_scale=True)`;
    `apply(opt_state)` writes the current scale into it. `state_dict`/`load` keep it in checkpoints.
    """

    def __init__(self, factor: float = 0.1, patience: int = 2, cooldown: int = 0, min_scale: float = 1e-3):
        self.tx = optax.contrib.reduce_on_plateau(factor=factor, patience=patience, cooldown=cooldown,
                                                  accumulation_size=1, min_scale=min_scale)
        self.state = self.tx.init(jnp.zeros(()))

    def update(self, value: float) -> float:
        """Feed one epoch's validation loss; returns the new learning-rate scale."""
        _, self.state = self.tx.update(jnp.zeros(()), self.state, value=jnp.asarray(value, jnp.float32))
        return self.scale

    @property
    def scale(self) -> float:
        return float(self.state.scale)

    def apply(self, opt_state):
        return set_lr_scale(opt_state, self.scale)

    def state_dict(self) -> dict:
        return {k: float(v) for k, v in self.state._asdict().items()}

    def load(self, saved: dict) -> None:
        self.state = self.state._replace(**{k: jnp.asarray(v, jnp.asarray(getattr(self.state, k)).dtype)
                                            for k, v in saved.items()})


def set_lr_scale(opt_state, scale: float):
    """Set the ``step_size`` of every injected scale (see `make_optimizer(lr_scale=True)`) in `opt_state`."""
    def injected(node):
        return hasattr(node, "hyperparams") and hasattr(node, "_replace") and "step_size" in node.hyperparams

    def fix(node):
        if injected(node):
            return node._replace(hyperparams={**node.hyperparams,
                                              "step_size": jnp.asarray(scale, node.hyperparams["step_size"].dtype)})
        return node

    return jax.tree_util.tree_map(fix, opt_state, is_leaf=injected)


def _decay_mask(params):
    """Weight decay on kernels (ndim > 1) only, not on biases or BatchNorm scales."""
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def make_optimizer(name: str, schedule: optax.Schedule, weight_decay: float = 5e-4, momentum: float = 0.9,
                   trainable: Optional[Callable[[Tuple[str, ...]], bool]] = None,
                   lr_scale: bool = False) -> optax.GradientTransformation:
    """"sgd" (Nesterov momentum, L2-style decoupled decay on kernels) or "adamw".

    Args:
      trainable: optional predicate on a parameter's path (tuple of names); parameters for which it
        is False get zero updates (e.g. a frozen backbone).
      lr_scale: end the chain in an injected scale (1.0) that `Plateau` changes between epochs.
    """
    if name == "sgd":
        tx = optax.chain(optax.add_decayed_weights(weight_decay, _decay_mask),
                         optax.sgd(schedule, momentum=momentum, nesterov=True))
    elif name == "adamw":
        tx = optax.adamw(schedule, weight_decay=weight_decay, mask=_decay_mask)
    else:
        raise ValueError(f"unknown optimizer {name!r}; use sgd or adamw")
    if lr_scale:
        tx = optax.chain(tx, optax.inject_hyperparams(optax.scale)(step_size=1.0))
    if trainable is None:
        return tx

    def labels(params):
        return flax.traverse_util.path_aware_map(lambda path, _: "train" if trainable(path) else "frozen", params)

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def init_state(model: Model, tx: optax.GradientTransformation) -> TrainState:
    """Fresh state from the model's variables (copied: the train step donates its state's buffers)."""
    variables = jax.tree_util.tree_map(jnp.copy, model.variables)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))


# ---------------------------------------------------------------- devices


def mesh() -> Mesh:
    """A 1-D mesh over all local devices (`jaxcam.sharding.batch_mesh`); batches split along its axis."""
    return batch_mesh()


def replicate(tree, device_mesh: Optional[Mesh] = None):
    """Copy a pytree onto every device of the mesh."""
    return jax.device_put(tree, NamedSharding(device_mesh or mesh(), PartitionSpec()))


def shard_batch(*arrays, device_mesh: Optional[Mesh] = None):
    """Split host arrays along their first axis over the mesh (its size must divide the batch)."""
    device_mesh = device_mesh or mesh()
    n = device_mesh.size
    for a in arrays:
        if a.shape[0] % n:
            raise ValueError(f"batch of {a.shape[0]} does not split over {n} devices; use a batch size divisible by {n}")
    sharding = NamedSharding(device_mesh, PartitionSpec(DATA_AXIS))
    return tuple(jax.device_put(a, sharding) for a in arrays)


# ---------------------------------------------------------------- steps


def to_unit(images, image_size: int):
    """uint8 (N, h, w, 3) -> float32 in [0, 1] (N, image_size, image_size, 3), bilinear resize."""
    x = images.astype(jnp.float32) / 255.0
    n, h, w, c = x.shape
    if (h, w) != (image_size, image_size):
        x = jax.image.resize(x, (n, image_size, image_size, c), "bilinear")
    return x


def preprocess(images, mean, std, image_size: int, dtype=jnp.float32):
    """uint8 (N, h, w, 3) -> normalized (N, image_size, image_size, 3) of `dtype`, bilinear resize."""
    x = to_unit(images, image_size)
    x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    return x.astype(dtype)


def _cast(tree, dtype):
    return jax.tree_util.tree_map(lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, tree)


def augment_uint8(augment, image_size: int):
    """Jitted ``(key, uint8 images (B, h, w, 3)) -> float images 0..255 (B, size, size, 3)``: resize on
    the device to `image_size` (as `preprocess`), then `augment(key, x in [0, 1])`.

    ``(key, images, masks uint8 (B, h, w)) -> (images, masks 0..255 (B, size, size))``: the masks
    resized alike and given the images' geometric augmentation (`jaxcam.data.augmentations.pipeline`)."""
    def run(key, images, masks=None):
        x = to_unit(images, image_size)
        if masks is None:
            return augment(key, x) * 255.0
        x, m = augment(key, x, mask_unit(masks, image_size))
        return x * 255.0, m * 255.0

    return jax.jit(run)


def mask_unit(masks, image_size: int):
    """uint8 (or float 0..255) masks (N, h, w) -> float32 in [0, 1] (N, image_size, image_size), as `to_unit`."""
    return to_unit(masks[..., None], image_size)[..., 0]


@dataclasses.dataclass(frozen=True)
class Guidance:
    """CAM guidance in the train step: ``loss = task loss + weight * jaxcam.losses.guidance_loss(model, x,
    <region>=masks, method=method, layer=layer, targets=labels)`` on the raw map (eval-mode model, the
    step's parameters); `region` is "avoid" (masks mark where the evidence should not be) or "focus"."""

    method: str = "grad_cam"
    weight: float = 1.0
    region: str = "avoid"
    layer: Optional[str] = None


def input_size(model: Model, image_size: Optional[int] = None) -> int:
    """The square input size a step feeds `model`: `image_size` when given, else the model's own."""
    size = image_size or model.info.input_size
    if not size:
        raise ValueError(f"{model.info.name} records no input size; pass image_size=")
    return int(size)


def make_train_step(model: Model, tx: optax.GradientTransformation, image_size: Optional[int] = None, label_smoothing: float = 0.0,
                    compute_dtype=jnp.float32, train_batch_norm: bool = True, device_mesh: Optional[Mesh] = None,
                    seed: int = 0, guidance: Optional[Guidance] = None):
    """Jitted ``step(state, images uint8 (B,h,w,3), labels int32 (B,)) -> (state, {"loss", "correct"})``.

    With `guidance` (`Guidance`): ``step(state, images, labels, masks (B,h,w) uint8 or float 0..255)``;
    masks are resized with the images and the loss adds ``guidance.weight * guidance_loss`` (the
    reported "loss" is the sum).

    Dropout layers (VGG, EfficientNet heads) get the key ``fold_in(key(seed), step)``.

    The batch is sharded over the mesh, the state replicated; BatchNorm uses batch statistics of the
    whole (global) batch, so the result does not depend on the number of devices. With
    ``compute_dtype=jnp.bfloat16`` the forward/backward run in bfloat16 while params, BatchNorm
    statistics, loss and updates stay float32. ``train_batch_norm=False`` keeps BatchNorm in eval
    mode (frozen statistics, e.g. for a frozen backbone).
    """
    device_mesh = device_mesh or mesh()
    module, info = model.module, model.info
    num_classes = _num_classes(model)
    image_size = input_size(model, image_size)

    def loss_fn(params, batch_stats, images, labels, step_count, masks=None):
        x = preprocess(images, info.mean, info.std, image_size, compute_dtype)
        rngs = {"dropout": jax.random.fold_in(jax.random.key(seed), step_count)}
        variables = {"params": _cast(params, compute_dtype)}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        penalty = 0.0
        if guidance is not None:  # the map of the model as it is before this step's BatchNorm update
            penalty = guidance.weight * losses.guidance_loss(
                model.with_variables(dict(variables)), x, **{guidance.region: mask_unit(masks, image_size)},
                method=guidance.method, layer=guidance.layer, targets=labels).astype(jnp.float32)
        if train_batch_norm and batch_stats:
            logits, updates = module.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
            batch_stats = updates["batch_stats"]
        else:
            logits = module.apply(variables, x, train=False)
        logits = logits.astype(jnp.float32)
        targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean() + penalty
        return loss, (batch_stats, logits)

    return _jit_step(loss_fn, tx, device_mesh, batch_arrays=3 if guidance is not None else 2)


def _jit_step(loss_fn, tx: optax.GradientTransformation, device_mesh: Mesh, batch_arrays: int = 2):
    """Jitted ``step(state, inputs, labels, *more) -> (state, {"loss", "correct"})`` from
    ``loss_fn(params, batch_stats, inputs, labels, step, *more) -> (loss, (batch_stats, logits))``: the
    state replicated, the `batch_arrays` batch arrays sharded over the mesh, the old state's buffers donated."""
    def step(state: TrainState, inputs, labels, *more):
        (loss, (batch_stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.batch_stats, inputs, labels, state.step, *more)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        correct = jnp.sum(jnp.argmax(logits, -1) == labels)
        new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state)
        return new_state, {"loss": loss, "correct": correct}

    rep, data = _shardings(device_mesh)
    return tuned_jit(step, in_shardings=(rep,) + (data,) * batch_arrays, out_shardings=(rep, rep), donate_argnums=0)


def _shardings(device_mesh: Mesh):
    """(replicated, split along the batch axis) over the mesh."""
    return NamedSharding(device_mesh, PartitionSpec()), NamedSharding(device_mesh, PartitionSpec(DATA_AXIS))


def make_eval_step(model: Model, image_size: Optional[int] = None, compute_dtype=jnp.float32, device_mesh: Optional[Mesh] = None):
    """Jitted ``logits(variables, images uint8 (B,h,w,3)) -> (B, num_classes) float32``, eval mode."""
    device_mesh = device_mesh or mesh()
    module, info = model.module, model.info
    image_size = input_size(model, image_size)

    def logits(variables, images):
        x = preprocess(images, info.mean, info.std, image_size, compute_dtype)
        variables = dict(variables, params=_cast(variables["params"], compute_dtype))
        return module.apply(variables, x, train=False).astype(jnp.float32)

    rep, data = _shardings(device_mesh)
    return tuned_jit(logits, in_shardings=(rep, data), out_shardings=data)


def predict(eval_step, variables, images: np.ndarray, batch_size: int, progress: Optional[Callable] = None) -> np.ndarray:
    """Logits (N, K) of uint8 images (N, h, w, 3), in fixed-size batches (the last one zero-padded)."""
    out = []
    starts = range(0, len(images), batch_size)
    for start in (progress(starts) if progress else starts):
        chunk = images[start:start + batch_size]
        pad = batch_size - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
        (chunk,) = shard_batch(chunk)
        out.append(np.asarray(eval_step(variables, chunk))[:batch_size - pad])
    return np.concatenate(out)


def _num_classes(model: Model) -> int:
    shapes = jax.eval_shape(model.module.apply, model.variables, jnp.zeros((1, 32, 32, 3), jnp.float32))
    return int(shapes.shape[-1])


# ---------------------------------------------------------------- models


def build_model(name: str, num_classes: int, class_names: Sequence[str] = (), seed: int = 0,
                pretrained: Optional[str] = None, image_size: Optional[int] = None) -> Model:
    """A `jaxcam.models` model by name with a `num_classes` head and the given class names.

    Args:
      pretrained: None (random, seeded) or any weights ``jaxcam.models.load`` accepts (a file path,
        ``"pretrained"``); every layer is loaded and the classifier is freshly initialized when the
        checkpoint's class count differs from `num_classes`.
      image_size: recorded as the model's ``input_size``.
    """
    model = loading.load(name, weights=pretrained, num_classes=num_classes, seed=seed, class_names=tuple(class_names))
    if image_size is not None:
        model = model.replace(info=dataclasses.replace(model.info, input_size=int(image_size)))
    return model


# ---------------------------------------------------------------- frozen prefix, features computed once


class FrozenPrefix:
    """`model` split at `layer`: everything up to the layer is frozen and its activations computed
    once (`features`); only the modules that run after the layer are trained (`make_train_step`).

    Uses the shared split mechanism (`jaxcam.Split`: features via ``capture_intermediates``, the
    rest via ``Split.apply_head``). Under ``jax.jit`` the prefix is dead code in the train step, so
    a step costs only the tail's forward and backward.
    """

    def __init__(self, model: Model, layer: str, image_size: Optional[int] = None):

        self.model = model
        self.image_size = input_size(model, image_size)
        self.x_shape = (1, self.image_size, self.image_size, 3)
        self.layer = check_layer(model, layer, self.x_shape)
        self.split = Split(model, self.layer, reshape=False)  # raw layer output (tokens stay tokens)
        self.tail = tail_modules(model, self.layer, self.x_shape)
        if not self.tail:
            raise ValueError(f"nothing of {model.info.name} runs after layer {'/'.join(self.layer)}; "
                             "freeze an earlier layer")

    def trainable(self, path: Tuple[str, ...]) -> bool:
        """Is the parameter at `path` (module path + name) in the trained tail?"""
        return tuple(path[:-1]) in self.tail

    def merge_stats(self, old, new):
        """BatchNorm statistics: the tail's from `new`, the frozen prefix's kept from `old`."""
        flat_old = flax.traverse_util.flatten_dict(old)
        flat_new = flax.traverse_util.flatten_dict(new)
        return flax.traverse_util.unflatten_dict(
            {k: (flat_new[k] if k[:-1] in self.tail else v) for k, v in flat_old.items()})

    def features_fn(self, device_mesh: Optional[Mesh] = None, dtype=jnp.float32):
        """Jitted ``features(variables, images uint8 (B,h,w,3), flip: bool) -> (B, h', w', C)``."""
        device_mesh = device_mesh or mesh()
        info, layer = self.model.info, self.layer

        def features(variables, images, flip):
            x = preprocess(images, info.mean, info.std, self.image_size, dtype)
            x = jnp.where(flip, x[:, :, ::-1], x)
            return Split(self.model.with_variables(variables), layer, reshape=False).features(x).astype(jnp.float32)

        rep, data = _shardings(device_mesh)
        return tuned_jit(features, in_shardings=(rep, data, rep), out_shardings=data)

    def make_train_step(self, tx: optax.GradientTransformation, label_smoothing: float = 0.0, seed: int = 0,
                        device_mesh: Optional[Mesh] = None):
        """Jitted ``step(state, features (B,h',w',C), labels) -> (state, {"loss", "correct"})``."""
        device_mesh = device_mesh or mesh()
        num_classes = _num_classes(self.model)
        split, x_shape = self.split, self.x_shape

        def loss_fn(params, batch_stats, feats, labels, step_count):
            variables = {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}
            x = jnp.zeros((feats.shape[0],) + x_shape[1:], jnp.float32)  # only the dead prefix reads it
            rngs = {"dropout": jax.random.fold_in(jax.random.key(seed), step_count)}
            if batch_stats:
                logits, updates = split.apply_head(variables, x, feats.astype(jnp.float32), train=True,
                                                   mutable=["batch_stats"], rngs=rngs)
                batch_stats = self.merge_stats(batch_stats, updates["batch_stats"])
            else:
                logits = split.apply_head(variables, x, feats.astype(jnp.float32), train=True, rngs=rngs)
            targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
            return optax.softmax_cross_entropy(logits, targets).mean(), (batch_stats, logits)

        return _jit_step(loss_fn, tx, device_mesh)

    def make_eval_step(self, device_mesh: Optional[Mesh] = None):
        """Jitted ``logits(variables, features) -> (B, num_classes)``, eval mode."""
        device_mesh = device_mesh or mesh()
        split, x_shape = self.split, self.x_shape

        def logits(variables, feats):
            x = jnp.zeros((feats.shape[0],) + x_shape[1:], jnp.float32)
            return split.apply_head(variables, x, feats.astype(jnp.float32), train=False).astype(jnp.float32)

        rep, data = _shardings(device_mesh)
        return tuned_jit(logits, in_shardings=(rep, data), out_shardings=data)


def tail_modules(model: Model, layer: Tuple[str, ...], x_shape) -> frozenset:
    """Module paths whose ``__call__`` starts after `layer`'s call has returned (abstract run)."""
    events = []

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        path = tuple(context.module.path)
        events.append(("start", path))
        out = next_fun(*args, **kwargs)
        events.append(("end", path))
        return out

    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda v, x: model.module.apply(v, x), model.variables,
                       jax.ShapeDtypeStruct(tuple(x_shape), jnp.float32))
    ends = [i for i, e in enumerate(events) if e == ("end", tuple(layer))]
    if not ends:
        raise ValueError(f"layer {'/'.join(layer)} is never called")
    return frozenset(path for kind, path in events[ends[-1] + 1:] if kind == "start")
