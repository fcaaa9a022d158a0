"""The ``budgetclient`` command: one module per subcommand, each with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .._guard import guarded
from ..errors import BudgetClientError

__all__ = ["main"]

# subcommand name -> module under budgetclient.cli; a module that is missing is skipped
_COMMANDS = ("demo", "report", "prices", "estimate", "check", "fake_server", "limits")


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or with ``only`` that subcommand's alone (the others' modules not imported:
    ``report`` and ``check`` run in a fresh process each time, and the planner's imports are most of
    a short command's start-up)."""
    parser = argparse.ArgumentParser(
        prog="budgetclient",
        description="Measure, attribute and reduce LLM token spend (see `budgetclient COMMAND --help`).",
    )
    parser.add_argument("--version", action=_VersionAction, help="show program's version number and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in (only,) if only else _COMMANDS:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith(f"{__name__}.{name}"):
                continue
            raise
        module.register(subparsers)
    return parser


def _command(arguments: Sequence[str]) -> str | None:
    """The subcommand named first, if it is one (then its parser is all that is built)."""
    first = arguments[0] if arguments else None
    return first if first in _COMMANDS else None


class _VersionAction(argparse.Action):
    """``--version``: the version is looked up only when asked for (the distribution's metadata
    lookup costs every other command ~10 ms of start-up)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        help_text = str(kwargs.get("help"))
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help_text)

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        sys.stdout.write(f"{parser.prog} {_version()}\n")
        parser.exit()


def _version() -> str:
    """The installed distribution's version (what pip reports), else the package's own."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("budgetclient")
    except PackageNotFoundError:
        from .. import __version__

        return __version__


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time (it may be swapped after configuration)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _quiet_logs() -> None:
    """In the CLI, library log events go to stderr, warnings and up only (stdout is for results)."""
    import logging

    import structlog

    if not structlog.is_configured():
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            logger_factory=structlog.PrintLoggerFactory(_CurrentStderr()),  # type: ignore[arg-type]
        )


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_logs()
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command(arguments))
    args = parser.parse_args(arguments)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        result = args.func(args)
    except (CommandError, BudgetClientError, FileNotFoundError, PermissionError) as exc:
        print(f"budgetclient {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"budgetclient {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        with guarded("cli.flush_failed"):
            from ..ledger.writer import flush

            flush(10)
    return int(result or 0)
