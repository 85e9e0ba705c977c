"""Atrium: HR data, certificates, market data and templates behind one REST API."""

__version__ = "0.1.0"
