"""The `pycni` command: tools for operators (the plugins are executables of their own).

Each subcommand is a module listed in SUBCOMMANDS that defines COMMAND (its name), HELP (one
line), `add_arguments(parser)` and `run(args) -> int` (the exit status). To add one, write the
module and list it here. Keep heavy imports inside `run` (or below it), so that `pycni --help`
and every other subcommand stay quick.
"""

from __future__ import annotations

import argparse
import importlib

SUBCOMMANDS = (
    "pycni.conformance.validate",
    "pycni.lab.demo",
    "pycni.conformance",
    "pycni.agent.reconcile",
    "pycni.agent.agent",
    "pycni.lab.uml",
)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pycni", description="Tools for pycni, CNI plugins in Python."
    )
    commands = parser.add_subparsers(metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(name)
        command = commands.add_parser(
            module.COMMAND,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
