"""End-to-end tests (a package, so that its conftest is not the ``conftest`` other test trees import)."""
