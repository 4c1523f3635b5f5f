"""``python -m constructs_lib``: the command line (see :mod:`constructs_lib.cli`)."""

from __future__ import annotations

from constructs_lib.cli import main

raise SystemExit(main())
