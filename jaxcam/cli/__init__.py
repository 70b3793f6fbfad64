"""The ``jaxcam`` command: ``jaxcam <command> [options]``; each command is a module with ``main(argv) -> int``.

    jaxcam render --method grad_cam photos/
    jaxcam evaluate --data images/ --method all
    jaxcam train --config configs/recipe_c_imagenette_resnet18.yaml --data imagenette2-160.tgz --out runs/c
    jaxcam finetune --model resnet20 --epochs 30 --out runs/r20      # the CIFAR-10 preset of train

Commands are imported only when run. To add one, add a line to `COMMANDS`.
"""
from __future__ import annotations

import difflib
import importlib
import sys
from typing import Optional, Sequence

COMMANDS = {
    "render": "jaxcam.cli.render",
    "evaluate": "jaxcam.cli.evaluate",
    "train": "jaxcam.cli.train",
    "finetune": "jaxcam.cli.finetune",
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = f"usage: jaxcam {{{','.join(COMMANDS)}}} [options]   (jaxcam <command> --help for each)"
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        print(f"error: unknown command {name!r}.{hint} Commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return int(importlib.import_module(COMMANDS[name]).main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
