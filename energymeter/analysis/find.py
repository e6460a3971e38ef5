"""Finding runs: run directories, their ``report.json`` files and ``out`` folders holding many
runs, loaded as :class:`~energymeter.Report` values in a stable order, each with the argument
that named it (:func:`find_runs`: what ``compare dense/ sparse/`` groups by)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from ..errors import ReportError
from ..report import Report
from ..store import EVENTS_NAME, REPORT_NAME


# -- loading -----------------------------------------------------------------------------------
def _is_run_dir(path: Path) -> bool:
    return (path / REPORT_NAME).is_file() or (path / EVENTS_NAME).is_file()


def _expand_one(raw: str | Path) -> tuple[list[Path], bool]:
    """The runs ``raw`` names, and whether it was a folder of runs."""
    path = Path(raw)
    if path.is_dir() and not _is_run_dir(path):
        runs = sorted(p for p in path.iterdir() if p.is_dir() and _is_run_dir(p))
        if not runs:
            raise ReportError(f"{path} is neither a run directory (it has no report.json or "
                              "events.jsonl) nor a folder of runs; give a run directory, "
                              "its report.json or the out folder of runs")
        return runs, True
    return [path], False


def expand_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories and ``report.json`` files named by ``paths``; a directory holding run
    directories (an ``out`` folder) stands for all of them."""
    return [run for raw in paths for run in _expand_one(raw)[0]]


def _load_one(path: Path) -> Report:
    # DIR/report.json of a run killed before writing it: Report.load rebuilds DIR
    rebuilt = path.name == REPORT_NAME and (path.parent / EVENTS_NAME).is_file()
    if not path.exists() and not rebuilt:
        raise ReportError(f"{path} does not exist; give a run directory, its report.json "
                          "or a folder of runs")
    try:
        return Report.load(path)
    except ReportError as exc:
        message = str(exc)
        raise ReportError(message if str(path) in message else f"{path}: {message}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from None


class FoundRun(NamedTuple):
    """A loaded run and the argument that named it (``source``: a folder of runs, a run
    directory or a ``report.json``, as given)."""

    source: str
    report: Report


def find_runs(paths: Iterable[str | Path]) -> list[FoundRun]:
    """:meth:`Report.load` every run named by ``paths`` (see :func:`expand_runs`), in the order
    given, each as ``(source, report)``: ``source`` is the argument (``str``) that named it. The
    runs of a folder come in the order they started. A run reached twice (two arguments, or a
    folder and one of its runs) is returned twice: :func:`energymeter.analysis.compare` counts
    it once. A run killed without writing ``report.json`` is rebuilt from its samples and marked
    ``interrupted`` (``running`` while it is measured), and so is one named by its missing
    ``report.json``.

    Raises :class:`~energymeter.errors.ReportError` naming the path that could not be read."""
    paths = list(paths)
    if not paths:
        raise ReportError("no run given; pass run directories, report.json files or an out "
                          "folder (default energymeter-runs/)")
    found: list[FoundRun] = []
    for raw in paths:
        runs, folder = _expand_one(raw)
        block = [_load_one(run) for run in runs]
        # Directory names have one-second resolution: order a folder's runs by their start.
        if folder:
            block.sort(key=lambda r: r.started_at)
        found += [FoundRun(str(raw), r) for r in block]
    return found


def load_reports(paths: Iterable[str | Path]) -> list[Report]:
    """The reports of :func:`find_runs` (without their sources), in the same order."""
    return [found.report for found in find_runs(paths)]
