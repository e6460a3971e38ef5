"""A simulated ``pynvml`` module configured by the environment, for processes that real launchers
(torchrun, srun, sbatch, mpirun) start.

With ``tests/fakes/modules`` on ``PYTHONPATH`` and ``ENERGYMETER_NVML_MODULE=fake_nvml_env``,
energymeter imports this module instead of ``pynvml``. At import it builds one
:class:`tests.fakes.nvml.FakeNVML` from:

* ``FAKE_NVML_WATTS``: comma-separated constant power per GPU (``"100,150"``: two GPUs; empty or
  unset: no GPU);
* ``FAKE_NVML_NODE``: the simulated node (default: the host name). GPU UUIDs derive from the node
  and the index (:func:`gpu_uuid`): every process of one node sees the same UUIDs, other nodes
  other ones.

The GPUs are Hopper (``NVIDIA H100 80GB HBM3``) with an energy counter that moves every
millisecond. Like the hardware's counter (energy since the driver loaded), it is one per
machine, not per process: its value is a function of ``time.monotonic()`` (one clock for every
process on Linux), the energy at the GPU's constant power since the clock's zero. So two
processes reading it agree, and the energy between two reads is the power times the time
between them, whichever process reads.

The module behaves as the ``pynvml`` module object: any other attribute (``nvmlInit``,
``NVMLError``, ``NVML_FI_DEV_POWER_INSTANT``...) is the fake's.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

_REPO = str(Path(__file__).resolve().parents[3])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from tests.fakes.nvml import FakeGPU, FakeNVML  # noqa: E402

#: How often the simulated energy counters move (quantisation: at most 1 ms x the power).
COUNTER_PERIOD_S = 0.001
GPU_NAME = "NVIDIA H100 80GB HBM3"
GPU_ARCH = "hopper"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "energymeter-tests/fake_nvml_env")

NODE = os.environ.get("FAKE_NVML_NODE", "").strip() or socket.gethostname()


def simulated_watts() -> list[float]:
    """The constant power of each simulated GPU, from ``FAKE_NVML_WATTS``."""
    text = os.environ.get("FAKE_NVML_WATTS", "").strip()
    try:
        return [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise ValueError(f"FAKE_NVML_WATTS={text!r}: expected comma-separated watts, "
                         "e.g. '100,150'") from None


def gpu_uuid(node: str, index: int) -> str:
    """The UUID of GPU ``index`` of simulated node ``node`` (``GPU-`` and 8-4-4-4-12 hex)."""
    return "GPU-" + str(uuid.uuid5(_NAMESPACE, f"{node}/{index}"))


def _build(watts: list[float]) -> FakeNVML:
    fake = FakeNVML([FakeGPU(name=GPU_NAME, arch=GPU_ARCH, power_w=w, uuid=gpu_uuid(NODE, i),
                             counter_period_s=COUNTER_PERIOD_S) for i, w in enumerate(watts)],
                    clock=time.monotonic)
    # One counter per machine: the fake's simulated time starts at the clock's zero (not at this
    # import), and the energy up to update k is in closed form (the power is constant), so the
    # fake need not integrate every millisecond since boot. Should the fake's internals change,
    # the counters stay per process (differences between two reads still right).
    states = getattr(fake, "_states", None)
    if states is not None and len(states) == len(watts):
        for state, w in zip(states, watts, strict=True):
            state.energy_at_update = (lambda k, w=w: w * k * COUNTER_PERIOD_S)
        fake.t0_s = 0.0
    return fake


FAKE: FakeNVML = _build(simulated_watts())


def __getattr__(name: str) -> Any:
    return getattr(FAKE, name)
