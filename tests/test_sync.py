"""resolve_sync(): None, callables, framework names (with injected fake frameworks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from energymeter.errors import ConfigError
from energymeter.session.sync import resolve_sync

REPO = Path(__file__).resolve().parents[1]


def test_none_means_no_sync() -> None:
    assert resolve_sync(None) is None


def test_callable_is_used_as_is() -> None:
    calls: list[int] = []

    def my_sync() -> None:
        calls.append(1)

    assert resolve_sync(my_sync) is my_sync


@pytest.mark.parametrize("value", ["tensorflow", "", "cuda", "Torchh"])
def test_unknown_name_lists_accepted_values(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_sync(value)
    message = str(info.value)
    assert repr(value) in message
    assert "accepted: 'torch', 'jax', 'cupy', a callable, or None" in message


def test_non_string_non_callable_is_config_error() -> None:
    with pytest.raises(ConfigError, match="accepted"):
        resolve_sync(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "label"), [("torch", "PyTorch"), ("jax", "JAX"),
                                             ("cupy", "CuPy")])
def test_framework_not_installed(name: str, label: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_sync(name, modules={name: None})
    assert str(info.value) == (f"sync={name!r} needs {label}, which is not installed; "
                               "accepted: 'torch', 'jax', 'cupy', a callable, or None")


def test_real_import_of_a_missing_framework() -> None:
    # torch is hidden in a fresh interpreter (the test extra installs it): a real import fails.
    code = ("import sys; sys.modules['torch'] = None\n"
            "from energymeter.errors import ConfigError\n"
            "from energymeter.session.sync import resolve_sync\n"
            "try:\n    resolve_sync('torch')\nexcept ConfigError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert "needs PyTorch, which is not installed" in out.stdout


class FakeTorchCuda:
    def __init__(self, *, available: bool = True, initialized: bool = True,
                 reserved: tuple[int, ...] = (0, 0, 0), current: int = 0) -> None:
        self.available = available
        self.initialized = initialized
        self.reserved = reserved
        self.current = current
        self.synced: list[int] = []

    def is_available(self) -> bool:
        return self.available

    def is_initialized(self) -> bool:
        return self.initialized

    def device_count(self) -> int:
        return len(self.reserved)

    def current_device(self) -> int:
        return self.current

    def memory_reserved(self, device: int) -> int:
        return self.reserved[device]

    def synchronize(self, device: int) -> None:
        self.synced.append(device)


def test_torch_syncs_every_device_it_used() -> None:
    cuda = FakeTorchCuda(reserved=(2**20, 0, 2**30, 0), current=1)
    sync = resolve_sync(" Torch ", modules={"torch": SimpleNamespace(cuda=cuda)})
    assert sync is not None
    sync()
    assert cuda.synced == [0, 1, 2]  # device 3 never used: no context is created there


@pytest.mark.parametrize("cuda", [FakeTorchCuda(available=False),
                                  FakeTorchCuda(initialized=False)])
def test_torch_without_cuda_work_is_a_no_op(cuda: FakeTorchCuda) -> None:
    sync = resolve_sync("torch", modules={"torch": SimpleNamespace(cuda=cuda)})
    sync()
    assert cuda.synced == []


class FakeJaxArray:
    def __init__(self, log: list[str], device: str) -> None:
        self.log = log
        self.device = device

    def __add__(self, other: Any) -> FakeJaxArray:
        self.log.append(f"add:{self.device}")
        return self

    def block_until_ready(self) -> FakeJaxArray:
        self.log.append(f"wait:{self.device}")
        return self


def fake_jax(log: list[str], barrier: bool) -> SimpleNamespace:
    jax = SimpleNamespace(
        local_devices=lambda: ["gpu:0", "gpu:1"],
        device_put=lambda value, device: FakeJaxArray(log, device),
    )
    if barrier:
        jax.effects_barrier = lambda: log.append("barrier")
    return jax


@pytest.mark.parametrize("barrier", [True, False])
def test_jax_waits_on_every_local_device(barrier: bool) -> None:
    log: list[str] = []
    sync = resolve_sync("jax", modules={"jax": fake_jax(log, barrier)})
    sync()
    expected = ["add:gpu:0", "wait:gpu:0", "add:gpu:1", "wait:gpu:1"]
    assert log == expected + (["barrier"] if barrier else [])


def test_cupy_syncs_every_device() -> None:
    synced: list[int] = []

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        def synchronize(self) -> None:
            synced.append(self.index)

    cupy = SimpleNamespace(cuda=SimpleNamespace(
        Device=Device, runtime=SimpleNamespace(getDeviceCount=lambda: 3)))
    sync = resolve_sync("cupy", modules={"cupy": cupy})
    sync()
    assert synced == [0, 1, 2]

