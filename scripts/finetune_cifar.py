"""Train or fine-tune a jaxcam model on CIFAR-10: the CIFAR-10 preset of scripts/train.py (--help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcam.cli.finetune import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="finetune_cifar.py"))
