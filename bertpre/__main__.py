"""`python -m bertpre` runs the CLI."""

import sys

from bertpre.cli import main

sys.exit(main())
