"""``python -m attnforge.cli``: the ``attnforge`` command."""

import sys

from attnforge.cli import main

sys.exit(main())
