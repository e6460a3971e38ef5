"""OpenTelemetry export of the daemon's counters (extra ``otel``), in the ``hw.*`` semantic
conventions of hardware metrics:

* ``hw.energy`` (counter, unit ``J``): cumulative energy per channel since the daemon started;
* ``hw.power`` (gauge, unit ``W``): the mean power over the daemon's last sampling interval.

Attributes: ``hw.id`` (the channel id), ``hw.type`` (``cpu``, ``memory`` for DRAM, ``gpu``,
``power_supply``-like platform counters as ``psys``... see :data:`HW_TYPES`), ``hw.name`` (the
device), ``hw.parent`` (a sub-zone's parent channel), and ``energymeter.method``,
``energymeter.source``, ``energymeter.in_total`` (sub-zones and psys: ``false``, never summed).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from .server import Daemon

#: energymeter kinds as OpenTelemetry ``hw.type`` values.
HW_TYPES = {"cpu": "cpu", "dram": "memory", "gpu": "gpu", "psys": "psys", "soc": "cpu"}


def _attributes(channel: Any) -> dict[str, str]:
    out = {"hw.id": channel.id, "hw.type": HW_TYPES.get(channel.kind, channel.kind),
           "hw.name": channel.device or channel.id, "energymeter.method": channel.method,
           "energymeter.source": channel.source,
           "energymeter.in_total": "true" if channel.in_total else "false"}
    if channel.part_of:
        out["hw.parent"] = channel.part_of
    return out


def instrument(daemon: Daemon, meter_provider: Any) -> None:
    """Register ``hw.energy`` and ``hw.power`` for ``daemon`` on an OpenTelemetry
    ``MeterProvider`` (the caller owns the provider and its readers/exporters)."""
    from opentelemetry.metrics import Observation

    meter = meter_provider.get_meter("energymeter")

    def energy(_options: Any) -> Iterable[Any]:
        _, values = daemon.read()
        for channel in daemon.channels:
            if channel.id in values:
                yield Observation(values[channel.id], _attributes(channel))

    def power(_options: Any) -> Iterable[Any]:
        ring = list(daemon.ring)[-2:]
        if len(ring) < 2:
            return
        (t0, e0), (t1, e1) = ring
        for channel in daemon.channels:
            if channel.id in e0 and channel.id in e1 and t1 > t0:
                yield Observation((e1[channel.id] - e0[channel.id]) / (t1 - t0) * 1e9,
                                  _attributes(channel))

    meter.create_observable_counter("hw.energy", callbacks=[energy], unit="J",
                                    description="Energy consumed by the component")
    meter.create_observable_gauge("hw.power", callbacks=[power], unit="W",
                                  description="Instantaneous power consumed by the component")


def start_otlp_export(daemon: Daemon, endpoint: str, interval_s: float = 10.0) -> Any:
    """Export ``daemon``'s metrics by OTLP/HTTP to ``endpoint`` (e.g.
    ``http://collector:4318/v1/metrics``) every ``interval_s``; returns the provider
    (``shutdown()`` it to stop)."""
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    except ImportError:
        raise ConfigError("OpenTelemetry export needs opentelemetry-sdk and "
                          "opentelemetry-exporter-otlp-proto-http: pip install "
                          "'energymeter-ml[otel]'") from None
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint),
                                           export_interval_millis=interval_s * 1000)
    provider = MeterProvider(metric_readers=[reader])
    instrument(daemon, provider)
    return provider
