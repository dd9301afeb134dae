"""selfheal: a DVC pipeline that fixes bad data, refuses bad models, retrains on drift and keeps its service up."""

__version__ = "0.1.0"
