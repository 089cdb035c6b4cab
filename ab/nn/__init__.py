"""LEMUR-compatible model zoo for facial age estimation (the ``ab.nn`` package)."""

__version__ = "0.1.0"
