"""The ``energymeter`` command line: ``run``, ``report``, ``compare``, ``plot``, ``cite``,
``probes``, ``monitor`` and ``carbon``, one module each.

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

import sys

import click

from .._version import __version__
from .carbon import carbon
from .cite import cite
from .common import CONTEXT, EXIT_USAGE, silence_stdout
from .compare import compare
from .daemon import daemon, push
from .monitor import monitor
from .plot import plot
from .probes import probes
from .report import report
from .run import run

__all__ = ["EXIT_USAGE", "cli", "main"]


@click.group(context_settings=CONTEXT)
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


for _command in (run, report, compare, probes, monitor, carbon, plot):
    cli.add_command(_command)
cli.add_command(cite)
cli.add_command(daemon)
cli.add_command(push)


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
