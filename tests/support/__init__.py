"""Shared test helpers: ports, servers, feed documents, hubs (no fixtures: conftest.py)."""
