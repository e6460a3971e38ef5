"""A finished report to the experiment trackers the program already uses (MLflow, W&B):
what the training callbacks do at the end of a run."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from .._lazy import LazyLogger
from . import mlflow as to_mlflow
from . import wandb as to_wandb

if TYPE_CHECKING:
    from ..report import Report

log = LazyLogger("energymeter")


def log_elsewhere(report: Report, *, basis: str = "machine") -> list[str]:
    """``report`` to MLflow and W&B when the program uses them (already imported) and has a
    run active there, its headline energy on ``basis``. A failure is logged and returned,
    never raised: the training goes on."""
    failures = []
    for module, target in (("mlflow", "mlflow"), ("wandb", "wandb")):
        if module not in sys.modules:
            continue
        try:
            (to_mlflow if target == "mlflow" else to_wandb).log_report(report, basis=basis)
        except Exception as exc:  # another tool's failure must not end the training
            log.warning("logging the report to %s failed: %r", target, exc)
            failures.append(f"{target}: {type(exc).__name__}: {exc}")
    return failures
