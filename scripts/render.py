"""Render CAM overlays: a thin shim over `jaxcam.cli.render` (same as ``jaxcam render``); see --help."""
import sys

from jaxcam.cli.render import main

if __name__ == "__main__":
    sys.exit(main())
