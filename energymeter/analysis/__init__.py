"""Analysis of many runs: finding and loading them (:mod:`.find`), grouping and statistics
(:mod:`.compare`), and the comparison's renderings (:mod:`.render`)."""

from __future__ import annotations

from .compare import compare, comparison_warnings
from .find import expand_runs, load_reports
from .render import comparison_columns, comparison_table, format_comparison

__all__ = [
    "compare",
    "comparison_columns",
    "comparison_table",
    "comparison_warnings",
    "expand_runs",
    "format_comparison",
    "load_reports",
]
