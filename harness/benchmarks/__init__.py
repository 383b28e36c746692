"""The shipped benchmark protocols (``*.toml``), read by :mod:`harness.protocols`; no code."""
