"""The library's version, defined once: the wheel's metadata reads it (setuptools, statically),
``constructs_lib.__version__`` re-exports it. Standard library only, no imports."""

from __future__ import annotations

__version__ = "0.2.0"
