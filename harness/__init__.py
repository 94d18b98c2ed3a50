"""A benchmark harness for meta-learning: suites and learners meet through `harness.protocols`, found as plugins."""
from harness.hookspecs import hookimpl

__all__ = ["hookimpl"]
__version__ = "0.1.0"
