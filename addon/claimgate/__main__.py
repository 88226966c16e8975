"""``python -m claimgate`` is the same command line as ``claimgate``."""

from claimgate.cli import main

raise SystemExit(main())
