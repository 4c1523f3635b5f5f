"""Helpers shared by the test modules (imported as ``tests.helpers``; conftest holds only fixtures)."""
