"""Entry point for ``python -m imgsim``."""

import sys

from .cli import main

sys.exit(main())
