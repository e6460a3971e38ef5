"""``energymeter daemon``: sample this machine's probes once for everyone, serve the counters
read-only on a Unix socket (:mod:`energymeter.daemon.server`), optionally ``/metrics`` for
Prometheus (:mod:`energymeter.daemon.metrics`); ``energymeter push``: send finished runs to a
Prometheus Pushgateway."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from .common import CONTEXT, err, fail
from .compare import find_runs

log = logging.getLogger("energymeter")

#: How often the main thread checks that the daemon's threads still run.
WATCH_S = 0.5


@click.command(context_settings=CONTEXT)
@click.option("--socket", "socket_path", type=click.Path(path_type=Path), default=None,
              metavar="PATH", help="Unix socket to listen on [default: "
                                   "/run/energymeter/energymeter.sock].")
@click.option("--group", default=None, metavar="NAME",
              help="Group whose members may read the counters (socket mode 0660, peers "
                   "checked with SO_PEERCRED); root and the daemon's user always may.")
@click.option("--allow-all", is_flag=True, default=False,
              help="Let every local user read the counters (socket mode 0666). RAPL was made "
                   "root-only against power side channels (Platypus): prefer --group.")
@click.option("--interval", "interval_s", type=click.FloatRange(min=0.001, max=3600),
              default=0.1, show_default=True, metavar="SECONDS",
              help="Sampling interval of the daemon (counters are read at least this often, "
                   "so wraps are seen).")
@click.option("--ring-rows", type=click.IntRange(min=2), default=6000, show_default=True,
              metavar="N", help="Recent rows kept for clients that ask for a stream.")
@click.option("--max-connections", type=click.IntRange(min=1), default=1024,
              show_default=True, metavar="N",
              help="Clients served at once; one more is told 'too many connections' and "
                   "closed.")
@click.option("--idle-timeout", "idle_timeout_s", type=click.FloatRange(min=1.0),
              default=60.0, show_default=True, metavar="SECONDS",
              help="Close a client that sends nothing for this long (clients reconnect; "
                   "at least 1 s).")
@click.option("--metrics-port", type=click.IntRange(min=0, max=65535), default=None,
              metavar="PORT", help="Also serve Prometheus /metrics on this TCP port (extra "
                                   "prometheus).")
@click.option("--metrics-addr", default="127.0.0.1", show_default=True, metavar="ADDR",
              help="Address of /metrics (0.0.0.0 to let a remote Prometheus scrape it).")
@click.option("--otlp-endpoint", default=None, metavar="URL",
              help="Also export hw.energy/hw.power by OTLP/HTTP to URL, e.g. "
                   "http://collector:4318/v1/metrics (extra otel).")
def daemon(socket_path: Path | None, group: str | None, allow_all: bool, interval_s: float,
           ring_rows: int, max_connections: int, idle_timeout_s: float,
           metrics_port: int | None, metrics_addr: str,
           otlp_endpoint: str | None) -> None:
    """Sample this machine's energy counters for every user (run as root).

    Since Linux 5.10 RAPL counters are root-only: run this as root (or as a user with read
    access to them) and measure() / energymeter run of any user in --group read them through
    its socket, with method counter (source "rapl via daemon"), instead of an estimate. The
    protocol is read-only JSON lines (docs/daemon.md); nothing a client sends changes a
    hardware setting. Stops on SIGTERM or SIGINT.

    \b
    Examples:
      sudo energymeter daemon --group energymeter
      sudo energymeter daemon --group energymeter --metrics-port 9101
      sudo energymeter daemon --group energymeter --otlp-endpoint http://localhost:4318/v1/metrics
    """
    from ..daemon.server import DEFAULT_SOCKET, Access, group_id, open_daemon, serve
    from ..errors import EnergyMeterError
    from ..settings import resolve_settings

    logging.basicConfig(level=logging.INFO, format="energymeter daemon: %(message)s")
    if group is not None and allow_all:
        fail("give --group NAME or --allow-all, not both")
    try:
        settings = resolve_settings()
        access = Access(gid=group_id(group) if group is not None else None,
                        allow_all=allow_all)
        core, unavailable = open_daemon(powercap_root=settings.powercap_root,
                                        interval_s=interval_s, ring_rows=ring_rows,
                                        nvml_module=settings.nvml_module)
        server = serve(core.start(), socket_path or DEFAULT_SOCKET, access,
                       max_connections=max_connections, idle_timeout_s=idle_timeout_s)
    except EnergyMeterError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot listen on {socket_path or DEFAULT_SOCKET}: {exc}")
    metrics = None
    if metrics_port is not None:
        try:
            from ..daemon.metrics import start_metrics_server

            metrics = start_metrics_server(core, metrics_port, metrics_addr)
        except (EnergyMeterError, OSError) as exc:
            server.server_close()
            core.stop()
            fail(f"cannot serve /metrics on {metrics_addr}:{metrics_port}: {exc}")
    otel = None
    if otlp_endpoint is not None:
        from ..daemon.otel import start_otlp_export

        try:
            otel = start_otlp_export(core, otlp_endpoint)
        except EnergyMeterError as exc:
            server.server_close()
            core.stop()
            fail(str(exc))
    for u in unavailable:
        log.info("not served: %s: %s", u.source, u.reason)
    err(f"daemon: {len(core.channels)} channel(s) "
        f"({', '.join(c.id for c in core.channels) or 'none'}) every {interval_s:g} s on "
        f"{server.server_address}" + (f", /metrics on {metrics_addr}:{metrics_port}"
                                      if metrics is not None else ""))
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    def _serve() -> None:
        try:
            server.serve_forever(poll_interval=0.2)
        except Exception:
            log.exception("the socket's loop died")

    thread = threading.Thread(target=_serve, name="energymeter-socket", daemon=True)
    thread.start()
    # A thread that ends on its own (a bug that escaped its guards) must not leave a socket
    # nobody serves: stop everything and exit non-zero, so the service manager restarts us.
    workers = [("the socket's loop", thread.is_alive), ("the sampler", lambda: core.alive)]
    if metrics is not None:
        workers.append(("the /metrics loop", lambda: metrics.alive))
    dead: list[str] = []
    while not stop.wait(WATCH_S):
        dead = [name for name, alive in workers if not alive()]
        if dead:
            break
    server.shutdown()
    server.server_close()
    Path(server.server_address).unlink(missing_ok=True)
    if metrics is not None:
        metrics.shutdown()
    if otel is not None:
        otel.shutdown()
    core.stop()
    if dead:
        err(f"error: daemon: {' and '.join(dead)} stopped unexpectedly (see the log above); "
            "exiting so that the service manager restarts it")
        sys.exit(1)
    sys.exit(0)


@click.command(context_settings=CONTEXT)
@click.argument("runs", nargs=-1, required=True, metavar="RUN...")
@click.option("--gateway", required=True, metavar="URL",
              help="The Pushgateway (host:port or http://host:port).")
@click.option("--job", "job_name", default="energymeter", show_default=True,
              help="The Pushgateway job name.")
def push(runs: tuple[str, ...], gateway: str, job_name: str) -> None:
    """Push finished runs' energy to a Prometheus Pushgateway (batch jobs).

    Each run becomes energymeter_energy_joules_total per channel, its duration and emissions,
    grouped by instance (its host) and run (its name).

    \b
    Example:
      energymeter push --gateway localhost:9091 energymeter-runs/
    """
    from ..daemon.metrics import push_report
    from ..errors import EnergyMeterError

    failed = False
    for _, report in find_runs(runs):
        try:
            push_report(report, gateway, job=job_name)
        except EnergyMeterError as exc:
            fail(str(exc))
        except OSError as exc:
            err(f"error: cannot push {report.name} ({report.run_id[:8]}) to {gateway}: {exc}")
            failed = True
    sys.exit(1 if failed else 0)
