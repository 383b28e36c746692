"""aigi-harness: a benchmark harness for AI-generated-image detectors."""

from harness.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
