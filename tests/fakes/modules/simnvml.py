"""A simulated NVML module that processes started by real launchers import by name.

``ENERGYMETER_NVML_MODULE=simnvml`` (with ``tests/fakes/modules`` on ``PYTHONPATH``) makes
energymeter import this module instead of ``pynvml``. At import it builds one
:class:`tests.fakes.nvml.FakeNVML` from the environment:

* ``SIMNVML_WATTS``: comma-separated constant power per GPU (``"100,150"``: two GPUs);
* ``SIMNVML_NODE``: the simulated node (default: the host name). GPU UUIDs derive from the node
  and the index, so every process of one node sees the same UUIDs and other nodes others.

Energy counters move every millisecond and follow ``time.monotonic`` (one clock for every
process of the machine), so the energy between two reads is the power times the time between
them, whichever process reads.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

_REPO = str(Path(__file__).resolve().parents[3])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from tests.fakes.nvml import FakeGPU, FakeNVML  # noqa: E402

NODE = os.environ.get("SIMNVML_NODE") or socket.gethostname()


def simulated_watts() -> list[float]:
    text = os.environ.get("SIMNVML_WATTS", "").strip()
    return [float(w) for w in text.split(",") if w.strip()]


def gpu_uuid(node: str, index: int) -> str:
    return "GPU-" + str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{node}.gpu{index}.simnvml"))


_FAKE = FakeNVML([FakeGPU(power_w=w, uuid=gpu_uuid(NODE, i), counter_period_s=0.001)
                  for i, w in enumerate(simulated_watts())])


def __getattr__(name: str) -> Any:
    return getattr(_FAKE, name)
