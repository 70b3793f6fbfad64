"""`jaxcam train`: train or fine-tune a jaxcam model on any labelled image data, then show where it fails.

    jaxcam train --data /path/to/tree.tar.gz --model resnet18 --weights pretrained \
        --image-size 160 --epochs 20 --early-stopping 3 --out /tmp/run
    jaxcam train --config configs/recipe_c_imagenette_resnet18.yaml --epochs 5   # flags override
    jaxcam train --data tree/ --guidance-masks masks/ --guidance-method hires_cam --guidance-weight 10 \
        --out /tmp/guided   # CAM guidance: masks/train/<class>/<name>.png, white = where evidence should not be

Data (--data): an image-folder tree ``train/<class>/*`` plus ``val/<class>/*`` (or ``test/``) as a
directory, .tar(.gz) or .zip, images of any size and format; or a tensorflow-datasets name
(``cifar10``, ``imagenette/160px``, ``tfds:NAME``) downloaded and prepared when online. Class
folders named by WordNet id get their ImageNet names.

Run folder (--out): config.yaml (the resolved options: re-run with ``--config``), metrics.csv /
metrics.json, curves.png, confusion.png, per_class.csv, misclassified.png, cams.png (Grad-CAM of
the predicted class per stage), checkpoints/{last,best} (orbax). Re-running the same command
resumes from checkpoints/last: a kill loses at most the current epoch.

Bad options fail at once with one line on stderr and exit status 2; 0 means "none" for
--gallery, --early-stopping, --steps-per-epoch, --max-minutes, --train-limit, --val-limit.
From Python the same run is one call: ``jaxcam.train.fit(data, out, **options)``.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, Optional, Sequence

from jaxcam import config as C
from jaxcam.cli import common
from jaxcam.data.sources import DataNotFoundError
from jaxcam.train import CheckpointMismatchError, run
from jaxcam.train.options import OPTIONS, validate, with_defaults  # noqa: F401  (OPTIONS, validate: re-exported)


def build_parser(prog: str = "train", defaults: Optional[Dict[str, Any]] = None,
                 description: str = __doc__) -> C.OneLineParser:
    return C.parser(prog, with_defaults(defaults), description=description)


def main(argv: Optional[Sequence[str]] = None, prog: str = "train", defaults: Optional[Dict[str, Any]] = None,
         description: str = __doc__) -> int:
    """Run the command; returns the exit status (0 ok, 2 bad input). Bugs raise (traceback, status 1)."""
    common.reuse_host_memory()  # before JAX runs
    options = with_defaults(defaults)
    args = C.parser(prog, options, description=description).parse_args(argv)
    try:
        cfg, where = C.resolve(options, args)
        cfg = validate(cfg, where, options)
        for note in C.deprecations(where, options):
            print(f"{prog}: {note}", file=sys.stderr)
        result = run(cfg, where, options)
    except (C.ConfigError, DataNotFoundError, CheckpointMismatchError, ValueError) as e:
        # ValueError: bad input found deeper (e.g. an unreadable image); one line too
        common.error_line(prog, e)
        return 2
    return 0 if result is not None else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
