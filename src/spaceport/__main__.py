"""``python -m spaceport``: the same as the ``spaceport`` command."""

import sys

from . import cli

sys.exit(cli.main())
