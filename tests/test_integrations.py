"""Integrations with the real packages on CPU: PyTorch Lightning, Hugging Face transformers,
MLflow (file store in a temp dir) and W&B (offline), and the imperative phase API they use.
Models and data are built here; nothing is downloaded."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import energymeter
from energymeter.errors import UsageError

pytestmark = pytest.mark.integrations


# -- begin_phase / end_phase -------------------------------------------------------------------
def test_imperative_phases_nest_and_end_in_any_order(tmp_path: Path) -> None:
    with energymeter.measure("p", region="SE", out=tmp_path / "runs", cpu_tdp_w=10.0) as m:
        fit = m.begin_phase("fit")
        m.begin_phase("epoch-0")
        time.sleep(0.05)
        m.end_phase("epoch-0")
        val = m.begin_phase("val")
        m.end_phase(fit)  # before val: any order
        time.sleep(0.02)
        m.end_phase(val)
        with pytest.raises(UsageError, match="no such phase is open"):
            m.end_phase("epoch-0")
        m.begin_phase("left-open")
    phases = {p.name: p for p in m.report.phases}
    assert phases["epoch-0"].parent == "fit" and phases["val"].parent == "fit"
    assert phases["val"].end_s > phases["fit"].end_s
    assert "left-open" in phases  # ended with the run
    assert phases["epoch-0"].duration_s >= 0.05


# -- Lightning ---------------------------------------------------------------------------------
def _tiny_data(torch: object, n: int = 64) -> tuple[object, object]:
    g = torch.Generator().manual_seed(0)  # type: ignore[attr-defined]
    x = torch.randn(n, 8, generator=g)  # type: ignore[attr-defined]
    y = (x.sum(dim=1) > 0).long()
    return x, y


@pytest.fixture
def mlflow_file_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """MLflow with a file store in a temp dir (MLflow 3 asks for an opt-in to use one)."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(f"file:{tmp_path / 'mlruns'}")
    return mlflow


def test_lightning_callback_phases_metrics_loggers_and_mlflow(tmp_path: Path,
                                                              mlflow_file_store: object
                                                              ) -> None:
    torch = pytest.importorskip("torch")
    pl = pytest.importorskip("lightning.pytorch")
    mlflow = mlflow_file_store
    from torch.utils.data import DataLoader, TensorDataset

    from energymeter.integrations.lightning import EnergyCallback

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(8, 2)

        def training_step(self, batch, idx):  # type: ignore[no-untyped-def]
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.log("train_loss", loss, on_epoch=True, on_step=False)
            return loss

        def validation_step(self, batch, idx):  # type: ignore[no-untyped-def]
            x, y = batch
            acc = (self.net(x).argmax(dim=1) == y).float().mean()
            self.log("val_acc", acc)

        def test_step(self, batch, idx):  # type: ignore[no-untyped-def]
            x, y = batch
            self.log("test_acc", (self.net(x).argmax(dim=1) == y).float().mean())

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x, y = _tiny_data(torch)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    callback = EnergyCallback("tiny", per_step=True, out=tmp_path / "runs", region="SE",
                              cpu_tdp_w=10.0)
    csv = pl.loggers.CSVLogger(tmp_path / "logs", name="tiny")
    trainer = pl.Trainer(max_epochs=2, callbacks=[callback], logger=csv, log_every_n_steps=2,
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, accelerator="cpu", devices=1)
    with mlflow.start_run() as run:
        trainer.fit(Tiny(), loader, loader)
        trainer.test(trainer.lightning_module, loader, verbose=False)
    fit, test = callback.reports
    assert (fit.name, test.name) == ("tiny", "tiny-test")
    names = [p.name for p in fit.phases]
    for epoch in (0, 1):
        assert {f"epoch-{epoch}", f"train-{epoch}", f"val-{epoch}"} <= set(names)
    phases = {p.name: p for p in fit.phases}
    assert phases["train-0"].parent == "epoch-0" and phases["val-0"].parent == "epoch-0"
    assert phases["train-0"].end_s <= phases["val-0"].start_s
    # Metrics logged with energy at each epoch's end (energy-to-target reads these).
    epoch_logs = [e for e in fit.logs if "val_acc" in e["metrics"]]
    assert [e["metrics"]["epoch"] for e in epoch_logs] == [0, 1]
    assert epoch_logs[1]["energy_j"] > epoch_logs[0]["energy_j"] > 0
    assert fit.energy_to("val_acc", 0.0)["reached"]
    assert any("step" in e["metrics"] and "val_acc" not in e["metrics"] for e in fit.logs)
    assert [p.name for p in test.phases] == ["test"]
    # Energy went back to the trainer's loggers...
    metrics_csv = next((tmp_path / "logs").rglob("metrics.csv")).read_text()
    assert "energy/total_j" in metrics_csv and "energy/epoch_j" in metrics_csv
    # ... and the report to the active MLflow run: metrics in base units and report.json.
    client = mlflow.MlflowClient()
    data = client.get_run(run.info.run_id).data
    assert data.metrics["energy.total_j"] == pytest.approx(test.total_energy_j)
    assert data.tags["energymeter.method.cpu"] == "model"
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "energymeter")]
    assert len(artifacts) == 2 and all(a.endswith(".json") for a in artifacts)


# -- Hugging Face transformers -----------------------------------------------------------------
def test_transformers_callback_epochs_evals_and_logs(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from energymeter.integrations.transformers import EnergyCallback

    config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32,
                                     max_position_embeddings=16, num_labels=2)
    model = transformers.BertForSequenceClassification(config)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (32, 8), generator=g)
    labels = (ids[:, 0] % 2).long()

    class Synthetic(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(ids)

        def __getitem__(self, i: int) -> dict:
            return {"input_ids": ids[i], "labels": labels[i]}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), num_train_epochs=2, per_device_train_batch_size=8,
        per_device_eval_batch_size=8, eval_strategy="epoch", logging_strategy="epoch",
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True)
    seen: list[dict] = []

    class Recorder(transformers.TrainerCallback):  # stands for a report_to logger (W&B...)
        def on_log(self, args, state, control, logs=None, **kw):  # type: ignore[no-untyped-def]
            seen.append(dict(logs or {}))

    trainer = transformers.Trainer(model=model, args=args, train_dataset=Synthetic(),
                                   eval_dataset=Synthetic(), callbacks=[Recorder()])
    callback = EnergyCallback.attach(trainer, "bert-tiny", out=tmp_path / "runs",
                                     region="SE", cpu_tdp_w=10.0)
    trainer.train()
    [report] = callback.reports
    names = [p.name for p in report.phases]
    assert {"epoch-0", "epoch-1", "eval-0", "eval-1"} <= set(names)
    evals = [e for e in report.logs if "eval_loss" in e["metrics"]]
    assert len(evals) == 2 and evals[1]["energy_j"] > evals[0]["energy_j"] > 0
    # report_to-friendly: the loggers after it receive the energy in the logs.
    logged = [h for h in seen if "energy/total_j" in h]
    assert len(logged) == len(seen) and all(h["energy/total_j"] > 0 for h in logged)
    assert report.status == "completed"


# -- W&B offline and autolog -------------------------------------------------------------------
def test_wandb_offline_log_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wandb = pytest.importorskip("wandb")
    from energymeter.integrations.wandb import autolog

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run = wandb.init(project="energymeter-test", dir=str(tmp_path))
    autolog()
    try:
        with energymeter.measure("wb", region="SE", out=tmp_path / "runs", cpu_tdp_w=10.0):
            time.sleep(0.1)
        summary = dict(run.summary)
    finally:
        autolog(False)
        wandb.finish()
        wandb.teardown()  # its service process would otherwise outlive the test
    assert summary["energy/total_j"] > 0 and "energy/emissions_g" in summary
    assert summary["energy/mean_power_w"] > 0
    # Offline: the run directory holds the logged history to sync later.
    assert list(Path(tmp_path, "wandb").glob("offline-run-*"))


def test_mlflow_log_report_without_a_run_does_nothing(tmp_path: Path,
                                                     mlflow_file_store: object) -> None:
    mlflow = mlflow_file_store
    from energymeter.integrations.mlflow import log_report

    with energymeter.measure("ml", region="SE", out=tmp_path / "runs", cpu_tdp_w=10.0) as m:
        time.sleep(0.05)
    assert log_report(m.report) is False
    with mlflow.start_run() as run:
        assert log_report(m.report) is True
    data = mlflow.MlflowClient().get_run(run.info.run_id).data
    assert data.metrics["energy.cpu_j"] == pytest.approx(m.report.energy_j["by_kind"]["cpu"])
    saved = mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                artifact_path="energymeter",
                                                dst_path=str(tmp_path / "dl"))
    [report_file] = list(Path(saved).glob("*.json"))
    assert json.loads(report_file.read_text())["run_id"] == m.report.run_id
    assert os.path.getsize(report_file) > 0


def test_a_failing_report_listener_becomes_a_warning(tmp_path: Path) -> None:
    from energymeter.session.hooks import add_report_listener, remove_report_listener

    seen = []

    def broken(report: object) -> None:
        seen.append(report)
        raise RuntimeError("tracker down")

    add_report_listener(broken)
    try:
        with energymeter.measure("l", region="SE", out=tmp_path / "runs", cpu_tdp_w=10.0) as m:
            pass
    finally:
        remove_report_listener(broken)
    assert len(seen) == 1 and m.report.status == "completed"
    assert any("tracker down" in w for w in m.report.warnings)


def test_mlflow_autolog_logs_every_report_while_a_run_is_active(tmp_path: Path,
                                                                 mlflow_file_store: object
                                                                 ) -> None:
    mlflow = mlflow_file_store
    from energymeter.integrations.mlflow import autolog

    autolog()
    try:
        with mlflow.start_run() as run, energymeter.measure(
                "auto", region="SE", out=tmp_path / "runs", cpu_tdp_w=10.0) as m:
            time.sleep(0.05)
        with energymeter.measure("no-run", region="SE", out=tmp_path / "runs",
                                 cpu_tdp_w=10.0):
            pass  # no active run: nothing logged, no error
    finally:
        autolog(False)
    data = mlflow.MlflowClient().get_run(run.info.run_id).data
    assert data.tags["energymeter.run_id"] == m.report.run_id
