"""Train or fine-tune a jaxcam model on any labelled image data (see `jaxcam.cli.train`; --help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxcam.cli.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="train.py"))
