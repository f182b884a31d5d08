"""``python -m headscope``: the command line."""

import sys

from headscope.app.cli import main

sys.exit(main())
