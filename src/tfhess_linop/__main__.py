"""``python -m tfhess_linop``: the ``tfhess-linop`` command."""

import sys

from .cli import main

sys.exit(main())
