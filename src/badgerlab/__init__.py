"""badgerlab: learned learning algorithms in PyTorch, with one-command paper reproductions."""

__version__ = "0.1.0"
__all__ = ["__version__"]
