"""The jaxprov version: a leaf module, so that anything may record it without importing the package."""

__version__ = "0.1.0"
