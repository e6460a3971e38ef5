"""``energymeter daemon``: one sampler per machine, serving its counters read-only.

The daemon opens every probe of the machine once (RAPL, NVML, the CPU model where nothing
else measures the CPU), reads them every ``interval_s`` on one thread (so counter wraps are
undone centrally, whoever asks and however rarely) and keeps the most recent rows in a bounded
ring buffer. Clients talk to it on a Unix socket with the JSON-lines protocol described in
:mod:`energymeter.probes.daemon`; nothing a client sends can change a hardware setting (the
protocol has no such operation). Who may connect: the socket's mode and group, and each
connection's peer credentials (``SO_PEERCRED``) checked against the same rule: root, the
daemon's own user, members of ``group``, or anyone with ``allow_all``.
"""

from __future__ import annotations

import grp
import json
import os
import socket
import socketserver
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._lazy import LazyLogger
from .._version import __version__
from ..errors import ConfigError
from ..probes import DiscoveryContext, Probe, discover
from ..probes.daemon import DEFAULT_SOCKET, PROTOCOL

log = LazyLogger("energymeter")

#: Rows kept in the ring buffer by default: 10 minutes at 10 Hz.
DEFAULT_RING_ROWS = 6000
#: The longest request line accepted from a client.
MAX_REQUEST_BYTES = 4096
#: The most rows one ``rows`` answer holds (a client asks again from the last one).
MAX_ROWS_PER_ANSWER = 10_000
OPS = ("hello", "channels", "read", "rows")


@dataclass(frozen=True)
class Access:
    """Who may use the socket: ``group`` (its gid; members, root and the daemon's own user),
    or everyone with ``allow_all``."""

    gid: int | None = None
    allow_all: bool = False

    def mode(self) -> int:
        return 0o666 if self.allow_all else 0o660

    def allows(self, uid: int, gid: int, pid: int) -> bool:
        if self.allow_all or uid in (0, os.geteuid()):
            return True
        if self.gid is None:
            return False
        return gid == self.gid or self.gid in _groups_of(pid)


def _groups_of(pid: int) -> set[int]:
    """The supplementary groups of process ``pid`` (from /proc; empty if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]}
    except (OSError, ValueError) as exc:
        log.debug("groups of pid %s unreadable: %r", pid, exc)
    return set()


def group_id(name: str) -> int:
    """The gid of group ``name`` (a name or a number), or :class:`ConfigError`."""
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"group {name!r} does not exist; create it (`groupadd {name}`) and "
                          "add the users who may read the counters, or give another") from None


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


class Daemon:
    """The sampler and its ring buffer (no socket: :func:`serve` adds that)."""

    def __init__(self, probes: Iterable[Probe], *, interval_s: float = 0.1,
                 ring_rows: int = DEFAULT_RING_ROWS) -> None:
        self.probes = tuple(probes)
        self.channels = tuple(c for p in self.probes for c in p.channels)
        self.interval_s = interval_s
        self.ring: deque[tuple[int, dict[str, float]]] = deque(maxlen=ring_rows)
        self.started_at = datetime.now(timezone.utc)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: dict[str, str] = {}  # probe source -> its last read error
        self.ticks = 0
        for probe in self.probes:
            probe.begin_run()

    def read(self) -> tuple[int, dict[str, float]]:
        """A fresh read of every probe: ``(CLOCK_MONOTONIC ns, cumulative joules)``."""
        energy: dict[str, float] = {}
        with self._lock:
            t_ns = time.monotonic_ns()
            for probe in self.probes:
                try:
                    energy.update(probe.read())
                except Exception as exc:  # one broken probe must not stop the others
                    self.errors[probe.source] = f"{type(exc).__name__}: {exc}"
                    log.warning("energymeter daemon: probe %s failed: %r", probe.source, exc)
        return t_ns, energy

    def _loop(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            row = self.read()
            self.ring.append(row)
            self.ticks += 1
            next_t += self.interval_s
            delay = next_t - time.monotonic()
            if delay < 0:  # suspended or overloaded: skip, do not catch up in a burst
                next_t = time.monotonic()
                delay = 0.0
            self._stop.wait(delay)

    def start(self) -> Daemon:
        self._thread = threading.Thread(target=self._loop, name="energymeter-daemon",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for probe in self.probes:
            probe.end_run()
            probe.close()

    def rows_since(self, since_ns: int) -> tuple[list[list[Any]], int | None]:
        rows = [[t, e] for t, e in list(self.ring) if t > since_ns][:MAX_ROWS_PER_ANSWER]
        oldest = self.ring[0][0] if self.ring else None
        return rows, oldest

    def answer(self, request: Any) -> dict[str, Any]:
        """The answer to one decoded request (never raises for a bad request)."""
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return {"ok": False, "error": "a request is a JSON object with \"op\"; accepted "
                                          f"ops: {', '.join(OPS)}"}
        op = request["op"]
        if op == "hello":
            return {"ok": True, "protocol": PROTOCOL, "version": __version__,
                    "host": socket.gethostname(), "pid": os.getpid(),
                    "interval_s": self.interval_s, "started_at": self.started_at.isoformat(),
                    "ring_rows": self.ring.maxlen}
        if op == "channels":
            return {"ok": True, "channels": [c.to_dict() for c in self.channels]}
        if op == "read":
            t_ns, energy = self.read()
            return {"ok": True, "t_ns": t_ns, "energy_j": energy}
        if op == "rows":
            since = request.get("since_ns", 0)
            if isinstance(since, bool) or not isinstance(since, int):
                return {"ok": False, "error": "rows needs since_ns, an integer "
                                              "(CLOCK_MONOTONIC nanoseconds; 0 for all)"}
            rows, oldest = self.rows_since(since)
            return {"ok": True, "rows": rows, "oldest_ns": oldest}
        return {"ok": False, "error": f"unknown op {op!r}; accepted: {', '.join(OPS)} "
                                      "(the daemon is read-only)"}


def open_daemon(*, powercap_root: Path | None = None, env: Mapping[str, str] | None = None,
                interval_s: float = 0.1, ring_rows: int = DEFAULT_RING_ROWS,
                nvml_module: str = "pynvml") -> tuple[Daemon, list[Any]]:
    """Discover this machine's probes (never through another daemon) and make a
    :class:`Daemon`; also returns what was unavailable."""
    kwargs: dict[str, Any] = {}
    if powercap_root is not None:
        kwargs["powercap_root"] = powercap_root
    found = discover(DiscoveryContext(pid=os.getpid(), env=dict(os.environ if env is None
                                                                else env),
                                      nvml_module=nvml_module, daemon="off", **kwargs))
    # The process probe measures the daemon's own tree: of no use to anyone here.
    probes = [p for p in found.probes if p.channels]
    for p in found.probes:
        if not p.channels:
            p.close()
    return Daemon(probes, interval_s=interval_s, ring_rows=ring_rows), list(found.unavailable)


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        try:
            pid, uid, gid = peer_credentials(self.connection)
        except OSError as exc:
            log.warning("energymeter daemon: no peer credentials: %r", exc)
            return
        if not self.server.access.allows(uid, gid, pid):
            self._send({"ok": False, "error": f"uid {uid} may not read this daemon's counters "
                                              "(not root, not in its group)"})
            log.info("energymeter daemon: refused pid %s uid %s gid %s", pid, uid, gid)
            return
        while True:
            line = self.rfile.readline(MAX_REQUEST_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_REQUEST_BYTES:
                self._send({"ok": False, "error": f"request longer than {MAX_REQUEST_BYTES} "
                                                  "bytes"})
                return
            try:
                request = json.loads(line)
            except ValueError as exc:
                answer = {"ok": False, "error": f"not JSON ({exc}); send one JSON object "
                                                "per line"}
            else:
                answer = self.server.daemon.answer(request)
            if not self._send(answer):
                return

    def _send(self, answer: dict[str, Any]) -> bool:
        try:
            self.wfile.write(json.dumps(answer, separators=(",", ":")).encode() + b"\n")
            self.wfile.flush()
        except OSError as exc:  # the client went away
            log.debug("energymeter daemon: client gone: %r", exc)
            return False
        return True


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    daemon: Daemon
    access: Access


def serve(daemon: Daemon, path: Path = DEFAULT_SOCKET, access: Access | None = None
          ) -> _Server:
    """Listen on ``path`` (replacing a stale socket; refusing to replace anything else) and
    serve ``daemon`` on threads; returns the server (``serve_forever``/``shutdown``)."""
    access = access or Access()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not path.is_socket() or path.is_symlink():
            raise ConfigError(f"{path} exists and is not a socket; give another --socket or "
                              "remove it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # a stale socket of a daemon that died
        else:
            raise ConfigError(f"a daemon already listens on {path}; stop it first or give "
                              "another --socket")
        finally:
            probe.close()
    old_umask = os.umask(0o177)  # no window in which the socket is more open than asked
    try:
        server = _Server(str(path), _Handler)
    finally:
        os.umask(old_umask)
    server.daemon = daemon
    server.access = access
    if access.gid is not None:
        os.chown(path, -1, access.gid)
    os.chmod(path, access.mode())
    return server
