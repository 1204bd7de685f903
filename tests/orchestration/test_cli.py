"""Flag parsing and validation: the old flag forms and the command words mean the same."""

from __future__ import annotations

import pytest

from orchestration.cli import parse, to_verb_form
from orchestration.console import SetupError
from orchestration.options import Options


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ([], ["up"]),
        (["--status"], ["status"]),
        (["--stop", "vault"], ["stop", "vault"]),
        (["--local", "--stop"], ["stop", "--local"]),
        (["--backup", "/tmp/b", "--local"], ["backup", "/tmp/b", "--local"]),
        (["--backup", "--local"], ["backup", "--local"]),
        (["-p", "--status"], ["up", "-p", "--status"]),
        (["stop", "vault", "--docker"], ["stop", "vault", "--docker"]),
        (["--status", "--restart-app"], ["restart-app"]),
    ],
)
def test_old_flags_become_command_words(argv: list[str], words: list[str]) -> None:
    assert to_verb_form(argv) == words


def test_flags_fill_one_options_value() -> None:
    argv = ["--local", "--ha", "--tls", "-p", "two", "--replicas", "3", "--yes", "--sqlite"]
    assert parse(argv, {}) == Options(
        mode="local", ha=True, tls="tls", project_name="two", replicas=3, yes=True, sqlite=True
    )
    assert parse(["--stop", "vault"], {}) == Options(verb="stop", stop_vault_only=True)
    assert parse(["backup", "DIR"], {}) == Options(verb="backup", backup_dir="DIR")
    assert parse(["--no-tls", "--mtls"], {}) == Options(tls="mtls")  # the last one wins
    assert parse([], {"COMPOSE_PROJECT_NAME": "env"}) == Options(project_name="env")
    assert parse(["--status", "--help"], {}) is None


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--bogus"], "unknown option '--bogus' (see --help)"),
        (["--replicas", "0"], "--replicas takes a whole number from 1 to 16, not '0'"),
        (["--replicas", "017"], "--replicas takes a whole number from 1 to 16, not '017'"),
        (["--replicas", "17"], "--replicas takes a whole number from 1 to 16, not '17'"),
        (["--replicas"], "--replicas needs a number (see --help)"),
        (["-p"], "-p needs a name (see --help)"),
    ],
)
def test_bad_command_lines_are_one_clear_error(argv: list[str], error: str) -> None:
    with pytest.raises(SetupError) as raised:
        parse(argv, {})
    assert str(raised.value) == error


@pytest.mark.parametrize("option", ["--auto-unseal", "--mtls"])
def test_local_only_options_are_refused_for_docker(option: str) -> None:
    options = parse(["--docker", option], {})
    assert options is not None
    with pytest.raises(SetupError, match=f"{option} is a local-mode option"):
        options.refuse_local_only_options()


def test_main_prints_help_and_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    from orchestration.cli import main

    assert main(["--help"]) == 0
    shown = capsys.readouterr().out
    for option in ("--local", "--docker", "--stop vault", "--backup [DIR]", "--replicas N"):
        assert option in shown
    assert main(["--local", "--bogus"]) == 1
    assert capsys.readouterr().err == "setup.sh: error: unknown option '--bogus' (see --help)\n"
