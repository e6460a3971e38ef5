"""Whether a hardware family can be here at all, decided without importing its probe module:
a driver's device files, the powercap folder. Discovery asks these first, so that a machine
without an NVIDIA or AMD GPU (or without RAPL) does not import those modules (~2–3 ms each of
a first ``start()``); each probe's own ``discover`` asks the same function first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .base import DiscoveryContext, Unavailable

# Where a loaded NVIDIA driver shows itself: the control device (bare metal, containers started
# with the NVIDIA runtime), the driver's proc entry, and WSL2's GPU paravirtualisation device.
NVIDIA_DRIVER_PATHS = ("/dev/nvidiactl", "/proc/driver/nvidia/version", "/dev/dxg")
AMD_DRIVER_PATHS = ("/dev/kfd", "/sys/module/amdgpu")


def nvml_missing(ctx: DiscoveryContext,
                 driver_paths: tuple[str, ...] = NVIDIA_DRIVER_PATHS) -> Unavailable | None:
    """Why NVML cannot be here (no driver visible, and no simulator named), else None."""
    if ctx.pynvml is not None or ctx.nvml_module != "pynvml" \
            or any(os.path.exists(p) for p in driver_paths):
        return None
    return Unavailable("nvml", "no NVIDIA driver is visible to this process (none of "
                               f"{', '.join(driver_paths)} exists)",
                       "install the NVIDIA driver (`nvidia-smi` must work); in Docker start "
                       "the container with `--gpus all` (NVIDIA Container Toolkit). Machines "
                       "without an NVIDIA GPU can ignore this")


def amdsmi_missing(ctx: DiscoveryContext,
                   driver_paths: tuple[str, ...] = AMD_DRIVER_PATHS) -> Unavailable | None:
    """Why amdsmi cannot be here (no AMD GPU driver visible, none injected), else None."""
    if ctx.amdsmi is not None or any(os.path.exists(p) for p in driver_paths):
        return None
    return Unavailable("amdsmi", "no AMD GPU driver is visible to this process (none of "
                                 f"{', '.join(driver_paths)} exists)",
                       "install ROCm (`amd-smi list` must work); in a container pass /dev/kfd "
                       "and /dev/dri. Machines without an AMD GPU can ignore this")


def rapl_missing(ctx: DiscoveryContext) -> Unavailable | None:
    """Why RAPL cannot be read (no powercap folder), else None."""
    root = Path(ctx.powercap_root)
    if os.path.isdir(root):  # False, not an error, for a folder this user cannot search
        return None
    return Unavailable(
        "rapl",
        f"powercap root {root} does not exist: no Linux powercap sysfs here "
        "(not Linux, or /sys is not mounted in this container)",
        "on Linux, load the RAPL driver (`sudo modprobe intel_rapl_msr`); in a container, "
        "bind-mount the host's /sys/devices/virtual/powercap read-only and set "
        "ENERGYMETER_POWERCAP_ROOT to it; see docs/permissions.md")


#: Registry name -> the check discovery makes before importing that probe's module.
PRECHECKS: dict[str, Callable[[DiscoveryContext], Unavailable | None]] = {
    "rapl": rapl_missing, "nvml": nvml_missing, "amdsmi": amdsmi_missing}
