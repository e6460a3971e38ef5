"""Distributed jobs: launcher detection, what each rank measures, and merging a job's runs.

These tests drive the launchers' environment variables directly (the real torchrun, SLURM and
mpirun runs are in tests/test_launchers_energy.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import energymeter
from energymeter.analysis import expand_nodelist, find_runs, group_runs, merge, split_jobs
from energymeter.errors import ReportError
from energymeter.session.launch import detect_launch, plan_ranks
from tests.fakes.nvml import FakeGPU, FakeNVML

REPO = Path(__file__).resolve().parents[1]

TORCHRUN = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2",
            "GROUP_RANK": "1", "GROUP_WORLD_SIZE": "2", "MASTER_ADDR": "10.0.0.1",
            "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "none"}
SRUN = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": "2", "SLURM_LOCALID": "0",
        "SLURM_NODEID": "1", "SLURMD_NODENAME": "gpu07", "SLURM_STEP_NUM_TASKS": "4",
        "SLURM_STEP_NUM_NODES": "2", "SLURM_JOB_NUM_NODES": "2",
        "SLURM_JOB_NODELIST": "gpu[06-07]", "SLURM_JOB_NAME": "train", "SLURM_JOB_PARTITION":
        "gpu", "SLURM_CPUS_ON_NODE": "32", "SLURM_JOB_GPUS": "0,1,2,3"}


# -- detection ---------------------------------------------------------------------------------
def test_no_launcher_is_a_single_run() -> None:
    launch = detect_launch({}, hostname="laptop.local")
    assert launch.launcher is None and not launch.distributed and launch.node == "laptop"
    plan = plan_ranks(launch, "node", {})
    assert plan.measures == "single"


def test_torchrun_ranks_and_derived_job_id() -> None:
    launch = detect_launch(TORCHRUN, hostname="n2")
    assert (launch.launcher, launch.rank, launch.local_rank, launch.world_size,
            launch.local_world_size, launch.node_rank, launch.nodes) == \
        ("torchrun", 3, 1, 4, 2, 1, 2)
    # torchrun's static rendezvous says run id "none": the rendezvous address names the job.
    assert launch.job_id == "10.0.0.1:29500"
    assert launch.job_id_source == "MASTER_ADDR:MASTER_PORT"
    assert detect_launch({**TORCHRUN, "TORCHELASTIC_RUN_ID": "exp7"}).job_id == "exp7"
    assert detect_launch({**TORCHRUN, "ENERGYMETER_JOB_ID": "mine"}).job_id == "mine"


def test_srun_ranks_node_and_slurm_facts() -> None:
    launch = detect_launch(SRUN, hostname="ignored")
    assert (launch.launcher, launch.job_id, launch.step_id, launch.rank, launch.local_rank,
            launch.node, launch.node_rank, launch.nodes, launch.world_size) == \
        ("slurm", "4242", "0", 2, 0, "gpu07", 1, 2, 4)
    assert launch.slurm["job_name"] == "train" and launch.slurm["partition"] == "gpu"
    assert launch.slurm["cpus_on_node"] == "32" and launch.slurm["job_gpus"] == "0,1,2,3"


def test_batch_script_is_one_rank() -> None:
    env = {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "4",
           "SLURM_JOB_NUM_NODES": "1"}
    launch = detect_launch(env, hostname="n1")
    assert launch.world_size == 1 and launch.local_rank == 0
    assert plan_ranks(launch, "node", env).measures == "node"


def test_torchrun_inside_srun_takes_ranks_from_torchrun_and_job_from_slurm() -> None:
    env = {**SRUN, **TORCHRUN}
    launch = detect_launch(env)
    assert launch.launcher == "torchrun" and launch.job_id == "4242"
    assert launch.rank == 3 and launch.local_rank == 1 and launch.node_rank == 1


@pytest.mark.parametrize(("env", "flavour", "rank", "local"), [
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_SIZE":
      "2", "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "OMPI_MCA_ess_base_jobid": "99"}, "openmpi", 1, 1),
    ({"PMI_RANK": "5", "MPI_LOCALRANKID": "1", "PMI_SIZE": "8", "MPI_LOCALNRANKS": "4"},
     "mpich", 5, 1),
    ({"PMIX_RANK": "2", "PMIX_NAMESPACE": "prterun-x@1"}, "pmix", 2, None),
])
def test_mpi_flavours(env: dict[str, str], flavour: str, rank: int, local: int | None) -> None:
    launch = detect_launch(env)
    assert (launch.launcher, launch.mpi, launch.rank, launch.local_rank) == \
        ("mpi", flavour, rank, local)


# -- planning ----------------------------------------------------------------------------------
def test_node_mode_local_rank_zero_measures_the_rest_record() -> None:
    zero = plan_ranks(detect_launch({**TORCHRUN, "LOCAL_RANK": "0", "RANK": "2"}), "node", {})
    one = plan_ranks(detect_launch(TORCHRUN), "node", {})
    assert zero.measures == "node" and one.measures == "nothing"
    assert "local rank 0" in one.reason


def test_one_gpu_per_task_each_rank_measures_its_gpu_and_rank_zero_the_cpu() -> None:
    env = {**SRUN, "CUDA_VISIBLE_DEVICES": "0"}  # --gpus-per-task=1: ids are cgroup-relative
    zero = plan_ranks(detect_launch(env), "node", env)
    assert zero.measures == "node" and zero.visible is None
    other = {**env, "SLURM_LOCALID": "1", "SLURM_PROCID": "3"}
    plan = plan_ranks(detect_launch(other), "node", other)
    assert plan.measures == "gpus" and plan.gpus_only


def test_gpus_only_rank_opens_no_cpu_probe(tmp_path: Path) -> None:
    env = {**SRUN, "CUDA_VISIBLE_DEVICES": "1", "SLURM_LOCALID": "1", "SLURM_PROCID": "3"}
    report = _rank_run(tmp_path, env, _nvml("gpu07"), seconds=0.05)
    assert [c.channel.kind for c in report.channels] == ["gpu"]
    assert report.job["measures"] == "gpus"


def test_own_mode_picks_cuda_local_rank() -> None:
    plan = plan_ranks(detect_launch(TORCHRUN), "own", {})
    assert plan.measures == "own" and plan.visible == "1"
    env = {**TORCHRUN, "CUDA_VISIBLE_DEVICES": "4,5,6,7"}
    assert plan_ranks(detect_launch(env), "own", env).visible == "5"  # cuda:LOCAL_RANK
    env = {**TORCHRUN, "CUDA_VISIBLE_DEVICES": "GPU-abc"}
    assert plan_ranks(detect_launch(env), "own", env).visible == "GPU-abc"


def test_no_local_rank_falls_back_to_all_and_says_why() -> None:
    env = {"PMIX_RANK": "1", "PMIX_NAMESPACE": "ns"}
    plan = plan_ranks(detect_launch(env), "node", env)
    assert plan.measures == "all" and "de-duplicates" in plan.reason


def test_expand_nodelist() -> None:
    assert expand_nodelist("gpu[01-03,07],login1") == ["gpu01", "gpu02", "gpu03", "gpu07",
                                                       "login1"]
    assert expand_nodelist("n1") == ["n1"]
    assert expand_nodelist("a[1-x]") is None


# -- meters under a launcher -------------------------------------------------------------------
def _nvml(node: str, watts: tuple[float, ...] = (100.0, 150.0)) -> FakeNVML:
    gpus = [FakeGPU(power_w=w, counter_period_s=0.001,
                    uuid=f"GPU-{node}-{i}-0000-0000-000000000000") for i, w in enumerate(watts)]
    return FakeNVML(gpus)


def _rank_run(tmp_path: Path, env: dict[str, str], nvml: FakeNVML, seconds: float = 0.3,
              **kw: object) -> energymeter.Report:
    with energymeter.measure("ddp", env=env, pynvml=nvml, out=tmp_path / "runs",
                             region="SE", cpu_tdp_w=10.0, **kw) as m:
        with m.phase("epoch"):
            time.sleep(seconds)
        m.log(step=1)
    assert m.report is not None
    return m.report


def _torchrun_env(rank: int, local: int, node: str, node_rank: int) -> dict[str, str]:
    return {"RANK": str(rank), "LOCAL_RANK": str(local), "WORLD_SIZE": "4",
            "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": str(node_rank), "GROUP_WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29400", "TORCHELASTIC_RUN_ID": "job1",
            "ENERGYMETER_NODE": node}


def test_ranks_of_two_nodes_merge_to_each_gpu_once(tmp_path: Path) -> None:
    reports = []
    for node_rank, node in enumerate(("alpha", "beta")):
        nvml = _nvml(node)
        for local in (0, 1):
            env = _torchrun_env(2 * node_rank + local, local, node, node_rank)
            reports.append(_rank_run(tmp_path, env, nvml))
    measuring = [r for r in reports if r.job["measures"] == "node"]
    assert len(measuring) == 2
    assert all(not r.channels for r in reports if r.job["measures"] == "nothing")
    merged = merge(reports)
    gpu = [c for c in merged.channels if c.channel.kind == "gpu"]
    assert sorted(c.channel.id for c in gpu) == ["alpha:gpu0", "alpha:gpu1", "beta:gpu0",
                                                  "beta:gpu1"]
    truth = sum(250.0 * r.duration_s for r in measuring)  # 100 W + 150 W per node
    assert sum(c.energy_j for c in gpu) == pytest.approx(truth, rel=0.005)
    assert merged.total_energy_j == pytest.approx(sum(r.total_energy_j for r in reports))
    assert merged.job["missing_nodes"] == [] and merged.job["expected_nodes"] == 2
    assert [n["node"] for n in merged.job["nodes"]] == ["alpha", "beta"]
    assert [n["ranks"] for n in merged.job["nodes"]] == [[0, 1], [2, 3]]
    # Phases summed over the nodes; emissions over the measuring runs.
    [epoch] = merged.phases
    assert sum(epoch.energy_by_channel.values()) == pytest.approx(
        sum(sum(p.energy_by_channel.values()) for r in measuring for p in r.phases))
    assert merged.emissions_g == pytest.approx(sum(r.emissions_g for r in measuring))
    # The merged report is an ordinary report: JSON round trip, ledger row.
    again = energymeter.Report.from_dict(json.loads(merged.to_json()))
    assert again.total_energy_j == pytest.approx(merged.total_energy_j)
    assert merged.to_row()["job_id"] == "job1"


def _concurrent_runs(tmp_path: Path, nvml: FakeNVML, ranks: str) -> list:
    """Ranks 0 and 1 of node alpha measuring at the same time (as real ranks do)."""
    meters = [energymeter.measure("ddp", env=_torchrun_env(r, r, "alpha", 0), pynvml=nvml,
                                  out=tmp_path / "runs", region="SE", cpu_tdp_w=10.0,
                                  ranks=ranks).start() for r in (0, 1)]
    time.sleep(0.3)
    return [m.stop() for m in meters]


def test_devices_measured_twice_count_once(tmp_path: Path) -> None:
    nvml = _nvml("alpha")
    reports = _concurrent_runs(tmp_path, nvml, "all")
    assert all(len([c for c in r.channels if c.channel.kind == "gpu"]) == 2 for r in reports)
    merged = merge(reports)
    gpu_j = sum(c.energy_j for c in merged.channels if c.channel.kind == "gpu")
    longest = max(reports, key=lambda r: r.duration_s)
    assert gpu_j == pytest.approx(sum(c.energy_j for c in longest.channels
                                      if c.channel.kind == "gpu"))
    assert len(merged.job["deduplicated"]) == len(longest.channels)
    assert any("counted once" in w for w in merged.warnings)


def test_own_mode_measures_its_gpu_and_its_share(tmp_path: Path) -> None:
    nvml = _nvml("alpha")
    reports = _concurrent_runs(tmp_path, nvml, "own")
    uuids = [[c.channel.meta["uuid"] for c in r.channels if c.channel.kind == "gpu"]
             for r in reports]
    assert uuids == [["GPU-alpha-0-0000-0000-000000000000"],
                     ["GPU-alpha-1-0000-0000-000000000000"]]
    for r in reports:
        gpu_j = sum(c.energy_j for c in r.channels if c.channel.kind == "gpu")
        assert r.job["measures"] == "own" and r.job["own_energy_j"] >= gpu_j
    merged = merge(reports)
    assert len([c for c in merged.channels if c.channel.kind == "gpu"]) == 2
    assert len([c for c in merged.channels if c.channel.kind == "cpu"]) == 1  # node's, once


def test_runs_one_after_another_in_a_job_add_up(tmp_path: Path) -> None:
    """srun steps of one sbatch job, repeats, train then test: the same devices measured at
    different times are added, not de-duplicated."""
    env = {"SLURM_JOB_ID": "77", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
           "SLURMD_NODENAME": "n1", "SLURM_JOB_NUM_NODES": "1"}
    nvml = _nvml("n1")
    first = _rank_run(tmp_path, env, nvml, seconds=0.2)
    second = _rank_run(tmp_path, env, nvml, seconds=0.2)
    merged = merge([first, second])
    assert merged.total_energy_j == pytest.approx(first.total_energy_j
                                                  + second.total_energy_j)
    assert merged.job["deduplicated"] == []
    assert len([c for c in merged.channels if c.channel.kind == "gpu"]) == 2


def test_a_reused_rendezvous_address_names_several_jobs(tmp_path: Path) -> None:
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "none"}
    nvml = _nvml("n1")
    a = _rank_run(tmp_path, env, nvml, seconds=0.1)
    b = _rank_run(tmp_path, env, nvml, seconds=0.1)
    with pytest.raises(ReportError, match="reused its rendezvous address"):
        merge([a, b], job="127.0.0.1:29500")
    key = f"127.0.0.1:29500@{b.started_at.isoformat()}"
    assert merge([a, b], job=key).total_energy_j == pytest.approx(b.total_energy_j)


def test_a_run_nested_in_a_wrapper_on_another_node_is_not_covered(tmp_path: Path) -> None:
    """`energymeter run -- srun -N2 ...`: srun exports the wrapper's run id to both nodes."""
    wrapper_env = {"ENERGYMETER_JOB_ID": "w", "ENERGYMETER_NODE": "n1"}
    wrapper = energymeter.measure("wrap", env=wrapper_env, pynvml=_nvml("n1"),
                                  out=tmp_path / "runs", region="SE").start()
    inner = _rank_run(tmp_path, {"ENERGYMETER_JOB_ID": "w", "ENERGYMETER_NODE": "n2",
                                 "ENERGYMETER_RUN_ID": wrapper.run_id}, _nvml("n2"),
                      seconds=0.1)
    outer = wrapper.stop()
    merged = merge([outer, inner])
    assert merged.job["nested_runs_excluded"] == 0
    assert merged.total_energy_j == pytest.approx(outer.total_energy_j + inner.total_energy_j)


def test_srun_with_pmix_takes_the_local_rank_from_slurm() -> None:
    env = {"SLURM_JOB_ID": "5", "SLURM_STEP_ID": "0", "SLURM_PROCID": "1",
           "SLURM_LOCALID": "1", "SLURM_NODEID": "0", "SLURM_STEP_NUM_TASKS": "2",
           "PMIX_RANK": "1", "PMIX_NAMESPACE": "slurm.pmix.5.0"}
    launch = detect_launch(env)
    assert launch.local_rank == 1 and launch.launcher == "slurm" and launch.mpi == "pmix"
    assert plan_ranks(launch, "node", env).measures == "nothing"


def test_odd_job_blocks_on_disk_are_refused_with_the_key(tmp_path: Path) -> None:
    report = _rank_run(tmp_path, {"ENERGYMETER_JOB_ID": "x"}, _nvml("a"), seconds=0.05)
    data = json.loads(report.to_json())
    for key, value in (("slurm", "gpu"), ("rank", "zero"), ("nodes", 3)):
        bad = {**data, "job": {**data["job"], key: value, "merged": key == "nodes"}}
        with pytest.raises(ReportError, match=f"job.{key}"):
            energymeter.Report.from_dict(bad)
    bad = {**data, "job": "x"}
    with pytest.raises(ReportError, match="job"):
        energymeter.Report.from_dict(bad)


def test_a_missing_node_is_reported(tmp_path: Path) -> None:
    env = {**SRUN, "SLURM_PROCID": "0", "SLURM_NODEID": "0", "SLURMD_NODENAME": "gpu06",
           "SLURM_STEP_NUM_TASKS": "2"}
    only = _rank_run(tmp_path, env, _nvml("gpu06"))
    merged = merge([only])
    assert merged.job["missing_nodes"] == ["gpu07"]
    assert any("gpu07" in w and "lacks" in w for w in merged.warnings)
    # A node whose measuring rank left no run, but whose other ranks did:
    other = _rank_run(tmp_path, {**env, "SLURM_PROCID": "1", "SLURM_LOCALID": "1",
                                 "SLURMD_NODENAME": "gpu07", "SLURM_NODEID": "1"},
                      _nvml("gpu07"))
    merged = merge([only, other])
    assert merged.job["missing_nodes"] == ["gpu07"]
    assert any("none measured its energy" in w for w in merged.warnings)


def test_merge_refuses_several_jobs_and_unknown_job(tmp_path: Path) -> None:
    a = _rank_run(tmp_path, {"ENERGYMETER_JOB_ID": "a"}, _nvml("x"), seconds=0.05)
    b = _rank_run(tmp_path, {"ENERGYMETER_JOB_ID": "b"}, _nvml("x"), seconds=0.05)
    with pytest.raises(ReportError, match="2 jobs"):
        merge([a, b])
    with pytest.raises(ReportError, match="no run of job 'c'"):
        merge([a, b], job="c")
    assert merge([a, b], job="b").run_id == "job-b"


def test_compare_by_job_and_report_job_cli(tmp_path: Path) -> None:
    for job in ("j1", "j2"):
        nvml = _nvml("alpha")
        for local in (0, 1):
            env = {**_torchrun_env(local, local, "alpha", 0), "ENERGYMETER_JOB_ID": job}
            _rank_run(tmp_path, env, nvml, seconds=0.1)
    found = find_runs([tmp_path / "runs"])
    assert sorted(split_jobs(r for _, r in found)) == ["j1", "j2"]
    grouping = group_runs(found, by="job")
    assert [g.key for g in grouping.groups] == ["job j1", "job j2"]
    assert all(len(g.runs) == 1 and g.runs[0].job["merged"] for g in grouping.groups)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "energymeter", "report", "--job", "j2",
                          "--format", "json", str(tmp_path / "runs")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["run_id"] == "job-j2" and data["job"]["nodes"][0]["ranks"] == [0, 1]
    out = subprocess.run([sys.executable, "-m", "energymeter", "report", "--job", "zzz",
                          str(tmp_path / "runs")], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "no run of job 'zzz'" in out.stderr


def test_nested_runs_are_covered_by_their_parent(tmp_path: Path) -> None:
    env = {"ENERGYMETER_JOB_ID": "n1"}
    outer = energymeter.measure("outer", env=env, pynvml=_nvml("a"), out=tmp_path / "runs",
                                region="SE").start()
    inner = _rank_run(tmp_path, {**env, "ENERGYMETER_RUN_ID": outer.run_id}, _nvml("a"),
                      seconds=0.05)
    report = outer.stop()
    merged = merge([report, inner])
    assert merged.job["nested_runs_excluded"] == 1
    assert merged.total_energy_j == pytest.approx(report.total_energy_j)


# -- SIGTERM -----------------------------------------------------------------------------------

def _spawn(script: str, tmp_path: Path) -> subprocess.Popen[str]:
    """``script`` (given the runs folder as argv[1]) started, once it printed ``ready``."""
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "runs")],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc

def test_sigterm_writes_the_report_as_interrupted(tmp_path: Path) -> None:
    script = ("import sys, time, energymeter\n"
              "with energymeter.measure('preempted', region='SE', out=sys.argv[1]) as m:\n"
              "    with m.phase('epoch'):\n"
              "        print('ready', flush=True)\n"
              "        time.sleep(60)\n")
    proc = _spawn(script, tmp_path)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM  # still dies of SIGTERM, as it would have
    [found] = find_runs([tmp_path / "runs"])
    report = found[1]
    assert report.status == "interrupted" and (report.path / "report.json").is_file()
    assert [p.name for p in report.phases] == ["epoch"] and report.duration_s > 0.2


def test_a_program_handling_sigterm_itself_is_left_alone(tmp_path: Path) -> None:
    script = ("import signal, sys, time, energymeter\n"
              "signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))\n"
              "with energymeter.measure('own', region='SE', out=sys.argv[1]) as m:\n"
              "    print('ready', flush=True)\n"
              "    time.sleep(60)\n")
    proc = _spawn(script, tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 3  # the program's own handler decided
    [(_, report)] = find_runs([tmp_path / "runs"])
    assert report.status == "failed"  # SystemExit(3) unwound the with block


@pytest.mark.parametrize("signals", [1, 2])
def test_sigterm_during_boundary_reads_and_twice(tmp_path: Path, signals: int) -> None:
    """The handler does no work itself (the signal lands inside log()'s boundary read, with the
    sampler's lock held) and a second SIGTERM (slurmstepd, then torchrun) changes nothing."""
    script = ("import sys, energymeter\n"
              "with energymeter.measure('busy', region='SE', out=sys.argv[1]) as m:\n"
              "    print('ready', flush=True)\n"
              "    i = 0\n"
              "    while True:\n"
              "        m.log(step=i)\n"
              "        i += 1\n")
    proc = _spawn(script, tmp_path)
    time.sleep(0.5)
    for _ in range(signals):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    [(_, report)] = find_runs([tmp_path / "runs"])
    assert report.status == "interrupted" and (report.path / "report.json").is_file()
    assert len(report.logs) > 10


def test_a_handler_installed_after_the_meter_decides_how_the_program_ends(tmp_path: Path
                                                                          ) -> None:
    """Lightning-style: a handler installed after measure() started calls ours (chained);
    the report is written and the program, not energymeter, decides how it ends."""
    script = ("import signal, sys, time, energymeter\n"
              "with energymeter.measure('chained', region='SE', out=sys.argv[1]) as m:\n"
              "    previous = signal.getsignal(signal.SIGTERM)\n"
              "    stop = []\n"
              "    def mine(signum, frame):\n"
              "        previous(signum, frame)\n"
              "        stop.append(1)\n"
              "    signal.signal(signal.SIGTERM, mine)\n"
              "    print('ready', flush=True)\n"
              "    while not stop:\n"
              "        time.sleep(0.01)\n"
              "    time.sleep(1.0)\n"  # the report is written meanwhile
              "print('graceful', flush=True)\n"
              "sys.exit(7)\n")
    proc = _spawn(script, tmp_path)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 7 and "graceful" in out
    [(_, report)] = find_runs([tmp_path / "runs"])
    assert report.status == "interrupted"
