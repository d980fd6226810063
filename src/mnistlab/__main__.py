"""`python -m mnistlab` runs the command line."""

import sys

from mnistlab.cli import main

sys.exit(main())
