"""``python -m backtrack_sampler``: the ``backtrack-sampler`` command line."""

import sys

from backtrack_sampler.cli import main

sys.exit(main())
