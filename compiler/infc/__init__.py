"""infc: a declarative compiler for ML inference (spec -> plan -> passes -> gates -> bundle)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
