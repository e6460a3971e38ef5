"""Prometheus exposition of the daemon's counters (extra ``prometheus``: prometheus-client).

Names follow Prometheus and Kepler conventions, base units:

* ``energymeter_energy_joules_total{channel,kind,device,source,method,host,in_total,part_of}``:
  a counter per channel, cumulative joules since the daemon started (wraps undone);
* ``energymeter_power_watts{...}``: a gauge per channel, the mean power over the last sampling
  interval of the daemon's ring buffer.

Sub-zones (``part_of`` set: RAPL ``core``/``uncore``) and platform counters (``psys``) carry
``in_total="false"``: they already lie inside other channels, so a query summing energy must
select ``in_total="true"`` (``sum(rate(energymeter_energy_joules_total{in_total="true"}[1m]))``).

:func:`push_report` sends one finished run's energy to a Pushgateway (batch jobs that end
before any scrape).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..report import Report
    from .server import Daemon

LABELS = ("channel", "kind", "device", "source", "method", "host", "in_total", "part_of")


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError("Prometheus export needs prometheus-client: pip install "
                          "'energymeter-ml[prometheus]'") from None
    return prometheus_client


def _labels(channel: Any, host: str) -> list[str]:
    return [channel.id, channel.kind, channel.device or "", channel.source, channel.method,
            host, "true" if channel.in_total else "false", channel.part_of or ""]


class DaemonCollector:
    """A prometheus-client collector reading the daemon at each scrape (a fresh read for the
    counters; the ring buffer's last interval for the power gauges)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.host = socket.gethostname()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        _, energy = self.daemon.read()
        counter = CounterMetricFamily(
            "energymeter_energy_joules", "Energy since the daemon started, per channel "
            "(sum only in_total=\"true\": sub-zones and psys lie inside others)",
            labels=LABELS)
        gauge = GaugeMetricFamily("energymeter_power_watts", "Mean power over the daemon's "
                                  "last sampling interval, per channel", labels=LABELS)
        ring = list(self.daemon.ring)[-2:]
        for channel in self.daemon.channels:
            labels = _labels(channel, self.host)
            if channel.id in energy:
                counter.add_metric(labels, energy[channel.id])
            if len(ring) == 2:
                (t0, e0), (t1, e1) = ring
                if channel.id in e0 and channel.id in e1 and t1 > t0:
                    gauge.add_metric(labels, (e1[channel.id] - e0[channel.id]) / (t1 - t0)
                                     * 1e9)
        yield counter
        yield gauge


def start_metrics_server(daemon: Daemon, port: int, addr: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` for ``daemon`` on ``addr:port``; returns the HTTP server."""
    client = _client()
    registry = client.CollectorRegistry()
    registry.register(DaemonCollector(daemon))
    server, _thread = client.start_http_server(port, addr=addr, registry=registry)
    return server


def report_registry(report: Report, host: str | None = None) -> Any:
    """A registry holding one finished run's energy per channel (counters, joules) and its
    duration, labelled like the daemon's."""
    client = _client()
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    host = host or str(report.host.get("hostname") or socket.gethostname())

    class _Run:
        def collect(self) -> Iterator[Any]:
            counter = CounterMetricFamily("energymeter_energy_joules", "Energy of the run, per "
                                          "channel", labels=(*LABELS, "run"))
            for ce in report.channels:
                counter.add_metric([*_labels(ce.channel, host), report.name], ce.energy_j)
            yield counter
            duration = GaugeMetricFamily("energymeter_run_duration_seconds",
                                         "Duration of the run", labels=("run", "host"))
            duration.add_metric([report.name, host], report.duration_s)
            yield duration
            if report.emissions_g is not None:
                emissions = GaugeMetricFamily("energymeter_run_emissions_grams",
                                              "Emissions of the run (gCO2e)",
                                              labels=("run", "host"))
                emissions.add_metric([report.name, host], report.emissions_g)
                yield emissions

    registry = client.CollectorRegistry()
    registry.register(_Run())
    return registry


def push_report(report: Report, gateway: str, job: str = "energymeter",
                grouping: Sequence[tuple[str, str]] = ()) -> None:
    """Push ``report`` to the Pushgateway at ``gateway`` (``host:port`` or a URL) under
    ``job`` and the grouping key (default: instance = the run's host, run = its name)."""
    client = _client()
    key = dict(grouping) or {"instance": str(report.host.get("hostname") or
                                             socket.gethostname()), "run": report.name}
    client.push_to_gateway(gateway, job=job, registry=report_registry(report),
                           grouping_key=key, timeout=10)
