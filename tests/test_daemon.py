"""``energymeter daemon``: root-only RAPL counters served to unprivileged users on a Unix
socket, the daemon probe with its fallback when the daemon dies, peer-credential checks, and
Prometheus scraping /metrics (a real Debian ``prometheus``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import energymeter
from energymeter.daemon.server import Access, Daemon, serve
from energymeter.probes.base import DiscoveryContext
from energymeter.probes.daemon import Connection, DaemonError, discover, query
from tests.fakes.powercap import FakePowercap
from tests.fakes.probes import ConstantPowerProbe
from tests.launch_fixtures import free_port
from tests.timing import Lateness

REPO = Path(__file__).resolve().parents[1]
POWER_W = {"package-0": 40.0, "package-0/dram": 5.0}


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's tmp dirs are root-only)."""
    path = Path(tempfile.mkdtemp(prefix="energymeter-daemon-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def rapl(shared_dir: Path) -> Iterator[FakePowercap]:
    """Root-only fake RAPL counters (mode 0400, as since Linux 5.10), wrapping every ~3 s."""
    fake = FakePowercap(shared_dir / "powercap", power_w=POWER_W,
                        max_energy_range_uj=120_000_000)
    for key in fake.keys:
        fake.energy_path(key).chmod(0o400)
    with fake.start():
        yield fake


def _start_daemon(sock: Path, fake: FakePowercap, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "ENERGYMETER_POWERCAP_ROOT": str(fake.root),
           "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "energymeter", "daemon", "--socket",
                             str(sock), *args], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the daemon exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            query(sock)
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("the daemon did not answer in 30 s")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=10)


# -- protocol ----------------------------------------------------------------------------------
def test_protocol_answers_and_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    core = Daemon([ConstantPowerProbe("cpu0", "cpu", 30.0)], interval_s=0.01).start()
    server = serve(core, tmp_path / "d.sock", Access(allow_all=True))
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hello = query(tmp_path / "d.sock")
        assert hello["protocol"] == 1 and hello["interval_s"] == 0.01
        [channel] = query(tmp_path / "d.sock", "channels")["channels"]
        assert channel["id"] == "cpu0"
        time.sleep(0.1)
        rows = query(tmp_path / "d.sock", "rows", since_ns=0)
        assert len(rows["rows"]) >= 3 and rows["oldest_ns"] == rows["rows"][0][0]
        later = query(tmp_path / "d.sock", "rows", since_ns=rows["rows"][-1][0])["rows"]
        assert all(t > rows["rows"][-1][0] for t, _ in later)
        conn = Connection(tmp_path / "d.sock")
        with pytest.raises(DaemonError, match="accepted: hello, channels, read, rows"):
            conn.call("set_power_limit", watts=100)  # read-only: no such operation
        with pytest.raises(DaemonError, match="since_ns, an integer"):
            conn.call("rows", since_ns="yesterday")
        conn._sock.sendall(b"not json\n")
        assert b"not JSON" in conn._file.readline()
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
        core.stop()


def test_a_second_daemon_on_the_same_socket_is_refused(tmp_path: Path, rapl: FakePowercap
                                                       ) -> None:
    sock = tmp_path / "d.sock"
    proc = _start_daemon(sock, rapl)
    try:
        second = subprocess.run([sys.executable, "-m", "energymeter", "daemon", "--socket",
                                 str(sock)], env={**os.environ, "PYTHONPATH": str(REPO)},
                                capture_output=True, text=True, timeout=30)
        assert second.returncode == 2 and "already listens" in second.stderr
    finally:
        _stop(proc)
    assert not sock.exists()  # removed on SIGTERM


# -- root-only counters, read through the daemon -------------------------------------------------
def test_measure_reads_rapl_through_the_daemon(shared_dir: Path, rapl: FakePowercap,
                                               tmp_path: Path) -> None:
    sock = shared_dir / "d.sock"
    proc = _start_daemon(sock, rapl, "--allow-all")
    try:
        with energymeter.measure("via", daemon=str(sock), region="SE",
                                 out=tmp_path / "runs") as m:
            time.sleep(3.5)  # past a counter wrap (every 3 s at 40 W)
        shown = subprocess.run([sys.executable, "-m", "energymeter", "probes"],
                               env={**os.environ, "PYTHONPATH": str(REPO),
                                    "ENERGYMETER_DAEMON": str(sock)},
                               capture_output=True, text=True, timeout=60)
    finally:
        _stop(proc)
    assert shown.returncode == 0, shown.stderr
    assert f"Daemon: serving RAPL at {sock}" in shown.stdout
    assert "rapl via daemon" in shown.stdout
    report = m.report
    by_id = {c.channel.id: c for c in report.channels}
    assert by_id["cpu0"].channel.source == "rapl via daemon"
    assert by_id["cpu0"].channel.method == "counter"
    # Within 0.5 %, plus what the fake's real-time counters measurably lagged.
    for cid, watts in (("cpu0", 40.0), ("dram0", 5.0)):
        expected_j = watts * report.duration_s
        assert abs(by_id[cid].energy_j - expected_j) <= 0.005 * expected_j + rapl.lag_j(watts)
    assert not [w for w in report.warnings if "ESTIMATED" in w]


def _world_readable_package(shared_dir: Path) -> Path:
    site = shared_dir / "site"
    shutil.copytree(REPO / "energymeter", site / "energymeter",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for root, _dirs, files in os.walk(site):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(Path(root) / name, 0o644)
    return site


def _as_nobody(code: str, site: Path, *groups: int) -> subprocess.CompletedProcess[str]:
    """``code`` run by the system Python as user nobody (pyenv's Python lives under /root)."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    if os.geteuid() != 0 or shutil.which("setpriv") is None or python is None:
        pytest.skip("needs root, setpriv and a system python3 to run a client as nobody")
    group_args = [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", *group_args, python,
                           "-c", code], env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60, cwd="/")


CLIENT = """
import json, time
from pathlib import Path
from energymeter.probes.base import DiscoveryContext
from energymeter.probes.daemon import Connection, discover
from energymeter.probes import rapl
root = {root!r}
direct = rapl.discover(DiscoveryContext(powercap_root=Path(root)))
conn = Connection(Path({sock!r}))
a = conn.call("read"); time.sleep(2.0); b = conn.call("read")
[probe] = discover(DiscoveryContext(daemon={sock!r}))
p0 = probe.read(); t0 = time.monotonic(); time.sleep(1.0); p1 = probe.read()
print(json.dumps({{"direct": [type(d).__name__ for d in direct],
    "watts": (b["energy_j"]["cpu0"] - a["energy_j"]["cpu0"]) / ((b["t_ns"] - a["t_ns"]) / 1e9),
    "probe_watts": (p1["cpu0"] - p0["cpu0"]) / (time.monotonic() - t0),
    "source": probe.channels[0].source, "method": probe.channels[0].method}}))
"""


def test_unprivileged_client_gets_counters_within_half_a_percent(shared_dir: Path,
                                                                  rapl: FakePowercap) -> None:
    sock = shared_dir / "d.sock"
    site = _world_readable_package(shared_dir)
    proc = _start_daemon(sock, rapl, "--group", "daemon")
    try:
        done = _as_nobody(CLIENT.format(root=str(rapl.root), sock=str(sock)), site,
                          _gid("daemon"))
    finally:
        _stop(proc)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert "Probe" not in " ".join(out["direct"])  # nobody cannot read energy_uj itself
    assert out["watts"] == pytest.approx(40.0, rel=0.005)
    assert out["probe_watts"] == pytest.approx(40.0, rel=0.01)  # client-side clock
    assert (out["source"], out["method"]) == ("rapl via daemon", "counter")


def _gid(name: str) -> int:
    import grp

    return grp.getgrnam(name).gr_gid


def test_a_client_of_another_group_is_refused(shared_dir: Path, rapl: FakePowercap) -> None:
    sock = shared_dir / "d.sock"
    site = _world_readable_package(shared_dir)
    proc = _start_daemon(sock, rapl, "--group", "daemon")
    code = ("from pathlib import Path\n"
            "from energymeter.probes.daemon import query\n"
            f"try:\n    query(Path({str(sock)!r}))\nexcept OSError as exc:\n    print(exc)\n")
    try:
        assert oct(sock.stat().st_mode & 0o777) == "0o660"
        refused = _as_nobody(code, site)  # not in group daemon: the socket's mode stops it
        assert "Permission denied" in refused.stdout, refused.stderr
        sock.chmod(0o666)  # a mistaken mode: the peer credentials still refuse
        refused = _as_nobody(code, site)
        assert "uid 65534 may not read" in refused.stdout, refused.stderr
    finally:
        _stop(proc)


# -- the daemon dies mid-run -------------------------------------------------------------------
@pytest.mark.parametrize("fallback", ["rapl", "model"])
def test_kill_9_mid_run_warns_and_finishes(fallback: str, shared_dir: Path, rapl: FakePowercap,
                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    sock = shared_dir / "d.sock"
    proc = _start_daemon(sock, rapl, "--allow-all")
    if fallback == "rapl":  # this process can read RAPL itself (root): counters go on
        monkeypatch.setenv("ENERGYMETER_POWERCAP_ROOT", str(rapl.root))
    else:  # it cannot: the estimated model goes on
        monkeypatch.setenv("ENERGYMETER_POWERCAP_ROOT", str(tmp_path / "none"))
    try:
        with energymeter.measure("dies", daemon=str(sock), region="SE",
                                 out=tmp_path / "runs") as m:
            time.sleep(1.0)
            before = m.snapshot().energy_by_channel_j["cpu0"]
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            time.sleep(1.0)
    finally:
        _stop(proc)
    report = m.report
    assert report.status == "completed"
    [warning] = [w for w in report.warnings if "daemon stopped answering" in w]
    cpu = next(c for c in report.channels if c.channel.id == "cpu0")
    assert cpu.energy_j > before  # nothing measured before was lost, and it went on
    if fallback == "rapl":
        assert "in-process RAPL counters" in warning
        assert cpu.energy_j == pytest.approx(40.0 * report.duration_s, rel=0.005)
    else:
        assert "ESTIMATED by the CPU model" in warning and "dram0" in warning


def test_discover_says_why_the_daemon_is_not_used(tmp_path: Path) -> None:
    [missing] = discover(DiscoveryContext(daemon=str(tmp_path / "none.sock")))
    assert "no energymeter daemon socket" in missing.reason
    plain = tmp_path / "plain.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(plain))  # a socket nobody listens on
        [refused] = discover(DiscoveryContext(daemon=str(plain)))
    assert "cannot connect" in refused.reason
    assert discover(DiscoveryContext(daemon="off")) == []


# -- Prometheus --------------------------------------------------------------------------------
def _prometheus_query(port: int, expr: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - local test server
        return json.loads(response.read())["data"]["result"]


def test_prometheus_scrapes_the_energy_counter(shared_dir: Path, rapl: FakePowercap,
                                               tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Prometheus is not installed (Debian: apt-get install prometheus, as "
                    ".ci/run does)")
    metrics_port, prom_port = free_port(), free_port()
    proc = _start_daemon(shared_dir / "d.sock", rapl, "--allow-all", "--metrics-port",
                         str(metrics_port))
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                      "scrape_configs:\n  - job_name: energymeter\n    static_configs:\n"
                      f"      - targets: ['127.0.0.1:{metrics_port}']\n")
    prom = subprocess.Popen([binary, f"--config.file={config}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                    timeout=5) as response:
            text = response.read().decode()
        assert 'energymeter_energy_joules_total{channel="cpu0"' in text
        assert 'in_total="true"' in text and "energymeter_power_watts" in text
        # Wait for 5 scrapes (one a second), then read the rate over them.
        deadline = time.monotonic() + 60
        count: list = []
        while time.monotonic() < deadline:
            try:
                count = _prometheus_query(prom_port, 'count_over_time(energymeter_energy_'
                                                     'joules_total{channel="cpu0"}[20s]) >= 5')
            except OSError:
                count = []
            if count:
                break
            time.sleep(0.5)
        assert count, prom.stderr.read(2000) if prom.poll() is not None else "no samples"
        samples = _prometheus_query(prom_port, 'energymeter_energy_joules_total'
                                               '{channel="cpu0"}[20s]')[0]["values"]
        (t0, e0), (t1, e1) = samples[0], samples[-1]
        watts = (float(e1) - float(e0)) / (float(t1) - float(t0))
        # Prometheus stamps each sample with its scrape's start (ms), not the read's time.
        assert watts == pytest.approx(40.0, rel=0.05), samples
        total = _prometheus_query(prom_port, 'energymeter_energy_joules_total{channel="cpu0"}')
        assert float(total[0]["value"][1]) > 0
        assert total[0]["metric"]["method"] == "counter"
    finally:
        prom.terminate()
        prom.wait(timeout=20)
        _stop(proc)


def test_push_sends_a_run_to_a_pushgateway(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    import http.server
    import threading

    received: list[tuple[str, str, bytes]] = []

    class Gateway(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.command, self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with energymeter.measure("batch", region="SE", out=tmp_path / "runs", cpu_tdp_w=10.0):
        time.sleep(0.2)
    try:
        done = subprocess.run([sys.executable, "-m", "energymeter", "push", "--gateway",
                               f"127.0.0.1:{server.server_port}", str(tmp_path / "runs")],
                              env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                              text=True, timeout=60)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    [(method, path, body)] = received
    assert path.startswith("/metrics/job/energymeter/") and "/run/batch" in path
    text = body.decode()
    assert 'energymeter_energy_joules_total{channel="cpu0"' in text
    assert "energymeter_run_duration_seconds" in text


# -- OpenTelemetry -----------------------------------------------------------------------------
def test_otel_hw_energy_and_hw_power() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from energymeter.daemon.otel import instrument

    interval_s = 0.01
    core = Daemon([ConstantPowerProbe("cpu0", "cpu", 30.0),
                   ConstantPowerProbe("cpu0-core", "cpu", 20.0)], interval_s=interval_s).start()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instrument(core, provider)
    late = Lateness().start()
    try:
        def points() -> dict[str, dict[str, float]]:
            data = reader.get_metrics_data()
            out: dict[str, dict[str, float]] = {}
            for rm in data.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        assert metric.unit == {"hw.energy": "J", "hw.power": "W"}[metric.name]
                        for p in metric.data.data_points:
                            out.setdefault(metric.name, {})[p.attributes["hw.id"]] = p.value
            return out

        time.sleep(0.1)
        # Each collection reads the daemon somewhere between the two clock reads around it.
        before0, first, after0 = time.monotonic(), points(), time.monotonic()
        time.sleep(0.5)
        before1, second, after1 = time.monotonic(), points(), time.monotonic()
    finally:
        late.stop()
        provider.shutdown()
        core.stop()
    joules = second["hw.energy"]["cpu0"] - first["hw.energy"]["cpu0"]
    assert 30.0 * (before1 - after0) * 0.99 <= joules <= 30.0 * (after1 - before0) * 1.01
    # The power of the ring's last interval: its two stamps may each be off from their reads
    # by as long as a thread measurably waited for a core while the test ran.
    assert abs(second["hw.power"]["cpu0"] - 30.0) \
        <= 0.05 * 30.0 + 30.0 * 2 * late.max_s / interval_s


def test_otlp_http_export_reaches_a_collector() -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    import http.server
    import threading

    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    from energymeter.daemon.otel import start_otlp_export

    bodies: list[bytes] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    core = Daemon([ConstantPowerProbe("cpu0", "cpu", 30.0)], interval_s=0.05).start()
    provider = start_otlp_export(core, f"http://127.0.0.1:{server.server_port}/v1/metrics",
                                 interval_s=0.3)
    try:
        deadline = time.monotonic() + 20
        while not bodies and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        provider.shutdown()
        core.stop()
        server.shutdown()
    assert bodies, "no OTLP export arrived"
    request = ExportMetricsServiceRequest()
    request.ParseFromString(bodies[0])
    names = {m.name for rm in request.resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics}
    assert "hw.energy" in names
