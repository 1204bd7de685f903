"""Fixtures for a private PostgreSQL cluster with scram-sha-256 password auth."""
