"""The email."""
