"""Typed errors. Every message says what was wrong and what is accepted."""

from __future__ import annotations


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
