"""Compose wrapper (python-on-whales) and the compose files it runs."""
