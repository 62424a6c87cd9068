"""Strict input."""
