"""``python -m feedstream``: the same as the ``feedstream`` command."""

import sys

from .cli import main

sys.exit(main())
