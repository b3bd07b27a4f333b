"""Fixtures of the end-to-end tests: a private broker per test."""

from e2e.broker import broker

__all__ = ["broker"]
