"""Typed errors. Every message says what was wrong and what is accepted."""

from __future__ import annotations

import os


class EnergyMeterError(Exception):
    """Base class of every error energymeter raises on purpose."""


class ConfigError(EnergyMeterError, ValueError):
    """A setting (argument, ENERGYMETER_* variable or pyproject entry) has a bad value."""


class UsageError(EnergyMeterError, RuntimeError):
    """The API was used in an order or a way it does not support (e.g. stop before start)."""


class ProbeError(EnergyMeterError, RuntimeError):
    """A probe could not read its hardware. The sampler records it as a warning on the run."""


class ReportError(EnergyMeterError, ValueError):
    """A report or run directory could not be read: missing, malformed or of an unknown schema."""


class OutputError(ConfigError, OSError):
    """The ``out`` folder cannot hold a run (not a directory, not writable, read-only or full
    file system). A :class:`ConfigError` (the setting cannot be used) and an :class:`OSError`
    with the ``errno``, ``strerror`` and path of the failure, so that code handling either
    handles this. ``str()`` says which path, why, and what is accepted."""

    def __init__(self, message: str, errno: int | None = None,
                 filename: str | None = None) -> None:
        OSError.__init__(self, errno, os.strerror(errno) if errno else message, filename)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:  # picklable (multiprocessing), like OSError
        return (type(self), (self.message, self.errno, self.filename))
