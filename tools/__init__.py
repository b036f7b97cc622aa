"""Helpers behind the top-level tool scripts (``demo.py``): no work at import."""
