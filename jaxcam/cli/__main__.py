import sys

from jaxcam.cli import main

sys.exit(main())
