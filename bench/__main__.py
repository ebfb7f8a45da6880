"""``python -m bench``: the load bench's command line (see ``bench.cli``)."""

import sys

from orpipe.bench.cli import main

sys.exit(main())
