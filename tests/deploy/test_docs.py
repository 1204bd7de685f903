"""The docs promise what the code does: commands, options and variables that exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
INTEGRATION = (ROOT / "VAULT_INTEGRATION.md").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
DESIGN_ENV = [
    "VAULT_ADDR", "VAULT_ROLE_ID", "VAULT_SECRET_ID", "VAULT_SECRET_ID_FILE", "VAULT_CACERT",
    "VAULT_CLIENT_CERT", "VAULT_CLIENT_KEY", "VAULT_CACHE_TTL", "APP_ENV", "SECRET_KEY",
    "DATABASE_URL", "ADMIN_PASSWORD", "USER_PASSWORD",
]  # fmt: skip


def test_readme_gives_the_two_setup_commands() -> None:
    assert "./setup.sh\nmake test\n" in README
    assert "`make test`" in README


def test_every_setup_option_in_the_docs_exists() -> None:
    help_text = subprocess.run(
        [str(ROOT / "setup.sh"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in set(re.findall(r"\./setup\.sh (--[a-z-]+)", README + INTEGRATION)):
        assert option in help_text, option


def test_every_script_in_the_docs_exists() -> None:
    for script in set(re.findall(r"vault/scripts/[a-z-]+\.sh", README + INTEGRATION)):
        assert (ROOT / script).is_file(), script


def test_env_example_documents_every_design_variable_without_values() -> None:
    assigned = dict(re.findall(r"^#? ?([A-Z_]+)=(.*)$", ENV_EXAMPLE, re.M))
    for name in DESIGN_ENV:
        assert name in assigned, name
    for name in ("VAULT_ROLE_ID", "VAULT_SECRET_ID", "SECRET_KEY", "DATABASE_URL",
                 "ADMIN_PASSWORD", "USER_PASSWORD", "VAULT_TOKEN"):  # fmt: skip
        assert assigned[name] == "", f"{name} has a value in .env.example"


def test_env_example_lines_each_have_a_comment_above() -> None:
    lines = ENV_EXAMPLE.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[A-Z_]+=", line):
            above = lines[index - 1]
            assert above.startswith("#") or re.match(r"^[A-Z_]+=", above), line


def _variables_read(path: Path) -> set[str]:
    """Names of environment variables a Python file reads, as its source spells them."""
    text = path.read_text()
    names = set(
        re.findall(
            r'(?:os\.environ\.get\(|os\.environ\[|env\.get\(|\(env, |_env\()"([A-Z_]+)"', text
        )
    )
    env_keys = re.search(r"_ENV_KEYS = \((.*?)\)", text, re.S)
    return names | set(re.findall(r'"([A-Z_]+)"', env_keys.group(1) if env_keys else ""))


def test_env_example_documents_every_variable_the_backend_reads() -> None:
    sources = [*(ROOT / "be_flask" / "src").rglob("*.py"), ROOT / "be_flask" / "gunicorn.conf.py"]
    read = set().union(
        *(_variables_read(path) for path in [*sources, ROOT / "fe_apache" / "ui_wsgi.py"])
    )
    assert {
        "VAULT_ADDR",
        "VAULT_CACHE_TTL",
        "APP_ENV",
        "GUNICORN_WORKERS",
    } <= read  # the scan works
    read.discard("BACKEND_METRICS_DIR_OWNED")  # set by gunicorn.conf.py for itself, not a setting
    documented = set(re.findall(r"^#? ?([A-Z_]+)=", ENV_EXAMPLE, re.M))
    assert sorted(read - documented) == []


def test_vault_snapshots_are_never_one_git_add_away_from_a_commit() -> None:
    paths = [".data/backups/vault-20260101.snap", "backups/vault-20260101.snap", "vault-backup.snap"]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ignored.stdout.split() == paths
    backups = [line for line in README.splitlines() if "raft snapshot save" in line]
    assert backups and all('".data/backups/vault-' in line for line in backups), backups
