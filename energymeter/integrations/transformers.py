"""Hugging Face ``transformers``: :class:`EnergyCallback` (a ``TrainerCallback``) measures
each ``Trainer.train()`` as a run.

    from energymeter.integrations.transformers import EnergyCallback
    trainer = Trainer(model=model, args=args, train_dataset=ds, eval_dataset=ev)
    EnergyCallback.attach(trainer, "bert-tiny")      # first, so report_to loggers see energy
    trainer.train()

* one run per ``train()``; phases ``epoch-N`` (``on_epoch_begin`` to ``on_epoch_end``) and
  ``eval-N`` (from the first evaluation step to ``on_evaluate``; the first batch's forward
  pass comes before the first step callback, so it is outside the phase);
* every ``on_log`` records the logged numbers with the energy so far (``m.log``:
  energy-to-target works on ``eval_accuracy`` and the like) and adds ``energy/total_j`` and
  ``energy/mean_power_w`` to the logs themselves, so that ``report_to`` loggers (W&B, MLflow,
  TensorBoard) receive them when this callback runs before them (:meth:`attach` puts it
  first; ``Trainer(callbacks=[...])`` puts it last, after ``report_to``'s);
* ``sync`` is ``torch.cuda.synchronize`` when the model is on a CUDA device;
* under distributed training the rank rules of docs/distributed.md hold: the local main
  process of each node measures, only the global main process adds energy to the logs and,
  when a run is active there, logs the report to MLflow and W&B.

Needs ``transformers`` (extra ``transformers``).
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from .common import CallbackRun, RunOwner, numeric
from .elsewhere import log_elsewhere


class EnergyCallback(RunOwner, TrainerCallback):
    """Measure ``Trainer.train()`` with energymeter (see the module's text). ``name``: the
    run's name (default: the model's class name); ``basis``: the energy basis of the final
    report's figures sent to MLflow/W&B (machine, attributed, net; the figures added to the
    logs during training are the machine's); other keyword arguments are
    :class:`energymeter.Settings` fields (``out``, ``region``...) and ``tags``."""

    def __init__(self, name: str | None = None, *, log_reports: bool = True,
                 tags: dict[str, Any] | None = None, basis: str = "machine",
                 **settings: Any) -> None:
        from ..report.bases import check_basis

        self.basis = check_basis(basis)
        self.name = name
        self.log_reports = log_reports
        self.run = CallbackRun(tags, settings)
        self._evals = 0

    @classmethod
    def attach(cls, trainer: Any, name: str | None = None, **kwargs: Any) -> EnergyCallback:
        """Make a callback and put it first in ``trainer``'s callbacks (before the
        ``report_to`` loggers, so they receive the energy it adds to the logs)."""
        callback = cls(name, **kwargs)
        trainer.callback_handler.callbacks.insert(0, callback)
        train = trainer.train

        def measured_train(*args: Any, **kw: Any) -> Any:
            try:
                return train(*args, **kw)
            except BaseException as exc:  # no callback hook sees it: end the run here
                callback.end(interrupted=isinstance(exc, KeyboardInterrupt), failed=True)
                raise

        trainer.train = measured_train
        return callback

    def end(self, *, failed: bool = False, interrupted: bool = False) -> None:
        """Stop a run still open (``train()`` raised): ``failed`` or ``interrupted``."""
        self.run.stop("interrupted" if interrupted else "failed" if failed else "completed")

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       **kwargs: Any) -> None:
        if args.local_process_index != 0:
            return  # the node's local main process measures it (docs/distributed.md)
        name = self.name or (type(model).__name__ if model is not None else "train")
        self.run.start(name, getattr(model, "device", None))
        self._evals = 0

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.run.begin(f"epoch-{int(state.epoch or 0)}")

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # state.epoch is already the epoch just finished, counted from 1
        key = next((k for k in self.run.phases if k.startswith("epoch-")), None)
        if key is not None:
            self.run.end(key)

    def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.run.begin(f"eval-{self._evals}")

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None,
                    **kwargs: Any) -> None:
        self.run.end(f"eval-{self._evals}")
        self._evals += 1

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
               **kwargs: Any) -> None:
        if self.meter is None or logs is None:
            return
        values = numeric(logs)
        values.pop("step", None)
        self.meter.log(step=state.global_step, **values)
        if state.is_world_process_zero:
            snap = self.meter.snapshot()
            logs["energy/total_j"] = snap.energy_j
            logs["energy/mean_power_w"] = snap.energy_j / snap.t_s if snap.t_s > 0 else 0.0

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        report = self.run.stop()
        if report is None:
            return
        if state.is_world_process_zero and self.log_reports:
            log_elsewhere(report, basis=self.basis)
