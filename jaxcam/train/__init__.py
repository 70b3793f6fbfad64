"""Training of image classifiers built by `jaxcam.models`, usable from Python in one call:

    import jaxcam.train
    summary = jaxcam.train.fit("cifar10_tree.tar.gz", "runs/r20", model="resnet20", epochs=30,
                               progress=lambda record: print(record["epoch"], record["val_acc"]))

`fit` runs data -> loop -> evaluation -> early stopping -> checkpoints -> reports and resumes an
interrupted run from its folder. Its options (`OPTIONS`, one declaration) are also the flags and
YAML keys of ``jaxcam train``. The pieces, for your own loop:

- `steps`: optimizer + schedule, jitted train/eval steps over all local devices, `FrozenPrefix`;
- `checkpoints`: orbax checkpoints of a run (`Checkpoints`, `load_checkpoint`);
- `reports`: metrics.csv/json, curves, confusion matrix, misclassified images, CAMs per stage;
- `options`: the run's options, their checks and every default (image size included), decided once.
"""
from jaxcam.train.steps import (  # noqa: F401
    DATA_AXIS, SCHEDULES, FrozenPrefix, Guidance, Plateau, TrainState, augment_uint8, build_model, init_state, input_size, make_eval_step,
    make_optimizer, make_schedule, make_train_step, mesh, predict, preprocess, replicate, reuse_host_memory,
    set_lr_scale, shard_batch, tail_modules,
)
from jaxcam.train.checkpoints import (  # noqa: F401
    CheckpointMismatchError, Checkpoints, check_meta, load_checkpoint,
)
from jaxcam.train.options import OPTIONS  # noqa: F401
from jaxcam.train.loop import fit, run  # noqa: F401
