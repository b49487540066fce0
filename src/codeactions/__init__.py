"""Code Actions: run small Python, JavaScript and Go programs as flow steps and HTTP endpoints."""

__version__ = "0.1.0"
