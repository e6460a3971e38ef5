"""The ``fake_nvml_env`` module (tests/fakes/modules): a simulated ``pynvml`` that processes
started by real launchers import by name, configured by FAKE_NVML_WATTS and FAKE_NVML_NODE."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULES = REPO / "tests" / "fakes" / "modules"

# Run from a directory outside the repository, so that only PYTHONPATH makes the module
# importable (as in a launched process).
PROBE = """
import json, sys, time
import fake_nvml_env as nvml

nvml.nvmlInit()
count = nvml.nvmlDeviceGetCount()
handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
out = {"count": count, "watts": nvml.simulated_watts(), "node": nvml.NODE,
       "uuids": [nvml.nvmlDeviceGetUUID(h) for h in handles],
       "names": [nvml.nvmlDeviceGetName(h) for h in handles],
       "arch": [nvml.nvmlDeviceGetArchitecture(h) for h in handles],
       "hopper": nvml.NVML_DEVICE_ARCH_HOPPER,
       "is_error_class": issubclass(nvml.NVMLError_NotSupported, nvml.NVMLError)}
if count:
    first = nvml.nvmlDeviceGetTotalEnergyConsumption(handles[0])
    t0 = time.monotonic()
    time.sleep(float(sys.argv[1]))
    t1 = time.monotonic()
    out["reads"] = [[t0, first], [t1, nvml.nvmlDeviceGetTotalEnergyConsumption(handles[0])]]
    out["power_mw"] = [nvml.nvmlDeviceGetPowerUsage(h) for h in handles]
nvml.nvmlShutdown()
print(json.dumps(out))
"""


def _probe(tmp_path: Path, sleep_s: float = 0.0, **env: str) -> dict:
    child = {k: v for k, v in os.environ.items()
             if not k.startswith(("FAKE_NVML_", "ENERGYMETER_"))}
    child["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(MODULES), os.environ.get("PYTHONPATH")) if p)
    child.update(env)
    done = subprocess.run([sys.executable, "-c", PROBE, str(sleep_s)], cwd=tmp_path, env=child,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_two_gpus_whose_counters_follow_the_simulated_power(tmp_path: Path) -> None:
    a = _probe(tmp_path, 0.5, FAKE_NVML_WATTS="100,150", FAKE_NVML_NODE="a")
    assert a["count"] == 2 and a["watts"] == [100.0, 150.0] and a["node"] == "a"
    assert a["names"] == ["NVIDIA H100 80GB HBM3"] * 2
    assert a["arch"] == [a["hopper"]] * 2 and a["is_error_class"]
    assert a["power_mw"] == [100_000, 150_000]
    (t0, e0), (t1, e1) = a["reads"]
    assert t1 - t0 >= 0.5
    assert e1 - e0 == pytest.approx(100.0 * (t1 - t0) * 1000, rel=0.01)  # mJ
    for u in a["uuids"]:  # GPU-8-4-4-4-12
        assert u.startswith("GPU-")
        assert [len(part) for part in u[4:].split("-")] == [8, 4, 4, 4, 12]
    assert len(set(a["uuids"])) == 2


def test_uuids_are_per_node_and_counters_per_machine(tmp_path: Path) -> None:
    a1 = _probe(tmp_path, 0.0, FAKE_NVML_WATTS="100,150", FAKE_NVML_NODE="a")
    a2 = _probe(tmp_path, 0.0, FAKE_NVML_WATTS="100,150", FAKE_NVML_NODE="a")
    b = _probe(tmp_path, 0.0, FAKE_NVML_WATTS="100,150", FAKE_NVML_NODE="b")
    assert a1["uuids"] == a2["uuids"]  # the same node in two processes
    assert not set(a1["uuids"]) & set(b["uuids"])  # another node
    # The energy counter is the machine's, not the process's: the counter read by a later
    # process is the earlier read plus the power times the time between the reads.
    (t1, e1), (t2, e2) = a1["reads"][0], a2["reads"][0]
    assert t2 > t1
    assert e2 - e1 == pytest.approx(100.0 * (t2 - t1) * 1000, rel=0.01, abs=200)


def test_no_gpu_without_watts(tmp_path: Path) -> None:
    empty = _probe(tmp_path, FAKE_NVML_WATTS="")
    assert empty["count"] == 0 and empty["uuids"] == []
    unset = _probe(tmp_path)
    assert unset["count"] == 0
    assert unset["node"]  # the host name


def test_bad_watts_fail_at_import(tmp_path: Path) -> None:
    child = {**os.environ, "PYTHONPATH": str(MODULES), "FAKE_NVML_WATTS": "100,lots"}
    done = subprocess.run([sys.executable, "-c", "import fake_nvml_env"], cwd=tmp_path,
                          env=child, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "FAKE_NVML_WATTS='100,lots'" in done.stderr


def test_energymeter_measures_the_simulated_gpus(tmp_path: Path) -> None:
    """``ENERGYMETER_NVML_MODULE=fake_nvml_env``: energymeter reads the simulated GPUs."""
    from energymeter.analysis import find_runs
    from tests.fakes.modules.fake_nvml_env import gpu_uuid

    out = tmp_path / "runs"
    child = {k: v for k, v in os.environ.items()
             if not k.startswith(("FAKE_NVML_", "ENERGYMETER_"))}
    child.update(PYTHONPATH=os.pathsep.join((str(REPO), str(MODULES))),
                 ENERGYMETER_NVML_MODULE="fake_nvml_env", FAKE_NVML_WATTS="100,150",
                 FAKE_NVML_NODE="a", ENERGYMETER_OUT=str(out), ENERGYMETER_REGION="SE")
    done = subprocess.run([sys.executable, "-m", "energymeter", "run", "--", sys.executable,
                           "-c", "import time; time.sleep(1)"], cwd=tmp_path, env=child,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    [(_, report)] = find_runs([out])
    gpus = {c.channel.meta["uuid"]: c for c in report.channels if c.channel.kind == "gpu"}
    assert sorted(gpus) == sorted([gpu_uuid("a", 0), gpu_uuid("a", 1)])
    energy = sum(c.energy_j for c in gpus.values())
    assert energy == pytest.approx(250.0 * report.duration_s, rel=0.01)
