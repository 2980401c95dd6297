"""``python -m feedstream``: the same as the ``feedstream`` command."""

import sys

from feedstream.cli.commands import main

sys.exit(main())
