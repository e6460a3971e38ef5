"""Load on the daemon's socket: a burst of clients, then many idle connections.

Starts a daemon (fake 30 W probe, the real server) in a child process and reports:

* burst: N clients (threads, released together by a barrier) each connect and ask ``read``;
  how many got an answer, connect retries (full listen queue), latency percentiles;
* idle: M connections opened and left idle; the daemon's threads and RSS before and after
  (from /proc), and the latency of a ``read`` beside them.

    python3 benchmarks/daemon_load.py [--clients 500] [--idle 10000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from energymeter.probes.daemon import Connection, query  # noqa: E402

# The same daemon the limits tests start (a fake 30 W probe, the cap given).
from tests.test_daemon_limits import SERVER  # noqa: E402


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Threads", "VmRSS"):
            out[key] = int(value.split()[0])
    return out


def burst(sock: Path, n: int) -> dict[str, object]:
    barrier = threading.Barrier(n)
    latencies: list[float] = []
    retries: list[int] = []
    failures: list[str] = []

    def client() -> None:
        barrier.wait()
        t0 = time.perf_counter()
        try:
            conn = Connection(sock, timeout_s=30)
            try:
                conn.call("read")
            finally:
                conn.close()
        except OSError as exc:
            failures.append(str(exc))
            return
        latencies.append(time.perf_counter() - t0)
        retries.append(conn.connect_retries)

    threads = [threading.Thread(target=client) for _ in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else -1.0

    return {"clients": n, "answered": len(latencies), "failed": len(failures),
            "first_failure": failures[0] if failures else None,
            "clients_that_retried": sum(1 for r in retries if r),
            "connect_retries": sum(retries), "wall_s": round(wall, 2),
            "latency_ms_p50": pct(0.5), "latency_ms_p99": pct(0.99),
            "latency_ms_max": pct(1.0),
            "latency_ms_mean": round(statistics.fmean(lat) * 1000, 1) if lat else -1.0}


def idle(sock: Path, pid: int, n: int) -> dict[str, object]:
    before = _status(pid)
    conns = []
    t0 = time.perf_counter()
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(sock))  # blocking: waits while the listen queue is full
            conns.append(s)
        deadline = time.monotonic() + 120
        while len(os.listdir(f"/proc/{pid}/fd")) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        opened_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        query(sock, "read")
        read_ms = (time.perf_counter() - t1) * 1000
        after = _status(pid)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    finally:
        for s in conns:
            s.close()
    return {"idle_connections": n, "daemon_fds": fds, "open_s": round(opened_s, 2),
            "threads_before": before["Threads"], "threads_after": after["Threads"],
            "rss_mib_before": round(before["VmRSS"] / 1024, 1),
            "rss_mib_after": round(after["VmRSS"] / 1024, 1),
            "read_ms_beside_them": round(read_ms, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "d.sock"
        cap = max(args.idle, args.clients) + 100
        proc = subprocess.Popen([sys.executable, "-c", SERVER.format(repo=str(REPO),
                                                                     sock=str(sock), cap=cap)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            result = {"burst": burst(sock, args.clients),
                      "idle": idle(sock, proc.pid, args.idle), "cpus": os.cpu_count()}
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    b, i = result["burst"], result["idle"]
    print(f"burst: {b['answered']}/{b['clients']} answered, {b['failed']} failed, "
          f"{b['clients_that_retried']} retried a connect ({b['connect_retries']} retries); "
          f"latency p50 {b['latency_ms_p50']} ms, p99 {b['latency_ms_p99']} ms, max "
          f"{b['latency_ms_max']} ms; all done in {b['wall_s']} s")
    print(f"idle: {i['idle_connections']} connections ({i['daemon_fds']} daemon fds) opened in "
          f"{i['open_s']} s; daemon threads {i['threads_before']} -> {i['threads_after']}, RSS "
          f"{i['rss_mib_before']} -> {i['rss_mib_after']} MiB; a read beside them "
          f"{i['read_ms_beside_them']} ms")


if __name__ == "__main__":
    main()
