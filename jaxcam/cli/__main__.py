"""`python -m jaxcam.cli COMMAND ...`."""
import sys

from jaxcam.cli import main

if __name__ == "__main__":
    sys.exit(main())
