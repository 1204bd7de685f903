"""Fixtures chain openbao -> postgres -> app -> client -> logged_in_client (see tests/harness)."""

pytest_plugins = [
    "tests.harness.leaks",
    "tests.harness.openbao",
    "tests.harness.postgres",
    "tests.harness.app",
    "tests.harness.dynamic_db",
    "pytester",
]
