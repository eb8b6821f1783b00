"""Ronin: the scout of a kOS network."""

__version__ = "0.1.0"
