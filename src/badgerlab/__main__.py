"""`python -m badgerlab` runs the command-line tool."""

import sys

from badgerlab.cli import main

sys.exit(main())
