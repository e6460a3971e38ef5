"""MLflow: a report's energy, emissions and power as metrics (base units), how they were
obtained as tags, and ``report.json`` as an artifact.

    from energymeter.integrations.mlflow import log_report, autolog
    log_report(m.report)          # into the active MLflow run (or run_id=...)
    autolog()                     # every report of this process, whenever a run is active

Needs ``mlflow`` (extra ``mlflow``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .common import report_metrics, report_tags

if TYPE_CHECKING:
    from ..report import Report

ARTIFACT_DIR = "energymeter"


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise ConfigError("MLflow logging needs mlflow: pip install "
                          "'energymeter-ml[mlflow]'") from None
    return mlflow


def log_report(report: Report, run_id: str | None = None, *, step: int | None = None,
               basis: str = "machine") -> bool:
    """Log ``report`` to MLflow run ``run_id`` (default: the active run), its headline energy
    on ``basis`` (machine, attributed, net). Returns False when there is no run to log to."""
    mlflow = _mlflow()
    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            return False
        run_id = active.info.run_id
    client = mlflow.MlflowClient()
    for key, value in report_metrics(report, basis=basis).items():
        client.log_metric(run_id, key.replace("/", "."), value, step=step or 0)
    for key, value in report_tags(report, basis=basis).items():
        client.set_tag(run_id, key, value)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"report-{report.name}-{report.run_id[:8]}.json"
        path.write_text(json.dumps(report.to_dict(), indent=2))
        client.log_artifact(run_id, str(path), artifact_path=ARTIFACT_DIR)
    return True


def _auto(report: Report) -> None:
    mlflow = _mlflow()
    if mlflow.active_run() is not None:
        log_report(report)


def autolog(enable: bool = True) -> None:
    """From now on, log every report of this process to the active MLflow run (when there is
    one); ``autolog(False)`` stops."""
    from ..session.hooks import add_report_listener, remove_report_listener

    (add_report_listener if enable else remove_report_listener)(_auto)
