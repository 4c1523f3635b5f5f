"""The handler's logic, importable without crhelper: ``index.py`` in the asset is its entry point.

Submodules are imported on demand (``from appstream_handler import rules`` needs nothing but the
standard library). Inside the package every import is relative, so the same files work as the
asset's top-level ``appstream_handler`` package and as a subpackage of the construct library,
which reuses AppStream's rules, the state store's schema and the decision logic from here.
"""
