"""Fixtures chain openbao -> postgres -> app -> client -> logged_in_client (see tests/harness)."""

import os

import pytest

pytest_plugins = [
    "tests.harness.leaks",
    "tests.harness.openbao",
    "tests.harness.postgres",
    "tests.harness.app",
    "tests.harness.dynamic_db",
    "pytester",
]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Under CI a skip is a failure: whatever was missing, .ci/run should have installed it."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CI") == "true" and skipped and session.exitstatus == pytest.ExitCode.OK:
        print(f"\nCI: {skipped} skipped, and under CI nothing may skip")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
