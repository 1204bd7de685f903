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
    paths = [".data/backups/vault-1.snap", "backups/vault-1.snap", "vault-backup.snap"]
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


# What the original design document names (its interface contract, issue 10); the docs'
# own map of it is VAULT_INTEGRATION.md, "Coming from the design document".
DESIGN_FILES = [
    "docker-compose.vault.yaml", "docker-compose.yaml", "setup.sh", ".env.example", ".gitignore",
    "vault/config/vault-config.hcl", "vault/policies/app-policy.hcl",
    "vault/policies/admin-policy.hcl", "vault/scripts/init-vault.sh",
    "vault/scripts/unseal-vault.sh", "vault/scripts/rotate-secret-id.sh",
    "be_flask/requirements.txt", "be_flask/src/vault_client.py", "be_flask/src/config.py",
    "be_flask/src/auth.py", "be_flask/src/db_utils.py", "be_flask/src/be.py", "README.md",
    "VAULT_INTEGRATION.md",
]  # fmt: skip
DESIGN_COMMANDS = [
    "docker compose -f docker-compose.vault.yaml up -d", "docker compose up -d",
    "vault kv patch secret/app/flask key=value", "vault kv get secret/database/postgres",
    "gunicorn 'src.be:create_app()'", "docker compose logs backend \\| grep Vault",
    "get_vault_client", "get_config()", "get_jwt_secret()",
]  # fmt: skip


def test_coming_from_the_design_document_finds_everything_it_names() -> None:
    from src.vault.approle import LOGIN_REFUSED
    from src.vault.client import VAULT_ENABLED, VAULT_FALLBACK

    section = INTEGRATION.split("## Coming from the design document", 1)[1]
    for path in DESIGN_FILES:
        assert (ROOT / path).is_file(), path
        assert f"`{path}`" in section or f"`{Path(path).name}`" in section, path
    for command in DESIGN_COMMANDS:
        assert command in section, command
    for line in (VAULT_ENABLED, VAULT_FALLBACK, LOGIN_REFUSED):
        assert f"`{line}`" in section and line in README, line
    for change in ("Raft instead of file storage", "OpenBao by default",
                   "Renewal at a third of the TTL", "Stale-if-error before fallback"):  # fmt: skip
        assert change in section, change


def test_readme_gives_each_vault_command_in_both_spellings() -> None:
    """Every `vault ...` command line of the README has its bundled-bao twin, same arguments."""
    lines = [
        line
        for block in re.findall(r"```sh\n(.*?)```", README, re.S)
        for line in block.splitlines()
    ]
    vault_lines = [line for line in lines if re.search(r"(^|&& )vault ", line)]
    assert len(vault_lines) >= 4, vault_lines  # kv get, kv patch, seal, snapshot
    for line in vault_lines:
        assert line.replace("vault ", ".venv/bin/bao ", 1) in lines, line
    assert "vault kv get secret/database/postgres" in README
    assert re.search(r"vault kv patch secret/app/flask \w+=", README)


def test_every_script_option_in_the_docs_is_in_its_help() -> None:
    """`rotate-jwt-key.sh --rollback N --compromised` and the like: each option is in --help."""
    mentions = re.findall(r"\b([a-z-]+\.sh)((?: --[a-z-]+(?: [A-Z0-9]+)?)+)", README + INTEGRATION)
    checked = set()
    for script, options in mentions:
        path = ROOT / "vault" / "scripts" / script
        if script == "setup.sh" or not path.is_file():
            continue  # setup.sh has its own test; fe_apache's scripts take no --help
        help_text = subprocess.run(
            [str(path), "--help"], capture_output=True, text=True, check=True
        ).stdout
        for option in re.findall(r"--[a-z-]+", options):
            assert option in help_text, f"{script} {option}"
            checked.add((script, option))
    assert ("rotate-jwt-key.sh", "--compromised") in checked  # the scan works


def test_the_fault_table_has_every_row_and_nothing_lost() -> None:
    """`make chaos` writes it (tests/chaos/test_fault_matrix.py): every row, 0 lost, 0 twice."""
    from tests.chaos.test_fault_matrix import ROWS, TABLE_END, TABLE_START

    table = INTEGRATION[INTEGRATION.index(TABLE_START) : INTEGRATION.index(TABLE_END)]
    lines = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]
    assert [(c[0], c[1]) for c in cells] == [(row.dependency, row.fault) for row in ROWS]
    for row in cells:
        assert (row[7], row[8], row[9]) == ("0", "0", "0"), row  # lost, twice, rules broken
