"""``measure(sync=...)``: wait for queued GPU work before every boundary read.

GPU frameworks run kernels asynchronously: when Python leaves a ``with measure():`` block the
GPU may still be working on it. A sync function, run before each boundary read, makes the
energy and duration of a block those of the work it launched. :func:`resolve_sync` turns the
user's ``sync`` argument into that function; the framework is imported when it is resolved
(at ``Meter.start()``), never when energymeter is imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigError

FRAMEWORKS = {"torch": "PyTorch", "jax": "JAX", "cupy": "CuPy"}
ACCEPTED = "accepted: 'torch', 'jax', 'cupy', a callable, or None"


def resolve_sync(
    sync: str | Callable[[], Any] | None,
    *,
    modules: Mapping[str, Any] | None = None,
) -> Callable[[], None] | None:
    """The function to run before every boundary read, or None for no synchronisation.

    ``sync``: None (no sync), a callable (used as is), or the name of a framework:

    * ``"torch"``: ``torch.cuda.synchronize(i)`` for every visible device that PyTorch has
      used (memory reserved by its caching allocator) and the current device; nothing when
      CUDA is unavailable or not initialised yet. Devices the program never touched are
      skipped because synchronising one would create a CUDA context there (hundreds of MB
      of GPU memory per process, a real cost under DDP where every rank sees every GPU).
    * ``"jax"``: for every local device, a tiny computation is placed on the device and
      awaited (``(jax.device_put(0, d) + 0).block_until_ready()``: it runs after the work
      already queued there), then ``jax.effects_barrier()`` where JAX has it.
    * ``"cupy"``: ``cupy.cuda.Device(i).synchronize()`` for every visible device.

    ``modules`` maps a framework name to the module object to use (tests inject fakes; a
    None value means "not installed"); by default the framework is imported.

    Raises :class:`~energymeter.errors.ConfigError` for an unknown name or a framework that
    is not installed.
    """
    if sync is None:
        return None
    if callable(sync):
        return sync  # type: ignore[return-value]
    if not isinstance(sync, str):
        raise ConfigError(f"sync={sync!r} is not understood; {ACCEPTED}")
    name = sync.strip().lower()
    if name not in FRAMEWORKS:
        raise ConfigError(f"sync={sync!r} is not a known framework; {ACCEPTED}")
    module = _import(name, modules)
    if module is None:
        raise ConfigError(f"sync={sync!r} needs {FRAMEWORKS[name]}, which is not installed; "
                          f"{ACCEPTED}")
    return {"torch": _torch_sync, "jax": _jax_sync, "cupy": _cupy_sync}[name](module)


def _import(name: str, modules: Mapping[str, Any] | None) -> Any:
    if modules is not None and name in modules:
        return modules[name]
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _torch_sync(torch: Any) -> Callable[[], None]:
    def sync() -> None:
        cuda = torch.cuda
        if not cuda.is_available() or not cuda.is_initialized():
            return  # no CUDA work can have been queued
        current = cuda.current_device()
        for i in range(cuda.device_count()):
            if i == current or cuda.memory_reserved(i) > 0:
                cuda.synchronize(i)

    return sync


def _jax_sync(jax: Any) -> Callable[[], None]:
    def sync() -> None:
        for device in jax.local_devices():
            (jax.device_put(0, device) + 0).block_until_ready()
        barrier = getattr(jax, "effects_barrier", None)
        if barrier is not None:
            barrier()

    return sync


def _cupy_sync(cupy: Any) -> Callable[[], None]:
    def sync() -> None:
        for i in range(cupy.cuda.runtime.getDeviceCount()):
            cupy.cuda.Device(i).synchronize()

    return sync
