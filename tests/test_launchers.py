"""The real-launcher fixtures and helpers of tests/launchers.py work on this machine: a
single-node SLURM (srun, sbatch --wait), OpenMPI's mpirun and torchrun (two nodes on
127.0.0.1, each with its simulated GPUs)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.launchers import (
    Slurm,
    child_env,
    fake_nvml_env,
    free_port,
    mpirun_command,
    sbatch_and_wait,
    torchrun_command,
)

pytestmark = pytest.mark.launchers


def test_srun_starts_two_tasks(slurm_cluster: Slurm) -> None:
    done = slurm_cluster.run(["srun", "-n", "2", "sh", "-c",
                              'echo "$SLURM_PROCID $SLURM_NTASKS $SLURMD_NODENAME"'],
                             env=child_env())
    assert done.returncode == 0, done.stderr
    lines = sorted(done.stdout.splitlines())
    assert lines == [f"0 2 {slurm_cluster.node}", f"1 2 {slurm_cluster.node}"], done.stdout


def test_sbatch_wait_runs_a_batch_script(slurm_cluster: Slurm, tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    script = tmp_path / "job.sh"
    script.write_text(f'#!/bin/sh\necho "$SLURM_JOB_ID $SLURM_JOB_NAME" > {marker}\n')
    done = slurm_cluster.run(["sbatch", "--wait", "--parsable", "-J", "launchertest",
                              "-o", str(tmp_path / "slurm-%j.out"), str(script)],
                             env=child_env())
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip().split(";")[0]
    assert marker.read_text().split() == [job_id, "launchertest"]


def test_sbatch_and_wait_gives_the_state_and_exit_code(slurm_cluster: Slurm,
                                                        tmp_path: Path) -> None:
    script = tmp_path / "fails.sh"
    script.write_text("#!/bin/sh\nexit 3\n")
    job = sbatch_and_wait(slurm_cluster, ["-o", str(tmp_path / "slurm-%j.out"), str(script)],
                          env=child_env())
    assert (job.state, job.exit_code) == ("FAILED", 3)


def test_mpirun_starts_two_ranks() -> None:
    done = subprocess.run([*mpirun_command(2), "env"], env=child_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    ranks = sorted(line.split("=", 1)[1] for line in done.stdout.splitlines()
                   if line.startswith("OMPI_COMM_WORLD_RANK="))
    assert ranks == ["0", "1"]
    assert done.stdout.count("OMPI_COMM_WORLD_SIZE=2") == 2


WORKER = """
import json, os, sys
import fake_nvml_env as nvml

nvml.nvmlInit()
env = {k: os.environ.get(k) for k in sys.argv[2].split(",")}
env["uuids"] = [nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))
                for i in range(nvml.nvmlDeviceGetCount())]
with open(os.path.join(sys.argv[1], os.environ["RANK"] + ".json"), "w") as f:
    json.dump(env, f)
"""
KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK",
        "GROUP_WORLD_SIZE", "ROLE_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "MASTER_ADDR")


def test_torchrun_two_nodes_on_one_machine(torchrun: list[str], tmp_path: Path) -> None:
    """Two torchrun agents (static rendezvous, one worker each) form one job of 2 ranks; each
    node's worker sees its own simulated GPUs."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = free_port()
    procs = [subprocess.Popen(
        [*torchrun_command(torchrun, 1, nnodes=2, node_rank=i, master_port=port),
         str(script), str(tmp_path), ",".join(KEYS)],
        env=fake_nvml_env((100, 150), node=node, OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i, node in enumerate(("a", "b"))]
    logs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(logs)[-3000:]
    seen = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in (0, 1)]
    for rank, env in enumerate(seen):
        assert env["RANK"] == env["GROUP_RANK"] == str(rank)
        assert env["LOCAL_RANK"] == "0" and env["LOCAL_WORLD_SIZE"] == "1"
        assert env["WORLD_SIZE"] == env["GROUP_WORLD_SIZE"] == env["ROLE_WORLD_SIZE"] == "2"
        # The static rendezvous names no run: every static job is "none".
        assert env["TORCHELASTIC_RUN_ID"] == "none"
        assert env["MASTER_ADDR"] == "127.0.0.1"
        assert len(env["uuids"]) == 2
    assert not set(seen[0]["uuids"]) & set(seen[1]["uuids"])
