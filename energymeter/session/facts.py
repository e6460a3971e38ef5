"""Facts about the machine and the software a run recorded them on (the report's ``host`` and
``software`` blocks)."""

from __future__ import annotations

import os
import platform
import socket
import sys
from typing import Any

from .._version import __version__
from ..probes import Discovery

# Software whose version is worth recording when the user's program has already imported it
# (we never import it ourselves just to ask).
SOFTWARE = ("numpy", "torch", "jax", "cupy", "tensorflow", "pynvml", "psutil", "pandas")


def software() -> dict[str, Any]:
    """Versions of Python, energymeter and the frameworks the program has imported."""
    info: dict[str, Any] = {"energymeter": __version__, "python": platform.python_version()}
    for name in SOFTWARE:
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None) if module else None
        if version:
            info[name] = str(version)
    return info


def host(discovery: Discovery) -> dict[str, Any]:
    """Host name, OS, CPU count and what each probe of ``discovery`` found."""
    return {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "probes": [p.describe() for p in discovery.probes],
    }
