"""Real launchers on this one machine, for the distributed tests: helpers and fixtures.

* ``slurm_cluster`` (session fixture, from :mod:`tests.launch_fixtures`, which tests/conftest.py
  registers for every test: do not import it, or a second cluster starts): a real single-node
  SLURM (slurmctld and slurmd as root, munge) on 127.0.0.1. It is a :class:`Slurm`: ``.env``
  (``{"SLURM_CONF": ...}``, to merge into a child's environment; ``srun``, ``sbatch``,
  ``squeue`` and ``scancel`` all need it), ``.conf`` (the slurm.conf path), ``.node`` (the
  node's name, the short host name) and ``.run(argv, env=None, timeout=120, **kw)``
  (``subprocess.run`` with ``.env`` merged in, text output captured).
  :func:`sbatch_and_wait` submits a batch job and waits for it in ~1-3 s where ``sbatch
  --wait`` (which works too) takes 10 s: its client polls every few seconds.
* :func:`mpirun_command` ``(n)``: the argv prefix of OpenMPI's ``mpirun`` for ``n`` ranks here.
* :func:`torchrun_available`, and :func:`torchrun_prefix` which the ``torchrun`` fixture of
  tests/conftest.py (session-scoped) returns: the argv prefix of torchrun (``python -m
  torch.distributed.run``), or a skip saying why; :func:`torchrun_command` adds the usual
  options.
* :func:`fake_nvml_env`: the environment of a launched process whose energymeter reads
  simulated GPUs (the ``fake_nvml_env`` module of tests/fakes/modules).

Each skips the test, saying why, when its launcher cannot run here (not installed, not root, a
daemon that does not come up); ``.ci/run`` installs the system packages and the ``test`` extra
torch.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from tests.launch_fixtures import REPO, SIM_MODULES, Slurm, child_env, free_port, mpirun_argv

__all__ = ["FAKE_MODULES", "REPO", "BatchJob", "Slurm", "child_env", "fake_nvml_env",
           "free_port", "mpirun_command", "sbatch_and_wait", "torchrun_available",
           "torchrun_command", "torchrun_prefix"]

#: The folder of importable fake modules (``fake_nvml_env``, ``simnvml``) that launched
#: processes get on ``PYTHONPATH`` (:func:`child_env` puts it there).
FAKE_MODULES = SIM_MODULES


@dataclass(frozen=True)
class BatchJob:
    """A finished batch job: its id, final state (``COMPLETED``, ``FAILED``, ``CANCELLED``...)
    and the exit code of its script."""

    job_id: str
    state: str
    exit_code: int


def sbatch_and_wait(cluster: Slurm, args: list[str], *, env: dict[str, str] | None = None,
                    timeout: float = 120) -> BatchJob:
    """``sbatch --parsable *args`` on ``cluster``, then wait (polling ``squeue`` every 0.1 s)
    until the job has left the queue. Fails the test when sbatch does, or on timeout."""
    submitted = cluster.run(["sbatch", "--parsable", *args], env=env)
    assert submitted.returncode == 0, f"sbatch failed: {submitted.stderr}"
    job_id = submitted.stdout.strip().split(";")[0]
    deadline = time.monotonic() + timeout
    while cluster.run(["squeue", "-h", "-j", job_id]).stdout.strip():
        assert time.monotonic() < deadline, f"batch job {job_id} still queued after {timeout} s"
        time.sleep(0.1)
    shown = cluster.run(["scontrol", "-o", "show", "job", job_id]).stdout
    fields = dict(w.split("=", 1) for w in shown.split() if "=" in w)
    code = fields.get("ExitCode", "-1:0").split(":")[0]
    return BatchJob(job_id, fields.get("JobState", "UNKNOWN"), int(code))


def mpirun_command(n: int) -> list[str]:
    """The argv prefix that runs ``n`` ranks with OpenMPI's ``mpirun`` on this machine: as root
    when root (``--allow-run-as-root``), oversubscribed (2 cores here), TCP on loopback only
    (``--mca btl self,tcp``, ``btl_tcp_if_include lo``, ``oob_tcp_if_include lo``: no shared
    memory or other interface surprises in containers). Skips the test when mpirun is
    missing."""
    return mpirun_argv(n)


@functools.lru_cache(maxsize=1)
def _torch_problem() -> str | None:
    """Why torchrun cannot run here (None when it can), checked once, in a fresh interpreter:
    importing torch into the test process would cost it seconds and memory."""
    try:
        done = subprocess.run([sys.executable, "-c", "import torch.distributed.run"],
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"import torch.distributed.run failed: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        return (f"torch is not importable ({last}); the test extra pins torch==2.13.0, a CPU "
                "build")
    return None


def torchrun_available() -> bool:
    """Whether ``import torch.distributed.run`` works in this interpreter (checked once)."""
    return _torch_problem() is None


def torchrun_prefix() -> list[str]:
    """The argv prefix of torchrun for this interpreter, ``[python, "-m",
    "torch.distributed.run"]``; skips the test (with the import error) when torch is
    missing. The ``torchrun`` fixture of tests/conftest.py returns it."""
    problem = _torch_problem()
    if problem:
        pytest.skip(problem)
    return [sys.executable, "-m", "torch.distributed.run"]


def torchrun_command(prefix: list[str], nproc_per_node: int, *, nnodes: int = 1,
                     node_rank: int = 0, master_port: int | None = None,
                     rdzv_backend: str = "static") -> list[str]:
    """``prefix`` (the ``torchrun`` fixture's list) with the options of one node of a job on
    127.0.0.1: every node of the job passes the same ``master_port`` (a :func:`free_port`)
    and its own ``node_rank``. Append the script (or ``-m module``) and its arguments."""
    port = free_port() if master_port is None else master_port
    return [*prefix, "--nnodes", str(nnodes), "--node-rank", str(node_rank),
            "--nproc-per-node", str(nproc_per_node), "--rdzv-backend", rdzv_backend,
            "--master-addr", "127.0.0.1", "--master-port", str(port)]


def fake_nvml_env(watts: tuple[float, ...] | list[float] = (), node: str | None = None,
                  **extra: str) -> dict[str, str]:
    """The environment of a launched process (:func:`child_env`: this one's without
    ``ENERGYMETER_*`` settings, the repository and the fake modules on ``PYTHONPATH``) whose
    energymeter reads ``len(watts)`` simulated GPUs at those constant powers, on simulated
    node ``node`` (default: the host name), plus ``extra``."""
    env = {k: v for k, v in child_env().items() if not k.startswith("FAKE_NVML_")}
    env.update(ENERGYMETER_NVML_MODULE="fake_nvml_env",
               FAKE_NVML_WATTS=",".join(f"{float(w):g}" for w in watts))
    if node is not None:
        env["FAKE_NVML_NODE"] = node
    env.update(extra)
    return env
