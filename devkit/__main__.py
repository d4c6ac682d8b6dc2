"""``python -m devkit COMMAND``: see ``devkit.cli``."""

import sys

from devkit.cli import main

sys.exit(main())
