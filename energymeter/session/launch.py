"""Which launcher started this process, and which rank measures what.

Launchers announce themselves through environment variables: torchrun (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK``...), SLURM (``SLURM_JOB_ID``,
``SLURM_STEP_ID``, ``SLURM_PROCID``, ``SLURM_LOCALID``, ``SLURM_NODEID``, ``SLURMD_NODENAME``) and
MPI (OpenMPI's ``OMPI_COMM_WORLD_*``, MPICH/Intel MPI's ``PMI_*`` and ``MPI_LOCALRANKID``,
MVAPICH's ``MV2_COMM_WORLD_*``, PMIx's ``PMIX_RANK``). :func:`detect_launch` reads them into a
:class:`Launch`; :func:`plan_ranks` decides, from the ``ranks`` setting, what this process
measures so that a job never counts a device twice:

* ``node`` (default): local rank 0 measures every device of its node visible to the job;
  the other ranks record their phases, logs and process resources only.
* ``own``: each rank measures its own GPU(s) (``cuda:LOCAL_RANK`` of what it sees, or the one
  GPU it sees) and the CPU energy of the node, with its process tree's share of it.
* ``all``: every rank measures every device it sees (``energymeter.merge`` de-duplicates).

The innermost launcher gives the ranks (torchrun inside ``srun``: torchrun's), the outermost
one with a job id gives the job (``srun`` around torchrun: SLURM's job id).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import _ids

#: The variable that names the job when no launcher does (or to override it).
JOB_ID_ENV = "ENERGYMETER_JOB_ID"
#: The variable that names this node in reports (default: SLURMD_NODENAME, else the host
#: name); containers with random host names set it to the machine's name.
NODE_ENV = "ENERGYMETER_NODE"

#: SLURM job facts recorded in reports (so results join with ``sacct``), by report key.
SLURM_FACTS = {
    "job_name": "SLURM_JOB_NAME",
    "partition": "SLURM_JOB_PARTITION",
    "account": "SLURM_JOB_ACCOUNT",
    "qos": "SLURM_JOB_QOS",
    "cluster": "SLURM_CLUSTER_NAME",
    "nodelist": "SLURM_JOB_NODELIST",
    "num_nodes": "SLURM_JOB_NUM_NODES",
    "ntasks": "SLURM_NTASKS",
    "cpus_on_node": "SLURM_CPUS_ON_NODE",
    "job_cpus_per_node": "SLURM_JOB_CPUS_PER_NODE",
    "cpus_per_task": "SLURM_CPUS_PER_TASK",
    "gpus": "SLURM_GPUS",
    "gpus_on_node": "SLURM_GPUS_ON_NODE",
    "job_gpus": "SLURM_JOB_GPUS",
    "step_gpus": "SLURM_STEP_GPUS",
    "array_job_id": "SLURM_ARRAY_JOB_ID",
    "array_task_id": "SLURM_ARRAY_TASK_ID",
    "restart_count": "SLURM_RESTART_COUNT",
    "step_num_nodes": "SLURM_STEP_NUM_NODES",
    "step_num_tasks": "SLURM_STEP_NUM_TASKS",
    "step_nodelist": "SLURM_STEP_NODELIST",
    "gpus_per_node": "SLURM_GPUS_PER_NODE",
    "gpus_per_task": "SLURM_GPUS_PER_TASK",
    "tres_per_task": "SLURM_TRES_PER_TASK",
    "mem_per_node_mb": "SLURM_MEM_PER_NODE",
}

# (rank, local rank, world size, local world size) variables of each MPI flavour.
_MPI_FLAVOURS = (
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE",
     "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("mvapich", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_SIZE",
     "MV2_COMM_WORLD_LOCAL_SIZE"),
    ("mpich", "PMI_RANK", "MPI_LOCALRANKID", "PMI_SIZE", "MPI_LOCALNRANKS"),
    ("pmix", "PMIX_RANK", "", "", ""),
)


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip() if name else ""
    return int(value) if value.isascii() and value.isdigit() else None


@dataclass(frozen=True)
class Launch:
    """What the launcher told this process. ``launcher``: ``torchrun``, ``slurm``, ``mpi``
    (with ``mpi`` naming the flavour) or ``None``; ``job_id`` and the variable it came from;
    ranks (``None`` where no launcher says); ``node``: this node's name; ``slurm``: the job
    facts of :data:`SLURM_FACTS` that are set."""

    launcher: str | None = None
    mpi: str | None = None
    job_id: str | None = None
    job_id_source: str | None = None
    step_id: str | None = None
    node: str = ""
    node_rank: int | None = None
    nodes: int | None = None
    rank: int | None = None
    local_rank: int | None = None
    world_size: int | None = None
    local_world_size: int | None = None
    slurm: Mapping[str, str] = field(default_factory=dict)

    @property
    def distributed(self) -> bool:
        """Whether a launcher started this process as one of several ranks (or a job id was
        given): then the ``ranks`` setting decides what it measures."""
        return self.launcher is not None or self.job_id is not None


def _job_id(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    for name in (JOB_ID_ENV, "SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "FLUX_JOB_ID"):
        value = env.get(name, "").strip()
        if value:
            return value, name
    run_id = env.get("TORCHELASTIC_RUN_ID", "").strip()
    if run_id and run_id.lower() != "none":  # torchrun's static rendezvous says "none"
        return run_id, "TORCHELASTIC_RUN_ID"
    for name in ("OMPI_MCA_ess_base_jobid", "PMIX_NAMESPACE"):
        value = env.get(name, "").strip()
        if value:
            return value, name
    addr, port = env.get("MASTER_ADDR", "").strip(), env.get("MASTER_PORT", "").strip()
    if addr and port and "LOCAL_RANK" in env:
        # The rendezvous address is shared by every node of a torchrun job (not unique over
        # time: runs are also matched by overlapping times when merged).
        return f"{addr}:{port}", "MASTER_ADDR:MASTER_PORT"
    return None, None


def detect_launch(env: Mapping[str, str], hostname: str | None = None) -> Launch:
    """The :class:`Launch` described by ``env`` (pure: reads nothing else but the host name,
    ``hostname`` when given)."""
    host = hostname if hostname is not None else _ids.hostname()
    node = (env.get(NODE_ENV, "").strip() or env.get("SLURMD_NODENAME", "").strip()
            or host.split(".")[0] or host)
    job_id, job_source = _job_id(env)
    slurm = {key: env[var] for key, var in SLURM_FACTS.items() if env.get(var, "").strip()}
    in_slurm = bool(env.get("SLURM_JOB_ID", "").strip())
    fields: dict[str, Any] = {}
    if all(_int(env, n) is not None for n in ("RANK", "LOCAL_RANK", "WORLD_SIZE")):
        nnodes = _int(env, "GROUP_WORLD_SIZE")
        local_world = _int(env, "LOCAL_WORLD_SIZE")
        world = _int(env, "WORLD_SIZE")
        if nnodes is None and local_world and world and world % local_world == 0:
            nnodes = world // local_world
        fields = dict(launcher="torchrun", rank=_int(env, "RANK"),
                      local_rank=_int(env, "LOCAL_RANK"), world_size=world,
                      local_world_size=local_world, node_rank=_int(env, "GROUP_RANK"),
                      nodes=nnodes)
    else:
        for flavour, rank, local, size, local_size in _MPI_FLAVOURS:
            if _int(env, rank) is not None:
                world, local_world = _int(env, size), _int(env, local_size)
                fields = dict(launcher="mpi", mpi=flavour, rank=_int(env, rank),
                              local_rank=_int(env, local), world_size=world,
                              local_world_size=local_world,
                              nodes=(world // local_world if world and local_world
                                     and world % local_world == 0 else None))
                break
    if in_slurm and fields.get("launcher") == "mpi" and env.get("SLURM_STEP_ID") \
            and fields.get("rank") == _int(env, "SLURM_PROCID"):
        # srun --mpi=pmix|pmi2 (or MpiDefault): the MPI variables are SLURM's own tasks', with
        # no local rank; SLURM gives it.
        fields.update(launcher="slurm", local_rank=_int(env, "SLURM_LOCALID"),
                      world_size=fields.get("world_size") or _int(env, "SLURM_STEP_NUM_TASKS"))
    if in_slurm:
        # SLURM's node index and node count hold for every launcher it started.
        fields.setdefault("node_rank", None)
        if fields.get("node_rank") is None:
            fields["node_rank"] = _int(env, "SLURM_NODEID")
        if fields.get("nodes") is None:
            fields["nodes"] = (_int(env, "SLURM_STEP_NUM_NODES")
                               or _int(env, "SLURM_JOB_NUM_NODES"))
        if "launcher" not in fields:
            fields.update(launcher="slurm", rank=_int(env, "SLURM_PROCID"),
                          local_rank=_int(env, "SLURM_LOCALID"),
                          world_size=(_int(env, "SLURM_STEP_NUM_TASKS")
                                      if env.get("SLURM_STEP_ID") else 1))
    step = env.get("SLURM_STEP_ID", "").strip() or None
    return Launch(job_id=job_id, job_id_source=job_source, step_id=step, node=node,
                  slurm=slurm, **fields)


@dataclass(frozen=True)
class RankPlan:
    """What this process measures. ``measures``: ``node`` (every device of the node visible
    to the job), ``own`` (its own GPUs; CPU with its share), ``all`` (everything it sees),
    ``gpus`` (the GPUs it sees, one per task; another rank measures the CPU),
    ``nothing`` (phases, logs and its own process resources only) or ``single`` (no launcher:
    an ordinary run). ``visible``: the ``CUDA_VISIBLE_DEVICES`` value discovery uses instead
    of the process's own (``None``: the process's own). ``reason``: why, in words."""

    mode: str
    measures: str
    reason: str
    visible: str | None = None

    @property
    def gpus_only(self) -> bool:
        """Whether only GPUs are measured (the CPU is another rank's)."""
        return self.measures == "gpus"


def _entries(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [e.strip() for e in value.split(",") if e.strip()]


def plan_ranks(launch: Launch, mode: str, env: Mapping[str, str]) -> RankPlan:
    """What this process measures under ``launch`` with the ``ranks`` setting ``mode``."""
    if not launch.distributed:
        return RankPlan(mode, "single", "no launcher started this process: it measures every "
                        "device it sees")
    if launch.world_size == 1 and mode != "own":
        return RankPlan(mode, "node", f"the only rank of job {launch.job_id or '?'} on "
                        f"{launch.node}: it measures every device it sees")
    visible = env.get("CUDA_VISIBLE_DEVICES")
    local = launch.local_rank
    who = (f"rank {launch.rank}" if launch.rank is not None else "this rank") + (
        f" (local rank {local} on {launch.node})" if local is not None else f" on {launch.node}")
    if mode == "all":
        return RankPlan(mode, "all", f"{who} measures every device it sees (ranks=all; "
                        "merging de-duplicates devices by GPU UUID and host)")
    if mode == "own":
        entries = _entries(visible)
        if entries is not None and len(entries) == 1:
            return RankPlan(mode, "own", f"{who} measures the one GPU it sees "
                            f"(CUDA_VISIBLE_DEVICES={visible}) and its process tree's share "
                            "of the node's CPU energy (ranks=own)", visible=visible)
        if local is None:
            return RankPlan(mode, "all", f"{who}: ranks=own needs the local rank, which "
                            f"{launch.launcher or 'no launcher'} does not give; it measures "
                            "every device it sees (merging de-duplicates them)")
        if entries is not None:
            chosen = entries[local] if local < len(entries) else ""
        else:
            chosen = str(local)
        gpus = "no GPU" if not chosen else f"GPU {chosen}"
        return RankPlan(mode, "own", f"{who} measures {gpus} (cuda:LOCAL_RANK of the GPUs it "
                        "sees, the torchrun/DDP convention) and its process tree's share of "
                        "the node's CPU energy (ranks=own)", visible=chosen)
    # node
    if local is None:
        return RankPlan(mode, "all", f"{who}: {launch.launcher or 'no launcher'} gives no "
                        "local rank, so no "
                        "rank can be chosen to measure the node; every rank measures what it "
                        "sees and merging de-duplicates devices by GPU UUID and host")
    step_gpus = launch.slurm.get("step_gpus") or launch.slurm.get("job_gpus")
    if step_gpus and _entries(visible) is not None \
            and len(_entries(visible) or []) < len(_entries(step_gpus) or []):
        # One GPU per task (--gpus-per-task): each rank sees only its own, and SLURM's ids are
        # global, not what this process may open. So each rank measures the GPUs it sees and
        # local rank 0 the CPU too; merging counts each GPU once by UUID.
        if local != 0:
            return RankPlan(mode, "gpus", f"{who} measures the GPU(s) it sees "
                            f"(CUDA_VISIBLE_DEVICES={visible}: one GPU per task); local rank "
                            f"0 of {launch.node} measures the CPU (ranks=node)")
        return RankPlan(mode, "node", f"{who} measures the GPU(s) it sees "
                        f"(CUDA_VISIBLE_DEVICES={visible}: one GPU per task, the others' ranks "
                        f"measure theirs) and the CPU of {launch.node} (ranks=node)")
    if local != 0:
        return RankPlan(mode, "nothing", f"{who} records phases, logs and its own process "
                        f"resources; local rank 0 of {launch.node} measures the node's devices "
                        "(ranks=node)")
    return RankPlan(mode, "node", f"{who} measures every device of {launch.node} visible to "
                    "the job (ranks=node); the node's other ranks record phases and logs only")


def job_block(launch: Launch, plan: RankPlan) -> dict[str, Any] | None:
    """The report's ``job`` block (``None`` for an ordinary run under no launcher)."""
    if not launch.distributed:
        return None
    out: dict[str, Any] = {
        "id": launch.job_id, "id_source": launch.job_id_source, "launcher": launch.launcher,
        "step": launch.step_id, "node": launch.node, "node_rank": launch.node_rank,
        "nodes": launch.nodes, "rank": launch.rank, "local_rank": launch.local_rank,
        "world_size": launch.world_size, "local_world_size": launch.local_world_size,
        "ranks_mode": plan.mode, "measures": plan.measures, "reason": plan.reason,
    }
    if launch.mpi:
        out["mpi"] = launch.mpi
    if launch.slurm:
        out["slurm"] = dict(launch.slurm)
    return out
