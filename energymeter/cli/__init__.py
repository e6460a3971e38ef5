"""The ``energymeter`` command line: ``run``, ``report``, ``compare``, ``plot``, ``cite``,
``probes``, ``monitor``, ``carbon``, ``daemon`` and ``push``, one module each (imported when
the command runs).

Thin by design: each command parses its options, calls the library and prints. Options that
mirror settings are generated from the settings' metadata (:func:`.common.setting_option`) and
default to ``None``, so that the usual resolution applies (option > ``ENERGYMETER_*`` >
``pyproject.toml`` > default). Heavy modules are imported inside the commands, so
``energymeter run`` stays quick to start.

Exit codes: the child's own for ``run`` (``128+N`` when it died of signal ``N``), 126/127 when
the command cannot be executed / is not found, 2 for bad options, settings or runs, 1 for other
errors, 0 otherwise.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from .._version import __version__
from .common import CONTEXT, EXIT_USAGE, silence_stdout

__all__ = ["EXIT_USAGE", "cli", "main"]

#: Each command and the module that defines it, imported only when that command runs (or when
#: ``--help`` lists them): ``energymeter run`` loads none of the other commands' modules.
COMMANDS = {
    "run": "run", "report": "report", "compare": "compare", "probes": "probes",
    "monitor": "monitor", "carbon": "carbon", "plot": "plot", "cite": "cite",
    "daemon": "daemon", "push": "daemon", "sweep": "sweep",
    "page": "page",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module = importlib.import_module(f".{COMMANDS[cmd_name]}", __name__)
            self.add_command(getattr(module, cmd_name), cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=_LazyGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", "-V", prog_name="energymeter",
                      message="%(prog)s %(version)s")
def cli() -> None:
    """Measure what computation costs: energy (CPU, DRAM, GPU), power, carbon and memory.

    \b
    Examples:
      energymeter run -- python train.py --epochs 3
      energymeter report energymeter-runs/
      energymeter compare runs/*-baseline-* runs/*-pruned-*
      energymeter plot runs/ --kind compare --by tag:method -o compare.pdf
      energymeter cite runs/ --format latex
      energymeter probes
      energymeter carbon SE

    Settings come from options, then ENERGYMETER_* variables, then [tool.energymeter] in
    pyproject.toml. See docs/cli.md.
    """


def main(argv: list[str] | None = None) -> None:
    """The ``energymeter`` console script."""
    try:
        cli.main(args=argv, prog_name="energymeter")
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as other Unix tools do.
        silence_stdout()
        sys.exit(1)


if __name__ == "__main__":
    main()
