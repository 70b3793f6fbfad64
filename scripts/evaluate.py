"""Faithfulness metrics of CAM methods: a thin shim over `jaxcam.cli.evaluate` (``jaxcam evaluate``); see --help."""
import sys

from jaxcam.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
