"""The command line: verbs as subcommands, and the flag forms setup.sh has always accepted.

`./setup.sh --stop vault` and `./setup.sh stop vault` mean the same: the old flag forms are
turned into command words first (`to_verb_form`), then one argparse parser reads the rest.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from orchestration.console import SetupError, error_line, prog
from orchestration.options import VERBS, Options, parse_replicas
from orchestration.usage import USAGE

VERB_FLAGS = {
    "--stop": "stop",
    "--status": "status",
    "--restart-app": "restart-app",
    "--backup": "backup",
    "--restore": "restore",
    "--reset": "reset",
}
VALUE_OPTIONS = {"-p": "a name", "--project-name": "a name", "--replicas": "a number"}


def _verb_argument(verb: str, following: str) -> bool:
    """`stop vault` and `backup DIR` take one word after them; nothing else does."""
    if verb == "stop":
        return following == "vault"
    return verb in ("backup", "restore") and following != "" and not following.startswith("-")


def to_verb_form(argv: Sequence[str]) -> list[str]:
    """[VERB, its argument if any, the options]: the last verb given wins, `up` by default."""
    verb, verb_args, rest = "up", [], []
    index = 0
    if argv and argv[0] in VERBS:
        verb, index = argv[0], 1
        if index < len(argv) and _verb_argument(verb, argv[index]):
            verb_args, index = [argv[index]], index + 1
    while index < len(argv):
        arg = argv[index]
        following = argv[index + 1] if index + 1 < len(argv) else ""
        if arg in VALUE_OPTIONS:
            if index + 1 >= len(argv):
                raise SetupError(f"{arg} needs {VALUE_OPTIONS[arg]} (see --help)")
            rest += [arg, following]
            index += 2
            continue
        if arg in VERB_FLAGS:
            verb, verb_args = VERB_FLAGS[arg], []
            if _verb_argument(verb, following):
                verb_args, index = [following], index + 1
        else:
            rest.append(arg)
        index += 1
    return [verb, *verb_args, *rest]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise SetupError(f"{message} (see --help)")


def _common_options() -> _Parser:
    """The options every command takes (each remembered or ignored as its help says)."""
    common = _Parser(add_help=False, allow_abbrev=False)
    add = common.add_argument
    add("--local", dest="mode", action="store_const", const="local")
    add("--docker", dest="mode", action="store_const", const="docker")
    add("-p", "--project-name", dest="project_name")
    add("--replicas")
    for flag in ("--ha", "--auto-unseal", "--modsecurity", "--no-apache", "--sqlite", "--yes"):
        add(flag, action="store_true")
    add("--tls", dest="tls", action="store_const", const="tls")
    add("--mtls", dest="tls", action="store_const", const="mtls")
    add("--no-tls", dest="tls", action="store_const", const="off")
    return common


def build_parser() -> argparse.ArgumentParser:
    """One subcommand per verb, all sharing the common options (a new verb: one line here
    and a method of the same name on both modes)."""
    common = _common_options()
    parser = _Parser(prog=prog(), add_help=False, allow_abbrev=False)
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    for verb in VERBS:
        sub = verbs.add_parser(verb, parents=[common], add_help=False, allow_abbrev=False)
        if verb == "stop":
            sub.add_argument("what", nargs="?", choices=["vault"])
        elif verb == "backup":
            sub.add_argument("directory", nargs="?")
        elif verb == "restore":
            sub.add_argument("restore_dir", nargs="?")
    return parser


def parse(argv: Sequence[str], environ: dict[str, str] | None = None) -> Options | None:
    """The options of a command line; None when it asks for --help."""
    environ = dict(os.environ) if environ is None else environ
    if "-h" in argv or "--help" in argv:
        return None
    words = to_verb_form(argv)
    namespace, unknown = build_parser().parse_known_args(words)
    if unknown:
        raise SetupError(f"unknown option '{unknown[0]}' (see --help)")
    replicas = None if namespace.replicas is None else parse_replicas(namespace.replicas)
    return Options(
        verb=namespace.verb,
        mode=namespace.mode,
        replicas=replicas,
        ha=namespace.ha,
        auto_unseal=namespace.auto_unseal,
        tls=namespace.tls,
        modsecurity=namespace.modsecurity,
        no_apache=namespace.no_apache,
        sqlite=namespace.sqlite,
        yes=namespace.yes,
        stop_vault_only=getattr(namespace, "what", None) == "vault",
        backup_dir=getattr(namespace, "directory", None),
        restore_dir=getattr(namespace, "restore_dir", None),
        project_name=namespace.project_name or environ.get("COMPOSE_PROJECT_NAME", ""),
    )


def main(argv: Sequence[str]) -> int:
    """Run one command; a SetupError is one line on stderr and exit status 1."""
    from orchestration.commands import run  # here: --help and bad flags need no mode loaded

    try:
        options = parse(argv)
        if options is None:
            print(USAGE.format(prog=prog()), end="")
            return 0
        run(options)
    except SetupError as failure:
        error_line(str(failure))
        return 1
    except KeyboardInterrupt:
        error_line("interrupted")
        return 130
    except BrokenPipeError:
        # The reader went away (`./setup.sh --status | head`): stop quietly, as a shell does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as failure:
        # A file or directory we could not use (permissions, a full disk): one line, no trace.
        error_line(str(failure))
        return 1
    return 0
