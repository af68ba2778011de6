"""``nexus-schedctl``: argument parsing and dispatch.

Each command lives in its own module under :mod:`nexus_schedd.cli`, which
exposes ``register(subparsers)``; the parser it adds sets ``func`` to a callable
taking the parsed arguments and returning the exit code.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any

from nexus_schedd import __version__
from nexus_schedd.cli import daemon, export, jobs, preview, runs, watch
from nexus_schedd.control.client import DEFAULT_TIMEOUT_S
from nexus_schedd.errors import EXIT_USAGE, SchedulerError

COMMAND_MODULES = (daemon, jobs, runs, watch, export, preview)


# A dash followed by a digit: a UTC offset or a negative number (``-03:30``,
# ``-0330``, ``-5``). No option of nexus-schedctl is spelled like that.
_DASH_VALUE = re.compile(r"-\d")


class _Parser(argparse.ArgumentParser):
    """argparse that exits with the usage code of SPEC section 7 (2) on bad usage,
    and reads ``-03:30`` as a value, never as an option."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def _parse_optional(self, arg_string: str) -> Any:
        # argparse takes any word starting with "-" for an option unless it is a
        # plain negative number, so "--tz -03:30" failed with "expected one
        # argument". Every option taking a time, an offset or a zone (and every
        # other) goes through here, subcommands included (parser_class=_Parser).
        if _DASH_VALUE.match(arg_string):
            return None
        return super()._parse_optional(arg_string)


def build_parser() -> argparse.ArgumentParser:
    """The full ``nexus-schedctl`` parser."""
    parser = _Parser(
        prog="nexus-schedctl",
        description="Control a running nexus-schedd daemon (preview works without one).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help="control socket (default: $NEXUS_SCHEDD_SOCKET, else the user or system socket)",
    )
    parser.add_argument("--json", action="store_true", help="print the protocol's JSON")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help="seconds to wait for the daemon",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for module in COMMAND_MODULES:
        module.register(subparsers)
    for command in subparsers.choices.values():
        _accept_global_options(command)
    return parser


def _accept_global_options(command: argparse.ArgumentParser) -> None:
    """Let --socket, --json and --timeout also follow the command (``list --json``).

    SUPPRESS keeps the value given before the command when the option is not
    repeated after it; a command that defines an option of its own (``add
    --timeout`` is the job's timeout) keeps its meaning.
    """
    options: list[tuple[str, dict[str, object]]] = [
        ("--socket", {"metavar": "PATH", "help": "control socket"}),
        ("--json", {"action": "store_true", "help": "print the protocol's JSON"}),
        ("--timeout", {"type": float, "metavar": "S", "help": "seconds to wait for the daemon"}),
    ]
    taken = set(command._option_string_actions)
    for flag, extra in options:
        if flag not in taken:
            command.add_argument(flag, default=argparse.SUPPRESS, **extra)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nexus-schedctl``."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except SchedulerError as exc:
        print(f"nexus-schedctl: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``watch | head``): not an error of ours.
        sys.stderr.close()
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
