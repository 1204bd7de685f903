"""Fixtures for a real OpenBao server (see DESIGN.md, test harness)."""
