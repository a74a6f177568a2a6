"""Harnesses and signal helpers shared by the tests and the benches.

Helpers live here and fixtures in tests/conftest.py, so no test module imports another one.
"""
