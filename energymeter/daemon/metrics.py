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

from .._lazy import LazyLogger
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..report import Report
    from .server import Daemon

log = LazyLogger("energymeter")

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


#: The most scrapers served at once on /metrics; one more gets 503 and is closed.
METRICS_MAX_CONNECTIONS = 64
#: A scraper that has not sent its whole request in this long is closed.
METRICS_REQUEST_TIMEOUT_S = 10.0
#: The longest HTTP request head accepted.
METRICS_MAX_HEAD_BYTES = 8192


def _http(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8",
          head_only: bool = False) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head if head_only else head + body


class MetricsServer:
    """``/metrics`` on the daemon's bounded loop (one thread; see
    :class:`energymeter.daemon.server.SelectorServer`): one request per connection, answered
    with ``generate_latest(registry)``; a connection cap, a request timeout, a send timeout.
    prometheus-client's own server starts a thread per connection and never times one out."""

    def __init__(self, registry: Any, addr: str, port: int, *,
                 max_connections: int = METRICS_MAX_CONNECTIONS,
                 request_timeout_s: float = METRICS_REQUEST_TIMEOUT_S) -> None:
        import threading

        from .server import SelectorServer

        client = _client()
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((addr, port))
            listener.listen(1024)
        except OSError:
            listener.close()
            raise
        outer = self

        class _Http(SelectorServer):
            max_request_bytes = METRICS_MAX_HEAD_BYTES

            def over_cap(self) -> bytes:
                return _http("503 Service Unavailable", f"too many connections (cap "
                             f"{self.max_connections})\n".encode())

            def on_data(self, conn: Any) -> None:
                end = conn.rbuf.find(b"\r\n\r\n")
                if end < 0:
                    if len(conn.rbuf) > self.max_request_bytes:
                        self.refuse(conn, _http("431 Request Header Fields Too Large",
                                                b"request head too long\n"))
                    return
                self.refuse(conn, outer.respond(bytes(conn.rbuf[:end])))

        # Idle and send timeouts are the request timeout: a scraper sends one request, reads
        # one answer, and is closed.
        self._server = _Http(listener, max_connections=max_connections,
                             idle_timeout_s=request_timeout_s, send_timeout_s=request_timeout_s)
        self._registry = registry
        self._generate = client.generate_latest
        self._content_type = client.CONTENT_TYPE_LATEST
        self.server_address = listener.getsockname()
        self.server_port = self.server_address[1]
        self.failed_scrapes = 0
        self._thread = threading.Thread(target=self._serve, name="energymeter-metrics",
                                        daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self._server.serve_forever(poll_interval=0.5)
        except Exception:
            log.exception("energymeter daemon: the /metrics loop died")
            raise

    @property
    def connections(self) -> int:
        return self._server.connections

    @property
    def alive(self) -> bool:
        """Whether the /metrics loop runs."""
        return self._thread.is_alive()

    def respond(self, head: bytes) -> bytes:
        """The whole HTTP answer to a request ``head`` (request line and headers)."""
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return _http("400 Bad Request", b"not an HTTP request\n")
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return _http("405 Method Not Allowed", b"GET /metrics\n")
        if target not in (b"/metrics", b"/"):
            return _http("404 Not Found", b"the metrics are at /metrics\n")
        try:
            body = self._generate(self._registry)
        except Exception:  # noqa: BLE001 - this scrape fails, not the loop
            self.failed_scrapes += 1
            if self.failed_scrapes <= 10 or self.failed_scrapes % 1000 == 0:
                log.exception("energymeter daemon: /metrics failed (%d so far)",
                              self.failed_scrapes)
            return _http("500 Internal Server Error", b"the metrics could not be collected; "
                         b"see the daemon's log\n", head_only=method == b"HEAD")
        return _http("200 OK", body, self._content_type, head_only=method == b"HEAD")

    def shutdown(self) -> None:
        """Stop serving and close every connection."""
        self._server.shutdown()
        self._thread.join(timeout=5)
        self._server.server_close()


def start_metrics_server(daemon: Daemon, port: int, addr: str = "127.0.0.1", *,
                         max_connections: int = METRICS_MAX_CONNECTIONS,
                         request_timeout_s: float = METRICS_REQUEST_TIMEOUT_S
                         ) -> MetricsServer:
    """Serve ``/metrics`` for ``daemon`` on ``addr:port`` (one thread, bounded: see
    :class:`MetricsServer`); returns the server (``shutdown()`` stops it)."""
    client = _client()
    registry = client.CollectorRegistry()
    registry.register(DaemonCollector(daemon))
    return MetricsServer(registry, addr, port, max_connections=max_connections,
                         request_timeout_s=request_timeout_s)


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
