"""scripts/validate_gpu.py run end to end with the fake NVML, a fake load and a fake nvidia-smi."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakes.nvml import FakeGPU, FakeNVML, StepTrace

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "validate_gpu.py"

IDLE_W, BUSY_W = 60.0, 300.0

FAKE_SMI = f"""
import datetime, time
while True:
    stamp = datetime.datetime.now().strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
    print(f"{{stamp}}, {BUSY_W:.2f}", flush=True)
    time.sleep(0.1)
"""


def load_script():
    spec = importlib.util.spec_from_file_location("validate_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # scripts/ is not a package: register it like an import
    spec.loader.exec_module(module)
    return module


validate_gpu = load_script()


class FakeLoad:
    """Switches the fake GPU's power trace to busy for the duration of each call."""

    name = "fake load"

    def __init__(self, fake: FakeNVML, trace: StepTrace) -> None:
        self.fake = fake
        self.trace = trace

    def busy(self, duration_s: float) -> None:
        with self.fake.lock:
            self.trace.set(self.fake.elapsed_s(), True)
        time.sleep(duration_s)
        with self.fake.lock:
            self.trace.set(self.fake.elapsed_s(), False)


def fake_setup(arch: str = "hopper") -> tuple[FakeNVML, FakeLoad]:
    trace = StepTrace(IDLE_W, BUSY_W)
    gpus = [FakeGPU(name="NVIDIA A100-SXM4-40GB", arch="ampere", power_w=50.0),
            FakeGPU(name="NVIDIA H100 80GB HBM3", arch=arch, power_w=trace)]
    fake = FakeNVML(gpus)
    return fake, FakeLoad(fake, trace)


def test_full_run_with_fakes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake, load = fake_setup()
    out = tmp_path / "validation.json"
    argv = ["--gpu", "1", "--warmup-s", "0.3", "--steady-s", "1.0", "--bursty-s", "0.6",
            "--idle-s", "0.4", "--period-s", "1.0", "--out", str(out)]
    rc = validate_gpu.main(argv, nvml=fake, load=load,
                           smi_cmd=[sys.executable, "-c", FAKE_SMI])
    assert rc == 0
    printed = capsys.readouterr().out
    for word in ("phase", "steady", "bursty", "idle", "energymeter_J", "NVIDIA H100 80GB HBM3",
                 "update period"):
        assert word in printed
    result = json.loads(out.read_text())
    assert result["schema"] == "energymeter.validation.gpu/1"
    assert result["gpu"]["index"] == 1 and result["gpu"]["nvml_index"] == 1
    assert result["gpu"]["name"] == "NVIDIA H100 80GB HBM3"
    assert result["driver_version"] == "550.54.15" and result["nvml_version"]
    assert result["energymeter_method"] == "counter"
    assert result["date"].endswith("+00:00")
    phases = {p["phase"]: p for p in result["phases"]}
    assert list(phases) == ["steady", "bursty", "idle"]

    steady = phases["steady"]
    assert steady["duration_s"] == pytest.approx(1.0, abs=0.1)
    assert steady["energy_j"]["energymeter"] == pytest.approx(BUSY_W * steady["duration_s"],
                                                              rel=0.12)
    assert abs(steady["rel_diff_vs_energymeter"]["power_instant"]) < 0.05
    assert abs(steady["rel_diff_vs_energymeter"]["nvidia_smi"]) < 0.05
    assert steady["mean_power_w"] == pytest.approx(BUSY_W, rel=0.12)
    assert steady["samples"]["poll"] >= 50 * steady["duration_s"]
    assert steady["samples"]["nvidia_smi"] >= 5

    idle = phases["idle"]
    assert idle["mean_power_w"] == pytest.approx(IDLE_W, rel=0.5)
    # the counter's 100 ms steps dominate this short bursty window, but it agrees on average
    bursty = phases["bursty"]
    assert abs(bursty["rel_diff_vs_energymeter"]["power_instant"]) < 0.25

    period = result["counter_update_period_s"]
    assert period["median_s"] == pytest.approx(0.1, abs=0.02)
    assert period["changes"] >= 5
    assert fake.init_count == fake.shutdown_count  # every NVML reference released


def test_table_formatting() -> None:
    result = {
        "phases": [{"phase": "steady", "duration_s": 8.0,
                    "energy_j": {"energymeter": 2400.0, "power_instant": 2376.0,
                                 "power_usage": None, "nvidia_smi": 2448.0},
                    "rel_diff_vs_energymeter": {"power_instant": -0.01, "power_usage": None,
                                                "nvidia_smi": 0.02},
                    "mean_power_w": 300.0}],
        "counter_update_period_s": {"median_s": 0.1, "changes": 9},
        "gpu": {"index": 0, "name": "NVIDIA H100 80GB HBM3"},
        "driver_version": "550.54.15", "nvml_version": "12.550.54.15",
        "energymeter_method": "counter",
    }
    table = validate_gpu.format_table(result)
    row = table.splitlines()[2].split()
    assert row == ["steady", "8.00", "2400.0", "2376.0", "-1.0", "n/a", "n/a", "2448.0",
                   "+2.0", "300.0"]
    assert "100.0 ms median over 9 changes" in table


def test_integrate_j() -> None:
    samples = [(0.0, 100.0), (1.0, 200.0), (2.0, 200.0)]
    assert validate_gpu.integrate_j(samples, 0.0, 2.0) == pytest.approx(350.0)
    assert validate_gpu.integrate_j(samples, 0.5, 1.5) == pytest.approx(187.5)
    assert validate_gpu.integrate_j(samples, 2.0, 3.0) == pytest.approx(200.0)  # held flat
    assert validate_gpu.integrate_j(samples, 10.0, 11.0) is None
    assert validate_gpu.integrate_j([], 0.0, 1.0) is None


def test_nvml_failure_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    fake, load = fake_setup()
    fake.init_error = "LibraryNotFound"
    assert validate_gpu.main(["--no-smi"], nvml=fake, load=load) == 3
    assert "libnvidia-ml.so.1" in capsys.readouterr().err


def test_without_torch_or_cupy_exits_2(tmp_path: Path) -> None:
    # torch and cupy hidden (the test extra installs torch): as on a machine without them.
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = ("import runpy, sys\n"
            "sys.modules['torch'] = sys.modules['cupy'] = None\n"
            f"sys.argv = [{str(SCRIPT)!r}, '--out', {str(tmp_path / 'x.json')!r}]\n"
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", code],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "needs PyTorch or CuPy" in result.stderr
    assert not (tmp_path / "x.json").exists()
