"""The project's version, in one place: pyproject.toml reads it (setuptools dynamic version)."""
__version__ = "0.1.0"
