"""Facts about the machine and the software a run recorded them on (the report's ``host`` and
``software`` blocks)."""

from __future__ import annotations

import os
import sys
from typing import Any

from .. import _ids
from .._version import __version__
from ..probes import Discovery

# Software whose version is worth recording when the user's program has already imported it
# (we never import it ourselves just to ask).
SOFTWARE = ("numpy", "torch", "jax", "cupy", "tensorflow", "pynvml", "psutil", "pandas")


def software() -> dict[str, Any]:
    """Versions of Python, energymeter and the frameworks the program has imported."""
    info: dict[str, Any] = {"energymeter": __version__, "python": _python_version()}
    for name in SOFTWARE:
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None) if module else None
        if version:
            info[name] = str(version)
    return info


def host(discovery: Discovery) -> dict[str, Any]:
    """Host name, OS, CPU count and what each probe of ``discovery`` found."""
    os_name, machine = _os_and_machine()
    return {
        "hostname": _ids.hostname(),
        "os": os_name,
        "machine": machine,
        "logical_cpus": os.cpu_count(),
        "probes": [p.describe() for p in discovery.probes],
    }


def _python_version() -> str:
    """``platform.python_version()``: "3.11.7"."""
    version = sys.version.split()[0]
    return version.rstrip("+")


def _os_and_machine() -> tuple[str, str]:
    """``platform.platform()`` and ``platform.machine()`` ("Linux-6.1.0-x86_64-with-glibc2.36",
    "x86_64") from ``os.uname()`` where there is one: the ``platform`` module imports
    ``subprocess`` (~5 ms of a first ``stop()``)."""
    uname = getattr(os, "uname", None)
    if uname is None or sys.platform != "linux":
        import platform

        return platform.platform(), platform.machine()
    u = uname()
    name = f"{u.sysname}-{u.release}-{u.machine}"
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        libc = ""
    if libc.startswith("glibc "):
        name += "-with-glibc" + libc.split()[1]
    return name, u.machine
