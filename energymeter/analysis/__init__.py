"""Analysis of many runs: finding and loading them (:mod:`.find`), grouping them
(:mod:`.groups`), their statistics (:mod:`.stats`), the comparison (:mod:`.compare`),
energy-to-target (:mod:`.target`) and their renderings (:mod:`.render`)."""

from __future__ import annotations

from .compare import compare, comparison_warnings
from .find import FoundRun, expand_runs, find_runs, load_reports
from .groups import BY_CHOICES, Group, Grouping, check_by, group_runs
from .merge import expand_nodelist, job_id, merge, split_jobs
from .render import (
    comparison_columns,
    comparison_table,
    format_comparison,
    format_targets,
    target_tables,
)
from .target import energy_before, run_energy_to, target_results

__all__ = [
    "BY_CHOICES",
    "FoundRun",
    "Group",
    "Grouping",
    "check_by",
    "compare",
    "comparison_columns",
    "comparison_table",
    "comparison_warnings",
    "energy_before",
    "expand_nodelist",
    "expand_runs",
    "find_runs",
    "format_comparison",
    "format_targets",
    "group_runs",
    "job_id",
    "load_reports",
    "merge",
    "run_energy_to",
    "split_jobs",
    "target_results",
    "target_tables",
]
