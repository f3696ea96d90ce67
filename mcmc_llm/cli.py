"""`mcmc-llm` command line: one sub-command per module in `mcmc_llm.commands`.

Each command module defines `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ("sample", "exact", "diagnose", "run", "grade")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawTextHelpFormatter):
    """Shows defaults and keeps the line breaks of multi-line help texts (e.g. the model-spec grammar)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcmc-llm", description="Markov chain Monte Carlo over language-model outputs (power sampling p^alpha)."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ValueError as error:
        parser.exit(2, f"mcmc-llm {args.command}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
