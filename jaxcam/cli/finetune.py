"""`jaxcam finetune`: the CIFAR-10 preset of `jaxcam train` (same options, CIFAR-10 defaults).

    jaxcam finetune --data cifar10_jpg_tree.tar.gz --model resnet20 --epochs 30 --out /tmp/r20

Defaults: CIFAR ResNet-20 at 32 px, SGD Nesterov 0.1, cosine with 1 warmup epoch, weight decay 5e-4,
random crop (padding 4) + horizontal flip, 30 epochs; data: tensorflow-datasets' ``cifar10`` unless
--data names a local copy (an image-folder tree or its archive). Every option of `jaxcam train`
works (``--config``, schedules, early stopping, ``--freeze``, ...); see ``--help``.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from jaxcam.cli import train as _train

PRESET = {
    "data": "cifar10",
    "model": "resnet20",
    "image_size": 32,
    "epochs": 30,
    "batch_size": 128,
    "optimizer": "sgd",
    "schedule": "cosine",
    "warmup_epochs": 1.0,
    "weight_decay": 5e-4,
    "augment": {"random_crop": {"padding": 4}, "horizontal_flip": {}},
    "out": "runs/cifar10",
}


def main(argv: Optional[Sequence[str]] = None, prog: str = "finetune") -> int:
    return _train.main(argv, prog=prog, defaults=PRESET, description=__doc__)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
