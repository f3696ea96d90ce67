"""`mcmc-llm` command line: one sub-command per module in `mcmc_llm.commands`.

Each command module defines `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`.

Errors never end in a traceback (pass `--debug` to see one): a bad flag is one line naming it plus a
pointer to `--help` (exit 2); a bad value, path, model, device or input file is one line
`mcmc-llm COMMAND: error: ...` (exit 2); Ctrl-C is one line (exit 130; what was already written is
kept, see each command); a closed output pipe (`mcmc-llm exact ... | head`) is one line (exit 1);
anything unexpected is one line naming the exception (exit 1).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMAND_MODULES = ("sample", "exact", "diagnose", "run", "grade")
MAX_MESSAGE_LINES = 4
EXIT_USAGE, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("mcmc_llm")
    except Exception:  # not installed (run from a checkout)
        return "unknown"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawTextHelpFormatter):
    """Keeps the line breaks of multi-line help texts (e.g. the model-spec grammar) and shows a flag's
    default only where it says something: not for flags that store True/False, not for None, and
    not when the help text already states its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or any(default is value for value in (None, False, True, argparse.SUPPRESS))
                or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
                or (isinstance(default, list) and not default)):
            return text
        return super()._get_help_string(action)


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors lead with the message: `PROG: error: MESSAGE` and a pointer to
    `PROG --help`, instead of the whole usage block first."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\nsee `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="mcmc-llm", description="Markov chain Monte Carlo over language-model outputs (power sampling p^alpha)."
    )
    parser.add_argument("--version", action="version", version=f"mcmc-llm {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = {}  # name -> sub-parser, so errors about a command's flags come from its parser
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"mcmc_llm.commands.{module_name}")
        except ModuleNotFoundError as error:
            if error.name == f"mcmc_llm.commands.{module_name}":
                continue
            raise
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP,
                                    formatter_class=_HelpFormatter)
        module.add_arguments(sub)
        sub.add_argument("--debug", action="store_true", help="show the full traceback of an error")
        sub.set_defaults(handler=module.run)
        parser.commands[module.NAME] = sub
    return parser


def _short(message: str) -> str:
    """At most MAX_MESSAGE_LINES lines of an error message."""
    lines = [line.rstrip() for line in str(message).strip().splitlines() if line.strip()] or ["(no message)"]
    if len(lines) > MAX_MESSAGE_LINES:
        lines = lines[: MAX_MESSAGE_LINES - 1] + ["... (rerun with --debug for the full message)"]
    return "\n".join(lines)


def _user_error_types() -> tuple[type, ...]:
    """Exceptions that mean bad input (reported without "internal"): bad values, paths, configs, models."""
    types: list[type] = [ValueError, OSError, RuntimeError]  # RuntimeError: a model that cannot be loaded
    try:
        from mcmc_llm.evaluation.config import ConfigError

        types.append(ConfigError)
    except Exception:
        pass
    return tuple(types)


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = "mcmc-llm" + (f" {argv[0]}" if argv and argv[0] in COMMAND_MODULES else "")
    debug = "--debug" in argv
    from mcmc_llm.core.deprecation import one_line_warnings

    one_line_warnings(prog)
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:
            parser.commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
        prog, debug = f"mcmc-llm {args.command}", bool(getattr(args, "debug", False))
        return int(args.handler(args) or 0)
    except SystemExit:
        raise
    except KeyboardInterrupt as interrupt:
        if debug:
            raise
        detail = str(interrupt).strip()
        sys.stderr.write(f"{prog}: interrupted (Ctrl-C){'; ' + detail if detail else ''}\n")
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        _silence_stdout()
        sys.stderr.write(f"{prog}: stopped: the output pipe was closed before all output was written\n")
        sys.exit(EXIT_FAILURE)
    except Exception as error:
        if debug:
            raise
        if isinstance(error, _user_error_types()) or type(error).__name__ == "RayUnavailable":
            sys.stderr.write(f"{prog}: error: {_short(error)}\n")
            sys.exit(EXIT_USAGE)
        sys.stderr.write(f"{prog}: error: unexpected {type(error).__name__}: {_short(error)}\n"
                         f"(rerun with --debug for the traceback)\n")
        sys.exit(EXIT_FAILURE)


if __name__ == "__main__":
    sys.exit(main())
