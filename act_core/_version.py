"""Version of the ``act_core`` package, recorded in every map file it writes."""

__all__ = ["__version__"]

__version__ = "0.1.0"
