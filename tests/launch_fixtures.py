"""Real launchers on this one machine, for tests: a single-node SLURM (Debian ``slurm-wlm`` and
``munge``, daemons started here on 127.0.0.1), OpenMPI's ``mpirun`` and torchrun.

Each skips the test with the precise reason when its launcher cannot run here (not installed,
not root, a daemon that does not come up); ``.ci/run`` installs the packages.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SIM_MODULES = REPO / "tests" / "fakes" / "modules"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a launched process: this one's (no ENERGYMETER_* settings), with the
    repository and the simulated NVML module importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYMETER_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), str(SIM_MODULES), os.environ.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({path}: {exc})"


@dataclass
class Slurm:
    conf: Path
    node: str
    env: dict[str, str]

    def run(self, args: list[str], *, env: dict[str, str] | None = None, timeout: float = 120,
            **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, env={**(env or os.environ), **self.env}, text=True,
                              capture_output=True, timeout=timeout, **kw)  # type: ignore[call-overload]


def _start_munge() -> str | None:
    """Start munged if it is not running; the reason when it cannot be."""
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0:
        return None
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        made = subprocess.run(["mungekey", "--create"], capture_output=True, text=True)
        if made.returncode != 0:
            return f"mungekey --create failed: {made.stderr.strip()}"
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    started = subprocess.run(["runuser", "-u", "munge", "--", "munged", "--force"],
                             capture_output=True, text=True)
    if started.returncode != 0:
        started = subprocess.run(["munged", "--force"], capture_output=True, text=True)
    if started.returncode != 0:
        return f"munged did not start: {started.stderr.strip()}"
    return None


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    """A real single-node SLURM cluster (slurmctld + slurmd as root, munge) on 127.0.0.1."""
    missing = [b for b in ("slurmctld", "slurmd", "srun", "sbatch", "munged", "mungekey")
               if shutil.which(b) is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing; Debian: apt-get "
                    "install slurm-wlm munge, as .ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld/slurmd and munged needs root")
    problem = _start_munge()
    if problem:
        pytest.skip(problem)
    base = tmp_path_factory.mktemp("slurm")
    node = socket.gethostname().split(".")[0]
    ctld_port, d_port = free_port(), free_port()
    for sub in ("state", "spool"):
        (base / sub).mkdir()
    conf = base / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=energymetertest",
        f"SlurmctldHost={node}(127.0.0.1)",
        "AuthType=auth/munge", "CredType=cred/munge",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SlurmUser=root", "SlurmdUser=root",
        f"SlurmctldPort={ctld_port}", f"SlurmdPort={d_port}",
        f"StateSaveLocation={base / 'state'}", f"SlurmdSpoolDir={base / 'spool'}",
        f"SlurmctldLogFile={base / 'slurmctld.log'}", f"SlurmdLogFile={base / 'slurmd.log'}",
        f"SlurmctldPidFile={base / 'slurmctld.pid'}", f"SlurmdPidFile={base / 'slurmd.pid'}",
        "SchedulerType=sched/builtin", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core", "ReturnToService=2", "MpiDefault=none",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none", "KillWait=5", "InactiveLimit=0",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=1000 "
        "State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
    env = {"SLURM_CONF": str(conf)}
    full = {**os.environ, **env}
    procs = []
    for daemon in ("slurmctld", "slurmd"):
        result = subprocess.run([daemon, "-c"], env=full, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"{daemon} did not start: {result.stderr.strip()}\n"
                        f"{_tail(base / f'{daemon}.log')}")
        procs.append(daemon)
    deadline = time.monotonic() + 40
    state = ""
    while time.monotonic() < deadline:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=full, capture_output=True,
                             text=True)
        state = out.stdout.strip() or out.stderr.strip()
        if state == "idle":
            break
        time.sleep(0.5)
    else:
        _stop_slurm(base, full)
        pytest.skip(f"the SLURM node did not become idle in 40 s (sinfo: {state!r})\n"
                    f"slurmctld.log:\n{_tail(base / 'slurmctld.log')}\n"
                    f"slurmd.log:\n{_tail(base / 'slurmd.log')}")
    try:
        yield Slurm(conf, node, env)
    finally:
        _stop_slurm(base, full)


def _stop_slurm(base: Path, env: dict[str, str]) -> None:
    subprocess.run(["scancel", "--user", "root"], env=env, capture_output=True)
    for daemon in ("slurmd", "slurmctld"):
        pid_file = base / f"{daemon}.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
    time.sleep(0.5)


def mpirun_argv(n: int) -> list[str]:
    """OpenMPI's ``mpirun`` for ``n`` ranks on this machine (as root, oversubscribed, TCP
    only), or skip."""
    if shutil.which("mpirun") is None:
        pytest.skip("mpirun is not installed (Debian: apt-get install openmpi-bin, as .ci/run "
                    "does)")
    argv = ["mpirun", "--oversubscribe", "-n", str(n), "--mca", "btl", "self,tcp",
            "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo"]
    if os.geteuid() == 0:
        argv[1:1] = ["--allow-run-as-root"]
    return argv


def torchrun_argv() -> list[str]:
    """``torchrun`` of this interpreter, or skip when torch is not installed."""
    pytest.importorskip("torch", reason="torch is not installed (the test extra pins "
                                        "torch==2.13.0, a CPU build)")
    return [sys.executable, "-m", "torch.distributed.run"]
