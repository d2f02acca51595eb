"""`python -m pipeline ...` is the `toonbeam` command."""
import sys

from pipeline.cli import main

sys.exit(main())
