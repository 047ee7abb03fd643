"""cldash: see how low-rank adapters forget."""

__version__ = "0.4.0"
