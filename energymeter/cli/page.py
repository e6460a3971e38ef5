"""``energymeter page RUN... -o study.html``: one self-contained HTML page of a study, to send
to people who open no terminal (:func:`energymeter.analysis.page.study_page`)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .common import BASIS, CONTEXT, err, fail, options, setup_logging
from .compare import BY, NESTED, TARGET, check_options, find_runs

#: The extensions the page's file may have.
EXTENSIONS = (".html", ".htm")

OUTPUT = click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), metavar="FILE.html",
    help="The page's file (.html or .htm), overwritten if it exists.")
TITLE = click.option(
    "--title", default=None, metavar="TEXT",
    help="The page's heading (plain text, escaped) [default: the groups compared, e.g. "
         "'Energy study: dense vs sparse'].")


def check_output(output: str) -> None:
    """Exit 2 unless ``output`` ends in .html or .htm and its folder exists and is
    writable."""
    if Path(output).suffix.lower() not in EXTENSIONS:
        fail(f"-o {output}: the page is HTML; accepted file extensions: "
             f"{', '.join(EXTENSIONS)}")
    folder = Path(output).parent
    if not folder.is_dir():
        fail(f"-o {output}: the directory {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        fail(f"-o {output}: the directory {folder} is not writable")


@click.command(context_settings=CONTEXT,
               short_help="A study page: one self-contained HTML file to send.")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@options(OUTPUT, BY, TARGET, NESTED, TITLE, BASIS)
def page(runs: tuple[str, ...], output: str, by: str, target: str | None, nested: bool,
         title: str | None, basis: str) -> None:
    """Write one HTML page of a study, to send to supervisors and co-authors.

    The page holds, in order: the title, when it was made, what was compared (groups and
    their n) and the energy basis; the comparison table of `energymeter compare` (mean ±
    half-width of the 95 % CI, each later group's difference from the first with its
    interval and Welch's p-value) and what those mean; the figures (group means of the
    energy total, energy by kind, and with --target the energy-to-target curves) with
    captions; the per-run table; the comparison's warnings; and the methods paragraph of
    `energymeter cite` with its reference.

    The file is self-contained: no network, no scripts, no external style sheets or fonts
    (figures are inline SVG, their text drawn as paths). It reads in greyscale, prints, and
    fits a phone's screen. Figures need matplotlib (pip install 'energymeter-ml[plot]');
    without it the page says so and has everything else.

    RUN is as for `energymeter report`; runs are grouped as `energymeter compare` groups
    them (--by, --nested).

    \b
    Examples:
      energymeter page runs/dense/ runs/sparse/ -o study.html
      energymeter page energymeter-runs/ --by tag:method --target val_acc=0.9 -o study.html
      energymeter page energymeter-runs/ --by tag:method --basis attributed \\
          --title "Pruning: energy of 5 seeds" -o pruning.html
    """
    from ..analysis.page import study_page
    from ..errors import ReportError
    from ..store.writers import write_text_atomic

    check_options(by, target)
    check_output(output)
    found = find_runs(runs)
    setup_logging()
    try:
        text = study_page(found, by=by, basis=basis, title=title, target=target,
                          nested=nested)
    except ReportError as exc:
        fail(str(exc))
    try:
        write_text_atomic(Path(output), text, follow_dir=True)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}", code=1)
    err(f"wrote {output}")
