"""Weights & Biases: a report's energy, emissions and power as logged metrics and in the run
summary (base units), how they were obtained in the config, and ``report.json`` as an artifact.
Works in offline mode (``WANDB_MODE=offline``).

    from energymeter.integrations.wandb import log_report, autolog
    log_report(m.report)          # into wandb.run (or run=...)
    autolog()                     # every report of this process, whenever a run is active

Needs ``wandb`` (extra ``wandb``).
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


def _wandb() -> Any:
    try:
        import wandb
    except ImportError:
        raise ConfigError("W&B logging needs wandb: pip install 'energymeter-ml[wandb]'"
                          ) from None
    return wandb


def log_report(report: Report, run: Any = None, *, basis: str = "machine") -> bool:
    """Log ``report`` to W&B ``run`` (default: ``wandb.run``), its headline energy on
    ``basis`` (machine, attributed, net). Returns False without a run."""
    wandb = _wandb()
    run = run if run is not None else wandb.run
    if run is None:
        return False
    metrics = report_metrics(report, basis=basis)
    run.log(metrics)
    for key, value in metrics.items():
        run.summary[key] = value
    run.config.update({k: v for k, v in report_tags(report, basis=basis).items()},
                      allow_val_change=True)
    artifact = wandb.Artifact(f"energymeter-{report.run_id[:8]}", type="energymeter-report")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.json"
        path.write_text(json.dumps(report.to_dict(), indent=2))
        artifact.add_file(str(path))
        run.log_artifact(artifact)
    return True


def _auto(report: Report) -> None:
    if _wandb().run is not None:
        log_report(report)


def autolog(enable: bool = True) -> None:
    """From now on, log every report of this process to ``wandb.run`` (when there is one)."""
    from ..session.hooks import add_report_listener, remove_report_listener

    (add_report_listener if enable else remove_report_listener)(_auto)
