"""`batchemo.results.load`, the path the README documented: output.read holds it."""

from batchemo.output.read import load

__all__ = ["load"]
