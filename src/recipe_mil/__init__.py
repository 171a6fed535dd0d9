"""recipe-mil: recipe-based synthetic patients for data-scarce multiple instance learning."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("recipe-mil")
except PackageNotFoundError:  # running from a source tree inside a per-rule conda env
    __version__ = "0.1.0"

__all__ = ["__version__"]
