"""PyTorch Lightning: :class:`EnergyCallback` measures each ``fit`` and ``test`` as a run.

    from energymeter.integrations.lightning import EnergyCallback
    trainer = Trainer(max_epochs=10, callbacks=[EnergyCallback("resnet18")])

* one run per ``fit`` (``<name>``) and per ``test`` (``<name>-test``);
* phases ``epoch-N`` (the whole epoch), inside it ``train-N`` (until validation starts, or
  the epoch ends) and ``val-N``; ``test`` in a test run; the sanity check is left out;
* at each epoch's end the numeric ``trainer.callback_metrics`` are logged with the energy so
  far (``m.log``: energy-to-target works on them); ``per_step=True`` also logs every
  ``log_every_n_steps`` training steps;
* ``sync`` is ``torch.cuda.synchronize`` when the module is on a CUDA device;
* under DDP the rank rules of docs/distributed.md hold: local rank 0 of each node measures
  (its run), other ranks start no run; only global rank 0 logs energy to the trainer's
  loggers (``energy/total_j``, ``energy/epoch_j``, ``energy/mean_power_w``...) and, when a run
  is active there, the report to MLflow and W&B.

Needs ``lightning`` (extra ``lightning``).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback

from .._lazy import LazyLogger
from .common import CallbackRun, RunOwner, numeric, report_metrics
from .elsewhere import log_elsewhere

log = LazyLogger("energymeter")


class EnergyCallback(RunOwner, Callback):
    """Measure Lightning's ``fit`` and ``test`` with energymeter (see the module's text).
    ``name``: the run's name (default: the LightningModule's class name); ``per_step``: also
    log energy every ``log_every_n_steps`` steps; ``log_to_loggers``: send energy to the
    trainer's loggers; ``basis``: the energy basis of the final figures (machine, attributed,
    net; the per-step figures are the machine's); other keyword arguments are
    :class:`energymeter.Settings` fields (``out``, ``region``, ``interval_s``...) and
    ``tags``."""

    def __init__(self, name: str | None = None, *, per_step: bool = False,
                 log_to_loggers: bool = True, log_reports: bool = True,
                 tags: dict[str, Any] | None = None, basis: str = "machine",
                 **settings: Any) -> None:
        from ..report.bases import check_basis

        self.basis = check_basis(basis)
        self.name = name
        self.per_step = per_step
        self.log_to_loggers = log_to_loggers
        self.log_reports = log_reports
        self.run = CallbackRun(tags, settings)
        self._epoch_start_j = 0.0

    # -- the run -----------------------------------------------------------------------------
    def _start(self, trainer: Any, pl_module: Any, suffix: str) -> None:
        if trainer.local_rank != 0:
            return  # local rank 0 of this node measures it (docs/distributed.md)
        name = (self.name or type(pl_module).__name__) + suffix
        self.run.start(name, getattr(pl_module, "device", None))

    def _stop(self, trainer: Any, status: str = "completed") -> None:
        report = self.run.stop(status)
        if report is None:
            return
        if trainer.is_global_zero:
            if self.log_to_loggers:
                self._to_loggers(trainer, {k: v for k, v in report_metrics(
                    report, basis=self.basis).items() if "/phase/" not in k})
            if self.log_reports:
                log_elsewhere(report, basis=self.basis)

    def _log_metrics(self, trainer: Any, **extra: Any) -> None:
        if self.meter is None:
            return
        self.meter.log(**extra, **numeric(trainer.callback_metrics))

    def _to_loggers(self, trainer: Any, metrics: dict[str, float]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    # -- fit -------------------------------------------------------------------------------
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._start(trainer, pl_module, "")

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        epoch = trainer.current_epoch
        self.run.begin(f"epoch-{epoch}")
        self.run.begin(f"train-{epoch}")
        if self.meter is not None:
            self._epoch_start_j = self.meter.snapshot().energy_j

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        every = max(1, int(getattr(trainer, "log_every_n_steps", 50) or 50))
        if self.per_step and self.meter is not None and trainer.global_step % every == 0:
            self.meter.log(step=trainer.global_step, epoch=trainer.current_epoch)

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        self.run.end(f"train-{epoch}")
        self.run.begin(f"val-{epoch}")

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        self.run.end(f"val-{trainer.current_epoch}")

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        epoch = trainer.current_epoch
        self.run.end(f"train-{epoch}")
        self.run.end(f"val-{epoch}")
        self.run.end(f"epoch-{epoch}")
        if self.meter is None:
            return
        self._log_metrics(trainer, epoch=epoch, step=trainer.global_step)
        if self.log_to_loggers and trainer.is_global_zero:
            snap = self.meter.snapshot()
            self._to_loggers(trainer, {"energy/total_j": snap.energy_j,
                                       "energy/epoch_j": snap.energy_j - self._epoch_start_j,
                                       "energy/mean_power_w": snap.energy_j / snap.t_s
                                       if snap.t_s > 0 else 0.0})

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._stop(trainer)

    # -- test ------------------------------------------------------------------------------
    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        if self.meter is None:  # test() on its own; inside fit the fit's run holds it
            self._start(trainer, pl_module, "-test")
            self._testing = True
        self.run.begin("test")

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        self.run.end("test")
        self._log_metrics(trainer, step=trainer.global_step)
        if getattr(self, "_testing", False):
            self._testing = False
            self._stop(trainer)

    # -- failures --------------------------------------------------------------------------
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._stop(trainer, "interrupted" if isinstance(exception, KeyboardInterrupt)
                   else "failed")

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.meter is not None:  # ended without on_fit_end (e.g. an early return)
            self._stop(trainer)

