"""Real launchers: torchrun (gloo on CPU, 2 nodes x 2 ranks), a real single-node SLURM (srun,
sbatch, scancel) and OpenMPI's mpirun, each with a simulated NVML (2 GPUs per node, the
``simnvml`` module) and a simulated RAPL tree per node. The merged job energy must equal the
simulated truth within 0.5 % with no device counted twice."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from energymeter.analysis import find_runs, merge
from tests.fakes.modules.simnvml import gpu_uuid
from tests.fakes.powercap import FakePowercap
from tests.launch_fixtures import REPO, Slurm, child_env, free_port, mpirun_argv, torchrun_argv

pytestmark = pytest.mark.launchers

GPU_W = {"alpha": (100.0, 150.0), "beta": (200.0, 50.0)}
CPU_W = {"alpha": 20.0, "beta": 30.0}
TOLERANCE = 0.005  # the bound: merged energy within 0.5 % of the simulated truth


def _node_env(node: str, out: Path, fake: FakePowercap, *, name_node: bool = True
              ) -> dict[str, str]:
    extra = {"ENERGYMETER_OUT": str(out), "ENERGYMETER_NVML_MODULE": "simnvml",
             "ENERGYMETER_POWERCAP_ROOT": str(fake.root), "ENERGYMETER_REGION": "SE",
             "SIMNVML_WATTS": ",".join(str(w) for w in GPU_W[node]), "SIMNVML_NODE": node,
             "OMP_NUM_THREADS": "1"}
    if name_node:
        extra["ENERGYMETER_NODE"] = node
    return child_env(**extra)


def _fake_rapl(tmp_path: Path, node: str) -> FakePowercap:
    fake = _FAKES[node] = FakePowercap(tmp_path / f"powercap-{node}", dram=False,
                                       power_w={"package-0": CPU_W[node]})
    return fake


#: The fake RAPL tree of each simulated node in the current test (tolerances use its lag).
_FAKES: dict[str, FakePowercap] = {}


def _truth_j(merged_job: dict, reports: list, nodes: dict[str, str]) -> float:
    """Sum over measuring runs of (the node's simulated power) x (the run's duration)."""
    total = 0.0
    for report in reports:
        if report.job.get("measures") in ("node", "all", "own"):
            sim = nodes[report.job["node"]]
            total += (CPU_W[sim] + sum(GPU_W[sim])) * report.duration_s
    return total


def _check_job(out: Path, nodes: dict[str, str], runs: int) -> object:
    """Merge the runs under ``out``: every GPU once, energy equal to the truth."""
    reports = [r for _, r in find_runs([out])]
    assert len(reports) == runs, [r.job for r in reports]
    merged = merge(reports)
    measuring = [r for r in reports if r.job["measures"] != "nothing"]
    assert len(measuring) == len(nodes), [r.job for r in reports]  # one per node
    gpus = [c.channel for c in merged.channels if c.channel.kind == "gpu"]
    uuids = sorted(c.meta["uuid"] for c in gpus)
    assert uuids == sorted(gpu_uuid(sim, i) for sim in nodes.values()
                           for i in range(len(GPU_W[sim])))  # each GPU exactly once
    assert merged.job["missing_nodes"] == [] and not merged.job["deduplicated"]
    truth = _truth_j(merged.job, reports, nodes)
    assert abs(merged.total_energy_j - truth) <= TOLERANCE * truth + _busy_j(reports, nodes)
    return merged


def _busy_j(reports: list, nodes: dict[str, str]) -> float:
    """What a busy machine can move between a run's energy and its duration, measured: at
    each end, half its longest read (``overhead.max_read_span_s``) at the node's power, and
    what the node's fake RAPL thread lagged (``FakePowercap.lag_j``)."""
    total = 0.0
    for report in reports:
        if report.job.get("measures") in ("node", "all", "own"):
            sim = nodes[report.job["node"]]
            power_w = CPU_W[sim] + sum(GPU_W[sim])
            total += power_w * report.overhead.get("max_read_span_s", 0.0)
            total += _FAKES[sim].lag_j(CPU_W[sim]) if sim in _FAKES else 0.0
    return total


# -- torchrun ----------------------------------------------------------------------------------
def test_torchrun_two_nodes_of_two_ranks(tmp_path: Path) -> None:
    argv = torchrun_argv()
    out, port = tmp_path / "runs", free_port()
    nodes = {"alpha": "alpha", "beta": "beta"}
    with contextlib.ExitStack() as stack:
        fakes = {n: stack.enter_context(_fake_rapl(tmp_path, n).start()) for n in nodes}
        procs = [subprocess.Popen(
            [*argv, "--nnodes", "2", "--node-rank", str(i), "--nproc-per-node", "2",
             "--master-addr", "127.0.0.1", "--master-port", str(port),
             str(REPO / "tests" / "launched" / "ddp_train.py"), "0.8"],
            env=_node_env(node, out, fakes[node]), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True) for i, node in enumerate(nodes)]
        logs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(logs)[-3000:]
    merged = _check_job(out, nodes, runs=4)
    job = merged.job
    assert job["launcher"] == "torchrun" and job["expected_nodes"] == 2
    assert [(n["node"], n["ranks"]) for n in job["nodes"]] == [("alpha", [0, 1]),
                                                               ("beta", [2, 3])]
    assert [p.name for p in merged.phases] == ["epoch-0", "epoch-1"]
    # Every rank recorded its own logs, the measuring one with energy.
    for _, report in find_runs([out]):
        assert [e["metrics"]["epoch"] for e in report.logs] == [0, 1]


# -- SLURM -------------------------------------------------------------------------------------
SLEEP = [sys.executable, "-c", "import time; time.sleep(1.5)"]
ENERGYMETER = [sys.executable, "-m", "energymeter"]


def test_srun_two_tasks_wrapping_a_command(tmp_path: Path, slurm_cluster: Slurm) -> None:
    out = tmp_path / "runs"
    with _fake_rapl(tmp_path, "alpha").start() as fake:
        done = slurm_cluster.run(["srun", "-n", "2", "-J", "emtest", *ENERGYMETER, "run", "--",
                                  *SLEEP], env=_node_env("alpha", out, fake, name_node=False))
    assert done.returncode == 0, done.stderr
    merged = _check_job(out, {slurm_cluster.node: "alpha"}, runs=2)
    job = merged.job
    assert job["launcher"] == "slurm" and job["slurm"]["job_name"] == "emtest"
    assert job["slurm"]["partition"] == "debug" and job["expected_nodes"] == [slurm_cluster.node]
    assert job["nodes"][0]["ranks"] == [0, 1]
    # The CLI gives the same job, by its SLURM id.
    shown = subprocess.run([*ENERGYMETER, "report", "--job", str(job["id"]), "--format",
                            "json", str(out)], env=child_env(), capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert '"merged": true' in shown.stdout


def test_srun_one_task_wrapping_torchrun(tmp_path: Path, slurm_cluster: Slurm) -> None:
    """`srun energymeter run -- torchrun ...`: the wrapper measures the node; the workers'
    measure() runs are nested in it and covered by it (not counted again)."""
    argv = torchrun_argv()
    out = tmp_path / "runs"
    with _fake_rapl(tmp_path, "alpha").start() as fake:
        done = slurm_cluster.run(
            ["srun", "-n", "1", "-c", "2", *ENERGYMETER, "run", "--", *argv,
             "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
             str(free_port()), str(REPO / "tests" / "launched" / "ddp_train.py"), "0.5"],
            env=_node_env("alpha", out, fake, name_node=False), timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [r for _, r in find_runs([out])]
    assert len(reports) == 3  # the wrapper and two workers
    [outer] = [r for r in reports if r.parent_run_id is None]
    merged = merge(reports)
    assert merged.job["nested_runs_excluded"] == 2
    assert merged.total_energy_j == pytest.approx(outer.total_energy_j)
    truth = (CPU_W["alpha"] + sum(GPU_W["alpha"])) * outer.duration_s
    assert abs(merged.total_energy_j - truth) \
        <= TOLERANCE * truth + _busy_j([outer], {outer.job["node"]: "alpha"})
    assert len([c for c in merged.channels if c.channel.kind == "gpu"]) == 2


def test_sbatch_job_with_srun_steps(tmp_path: Path, slurm_cluster: Slurm) -> None:
    out = tmp_path / "runs"
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n"
                      f"srun -n 2 {' '.join(ENERGYMETER)} run -- {SLEEP[0]} -c "
                      "'import time; time.sleep(1.5)'\n")
    with _fake_rapl(tmp_path, "alpha").start() as fake:
        done = slurm_cluster.run(["sbatch", "--wait", "-n", "2", "-J", "emsbatch",
                                  "-o", str(tmp_path / "slurm-%j.out"), str(script)],
                                 env=_node_env("alpha", out, fake, name_node=False),
                                 timeout=180)
    assert done.returncode == 0, done.stderr + "".join(
        p.read_text() for p in tmp_path.glob("slurm-*.out"))
    merged = _check_job(out, {slurm_cluster.node: "alpha"}, runs=2)
    assert merged.job["slurm"]["job_name"] == "emsbatch"
    assert merged.job["slurm"]["ntasks"] == "2"


def test_scancel_ends_the_runs_as_interrupted(tmp_path: Path, slurm_cluster: Slurm) -> None:
    out = tmp_path / "runs"
    script = tmp_path / "long.sh"
    script.write_text("#!/bin/bash\n"
                      f"srun -n 2 {' '.join(ENERGYMETER)} run -- sleep 120\n")
    with _fake_rapl(tmp_path, "alpha").start() as fake:
        submitted = slurm_cluster.run(["sbatch", "--parsable", "-n", "2", "-J", "emcancel",
                                       "-o", str(tmp_path / "slurm-%j.out"), str(script)],
                                      env=_node_env("alpha", out, fake, name_node=False))
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip().split(";")[0]
        deadline = time.monotonic() + 60
        while len(list(out.glob("*/samples.csv"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        assert slurm_cluster.run(["scancel", job_id]).returncode == 0
        while time.monotonic() < deadline:
            queued = slurm_cluster.run(["squeue", "-h", "-j", job_id])
            if not queued.stdout.strip():
                break
            time.sleep(0.3)
    reports = [r for _, r in find_runs([out])]
    assert len(reports) == 2
    assert {r.status for r in reports} == {"interrupted"}
    assert all((r.path / "report.json").is_file() for r in reports)  # written, not rebuilt
    measuring = [r for r in reports if r.job["measures"] == "node"]
    assert len(measuring) == 1 and measuring[0].total_energy_j > 0
    merged = merge(reports)
    assert merged.status == "interrupted" and merged.job["id"] == job_id


# -- mpirun ------------------------------------------------------------------------------------
def test_mpirun_two_ranks(tmp_path: Path) -> None:
    argv = mpirun_argv(2)
    out = tmp_path / "runs"
    with _fake_rapl(tmp_path, "alpha").start() as fake:
        done = subprocess.run([*argv, *ENERGYMETER, "run", "--", *SLEEP],
                              env=_node_env("alpha", out, fake), capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    merged = _check_job(out, {"alpha": "alpha"}, runs=2)
    assert merged.job["launcher"] == "mpi"
    assert merged.job["nodes"][0]["ranks"] == [0, 1]
