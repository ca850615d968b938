"""The lab's session fixture (see labkit.py): `lab` brings it up or reuses it."""

from labkit import lab  # noqa: F401  (a fixture)
