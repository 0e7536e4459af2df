"""rnnc's version: its own module, so that reading it loads nothing else (pyproject.toml
reads it too: [tool.setuptools.dynamic])."""
__version__ = "0.1.0"
