"""``python -m spaceport``: the same as the ``spaceport`` command."""

import sys

from .cli import main

sys.exit(main())
