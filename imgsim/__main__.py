"""Entry point for ``python -m imgsim``."""

import sys

from imgsim.cli import main

sys.exit(main())
