"""Live carbon providers against a local HTTP server on 127.0.0.1 (no other network)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from energymeter.carbon import J_PER_KWH, CarbonAccount, intensity
from energymeter.carbon.live import (
    ElectricityMapsProvider,
    GBCarbonProvider,
    LiveError,
)
from energymeter.settings import resolve_settings

REPO = Path(__file__).resolve().parents[1]
TOKEN = "test-token-123"


@dataclass
class FakeGrid:
    """What the fake APIs answer; tests change it while an account runs."""

    value: float | None = 100.0
    forecast: float = 999.0
    status: int = 200
    delay_s: float = 0.0
    body: bytes | None = None  # raw body overriding the JSON reply
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)

    def set(self, **changes: Any) -> None:
        with self.lock:
            for key, val in changes.items():
                setattr(self, key, val)


def _handler(grid: FakeGrid) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            return

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            url = urlsplit(self.path)
            with grid.lock:
                grid.requests.append({"path": url.path, "query": parse_qs(url.query),
                                      "auth-token": self.headers.get("auth-token")})
                value, forecast, status = grid.value, grid.forecast, grid.status
                delay_s, body = grid.delay_s, grid.body
            if delay_s:
                grid.release.wait(delay_s)
            if url.path == "/v3/carbon-intensity/latest":
                zone = parse_qs(url.query).get("zone", [""])[0]
                reply: Any = {"zone": zone, "carbonIntensity": value,
                              "datetime": "2026-11-21T10:00:00.000Z",
                              "updatedAt": "2026-11-21T10:05:00.000Z",
                              "emissionFactorType": "lifecycle", "isEstimated": False}
            elif url.path == "/intensity":
                reply = {"data": [{"from": "2026-11-21T10:00Z", "to": "2026-11-21T10:30Z",
                                   "intensity": {"forecast": forecast, "actual": value,
                                                 "index": "moderate"}}]}
            else:
                status, reply = 404, {"error": "not found"}
            if status != 200:
                reply = {"status": status, "message": "nope"}
            data = body if body is not None and status == 200 else json.dumps(reply).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                return  # the client gave up (timeout test)

    return Handler


@pytest.fixture
def grid() -> Iterator[tuple[FakeGrid, str]]:
    state = FakeGrid()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(2)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def live_settings(tmp_path: Path, provider: str, region: str, **more: Any):
    overrides = {"carbon_provider": provider, "region": region, "carbon_poll_s": 0.05,
                 "carbon_timeout_s": 1.0, **more}
    return resolve_settings(overrides, env={}, cwd=tmp_path)


def gb_env(url: str) -> dict[str, str]:
    return {"ENERGYMETER_GB_CARBON_URL": url, "TZ": "UTC"}


def em_env(url: str, token: str | None = TOKEN) -> dict[str, str]:
    env = {"ENERGYMETER_ELECTRICITYMAPS_URL": url, "TZ": "UTC"}
    if token is not None:
        env["ENERGYMETER_ELECTRICITYMAPS_TOKEN"] = token
    return env


# -- providers on their own ------------------------------------------------------------------
def test_gb_provider_actual_then_forecast(grid: tuple[FakeGrid, str]) -> None:
    state, url = grid
    provider = GBCarbonProvider(base_url=url)
    assert provider.fetch(1.0) == 100.0
    state.set(value=None, forecast=123.0)  # actual is null for the current half hour
    assert provider.fetch(1.0) == 123.0
    assert state.requests[-1]["path"] == "/intensity"


def test_electricitymaps_provider_sends_token_and_zone(grid: tuple[FakeGrid, str]) -> None:
    state, url = grid
    state.set(value=42.5)
    provider = ElectricityMapsProvider("SE-SE3", TOKEN, env={"ENERGYMETER_ELECTRICITYMAPS_URL":
                                                             url + "/"})
    assert provider.fetch(1.0) == 42.5
    request = state.requests[-1]
    assert request["path"] == "/v3/carbon-intensity/latest"
    assert request["query"] == {"zone": ["SE-SE3"]} and request["auth-token"] == TOKEN


@pytest.mark.parametrize("change, kind", [
    ({"status": 401}, "http-401"), ({"status": 500}, "http-500"),
    ({"body": b"{not json"}, "malformed"), ({"body": b'{"zone": "SE"}'}, "malformed"),
    ({"value": "high"}, "malformed"), ({"value": -5}, "malformed"),
])
def test_provider_failures_are_live_errors(grid: tuple[FakeGrid, str], change: dict,
                                           kind: str) -> None:
    state, url = grid
    state.set(**change)
    with pytest.raises(LiveError) as info:
        ElectricityMapsProvider("SE", TOKEN, base_url=url).fetch(1.0)
    assert info.value.kind == kind
    if kind == "http-401":
        assert "ENERGYMETER_ELECTRICITYMAPS_TOKEN" in info.value.message


def test_gb_malformed_shapes(grid: tuple[FakeGrid, str]) -> None:
    state, url = grid
    for body in (b"[]", b'{"data": []}', b'{"data": [{"intensity": null}]}', b"\xff\xfe"):
        state.set(body=body)
        with pytest.raises(LiveError) as info:
            GBCarbonProvider(base_url=url).fetch(1.0)
        assert info.value.kind == "malformed"


def test_unreachable_and_bad_url() -> None:
    with pytest.raises(LiveError) as info:
        GBCarbonProvider(base_url="http://127.0.0.1:9").fetch(1.0)  # discard port: refused
    assert info.value.kind in ("network", "timeout")
    with pytest.raises(LiveError) as info:
        GBCarbonProvider(base_url="nothing-like-a-url").fetch(1.0)
    assert info.value.kind == "bad-url"


# -- the account with a live provider --------------------------------------------------------
def test_gb_live_value_in_block(tmp_path: Path, grid: tuple[FakeGrid, str]) -> None:
    state, url = grid
    state.set(value=150.0)
    acct = CarbonAccount.start(live_settings(tmp_path, "gb", "GB"), env=gb_env(url))
    assert acct.wait_for_poll(5)
    assert acct.g_per_kwh_now == 150.0
    acct.update(1.8e6)
    block = acct.finish(3.6e6)
    assert block["provider"] == "gb" and block["emissions_g"] == pytest.approx(150.0)
    assert block["g_per_kwh"] == pytest.approx(150.0) and block["live_energy_share"] == 1.0
    assert block["basis"] == "consumption" and "GB Carbon Intensity API" in block["source"]
    assert block["table_g_per_kwh"] == intensity("GB").g_per_kwh
    assert [e["g_per_kwh"] for e in block["intensity_timeline"]] == [
        intensity("GB").g_per_kwh, 150.0]
    assert acct.warnings == []


def test_electricitymaps_account_sends_token(tmp_path: Path, grid: tuple[FakeGrid, str]) -> None:
    state, url = grid
    state.set(value=18.0)
    acct = CarbonAccount.start(live_settings(tmp_path, "electricitymaps", "se-se3"),
                               env=em_env(url))
    assert acct.wait_for_poll(5)
    block = acct.finish(3.6e6)
    assert {r["auth-token"] for r in state.requests} == {TOKEN}
    assert {r["query"]["zone"][0] for r in state.requests} == {"SE-SE3"}
    assert block["provider"] == "electricitymaps" and block["basis"] == "consumption"
    assert block["emissions_g"] == pytest.approx(18.0) and block["table_g_per_kwh"] == 20.0


def test_intensity_changes_during_run_time_weighted_exact(
    tmp_path: Path, grid: tuple[FakeGrid, str]
) -> None:
    state, url = grid
    clock = FakeClock()
    static = intensity("GB").g_per_kwh
    state.set(value=100.0)
    s = live_settings(tmp_path, "gb", "GB", pue=1.5, price_per_kwh=0.25)
    acct = CarbonAccount.start(s, env=gb_env(url), clock=clock)
    assert acct.wait_for_poll(5)
    acct.update(1.8e6)
    acct.update(3.6e6)  # 3.6 MJ at 100
    clock.now = 1010.0
    state.set(value=200.0)
    assert acct.wait_for_poll(5)
    acct.update(5.4e6)  # 1.8 MJ at 200
    clock.now = 1020.0
    state.set(status=500)
    assert acct.wait_for_poll(5)
    assert acct.wait_for_poll(5)  # several failing polls: still one warning
    acct.update(7.2e6)  # 1.8 MJ at the static table value
    clock.now = 1030.0
    state.set(status=200, value=50.0)
    assert acct.wait_for_poll(5)
    block = acct.finish(9.0e6)  # 1.8 MJ at 50

    expected_jg = 3.6e6 * 100.0 + 1.8e6 * 200.0 + 1.8e6 * static + 1.8e6 * 50.0
    expected_g = expected_jg * 1.5 / J_PER_KWH
    assert block["emissions_g"] == pytest.approx(expected_g, rel=1e-12)
    assert block["facility_energy_kwh"] == pytest.approx(3.75, rel=1e-12)
    assert block["g_per_kwh"] == pytest.approx(expected_g / 3.75, rel=1e-12)
    assert block["live_energy_share"] == pytest.approx(0.8, rel=1e-12)
    assert block["cost"] == pytest.approx(3.75 * 0.25, rel=1e-12)
    assert block["intensity_timeline"] == [
        {"t_s": 0.0, "g_per_kwh": static, "live": False},
        {"t_s": 0.0, "g_per_kwh": 100.0, "live": True},
        {"t_s": 10.0, "g_per_kwh": 200.0, "live": True},
        {"t_s": 20.0, "g_per_kwh": static, "live": False},
        {"t_s": 30.0, "g_per_kwh": 50.0, "live": True},
    ]
    assert "while it failed (20% of the energy)" in block["source"]
    assert block["basis"] == "mixed"  # live GB (consumption) + Ember table (generation)
    warnings = acct.warnings
    assert len(warnings) == 1 and "HTTP 500" in warnings[0] and str(static) in warnings[0]


@pytest.mark.parametrize("change, needle", [
    ({"status": 401}, "HTTP 401"), ({"status": 500}, "HTTP 500"),
    ({"body": b"<html>oops</html>"}, "not JSON"), ({"value": None}, "not a number"),
])
def test_failures_fall_back_to_table_with_one_warning(
    tmp_path: Path, grid: tuple[FakeGrid, str], change: dict, needle: str
) -> None:
    state, url = grid
    state.set(**change)
    acct = CarbonAccount.start(live_settings(tmp_path, "electricitymaps", "DK-DK2"),
                               env=em_env(url))
    for _ in range(3):
        assert acct.wait_for_poll(5)
    block = acct.finish(3.6e6)
    assert block["g_per_kwh"] == 144.0 and block["emissions_g"] == 144.0
    assert block["live_energy_share"] == 0.0 and "never answered" in block["source"]
    assert block["basis"] == "consumption" and block["provider"] == "electricitymaps"
    warnings = acct.warnings
    assert len(warnings) == 1 and needle in warnings[0] and "144 g/kWh" in warnings[0]
    if needle == "HTTP 401":
        assert "ENERGYMETER_ELECTRICITYMAPS_TOKEN" in warnings[0]
    assert TOKEN not in warnings[0]  # never leak the token into reports


def test_different_failure_kinds_warn_separately(tmp_path: Path,
                                                 grid: tuple[FakeGrid, str]) -> None:
    state, url = grid
    state.set(status=500)
    acct = CarbonAccount.start(live_settings(tmp_path, "gb", "GB"), env=gb_env(url))
    assert acct.wait_for_poll(5) and acct.wait_for_poll(5)
    state.set(status=401)
    assert acct.wait_for_poll(5) and acct.wait_for_poll(5)
    acct.finish(0.0)
    assert [w.split(": ")[1][:8] for w in acct.warnings] == ["HTTP 500", "HTTP 401"]


def test_slow_provider_never_blocks_start(tmp_path: Path, grid: tuple[FakeGrid, str]) -> None:
    state, url = grid
    state.set(delay_s=3.0, value=999.0)
    s = live_settings(tmp_path, "gb", "GB", carbon_timeout_s=0.2, carbon_poll_s=60)
    CarbonAccount.start(resolve_settings({"region": "GB"}, env={}, cwd=tmp_path), env={})
    t0 = time.perf_counter()
    acct = CarbonAccount.start(s, env=gb_env(url))
    assert time.perf_counter() - t0 < 0.05
    assert acct.g_per_kwh_now == intensity("GB").g_per_kwh  # static until it answers
    acct.update(1.8e6)
    assert acct.wait_for_poll(5, fresh=False)  # the first poll times out after 0.2 s
    t0 = time.perf_counter()
    block = acct.finish(3.6e6)
    assert time.perf_counter() - t0 < 0.5
    assert block["g_per_kwh"] == intensity("GB").g_per_kwh
    assert len(acct.warnings) == 1 and "within 0.2 s" in acct.warnings[0]


def test_finish_does_not_wait_for_a_request_in_flight(tmp_path: Path,
                                                      grid: tuple[FakeGrid, str]) -> None:
    state, url = grid
    state.set(delay_s=3.0)
    acct = CarbonAccount.start(live_settings(tmp_path, "gb", "GB", carbon_timeout_s=2.0),
                               env=gb_env(url))
    deadline = time.monotonic() + 5
    while not state.requests and time.monotonic() < deadline:
        time.sleep(0.005)
    t0 = time.perf_counter()
    block = acct.finish(3.6e6)
    assert time.perf_counter() - t0 < 0.5
    assert block["emissions_g"] == intensity("GB").g_per_kwh and acct.warnings == []


def test_missing_token_means_no_request(tmp_path: Path, grid: tuple[FakeGrid, str]) -> None:
    state, url = grid
    acct = CarbonAccount.start(live_settings(tmp_path, "electricitymaps", "SE-SE3"),
                               env=em_env(url, token=None))
    assert not acct.wait_for_poll(0.2)
    block = acct.finish(3.6e6)
    assert state.requests == [] and block["provider"] == "table" and block["emissions_g"] == 20.0
    assert len(acct.warnings) == 1 and "ENERGYMETER_ELECTRICITYMAPS_TOKEN" in acct.warnings[0]


@pytest.mark.parametrize("provider, region, needle", [
    ("gb", "SE", "Great Britain only"), ("gb", "GB-NIR", "Great Britain only"),
    ("electricitymaps", "WLD", "needs a zone"),
])
def test_provider_not_applicable(tmp_path: Path, grid: tuple[FakeGrid, str], provider: str,
                                 region: str, needle: str) -> None:
    state, url = grid
    env = {**gb_env(url), **em_env(url)}
    acct = CarbonAccount.start(live_settings(tmp_path, provider, region), env=env)
    block = acct.finish(3.6e6)
    assert state.requests == [] and block["provider"] == "table"
    assert len(acct.warnings) == 1 and needle in acct.warnings[0]


def test_live_false_never_polls(tmp_path: Path, grid: tuple[FakeGrid, str]) -> None:
    state, url = grid
    acct = CarbonAccount.start(live_settings(tmp_path, "gb", "GB"), env=gb_env(url), live=False)
    assert acct.finish(3.6e6)["provider"] == "table" and state.requests == []


# -- the whole measurement -------------------------------------------------------------------
_AUDIT_SCRIPT = textwrap.dedent("""
    import json, sys, time
    NETWORK = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
               "socket.gethostbyaddr", "socket.getnameinfo", "socket.sendto", "socket.sendmsg"}
    events = []
    def hook(name, args):
        if name in NETWORK:
            events.append(f"{name} {args!r}"[:300])
    sys.addaudithook(hook)
    import energymeter
    with energymeter.measure(out=sys.argv[1]) as m:
        sum(range(10**6))
    if sys.argv[2] == "wait":  # positive control: wait for the poller's connection
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            time.sleep(0.01)
    print(json.dumps({"events": events, "carbon": m.report.carbon}))
""")


def _run_audited(tmp_path: Path, env_extra: dict[str, str], wait: bool) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYMETER_")}
    env.update(PYTHONPATH=str(REPO), **env_extra)
    proc = subprocess.run(
        [sys.executable, "-c", _AUDIT_SCRIPT, str(tmp_path / "runs"), "wait" if wait else "no"],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(importlib.util.find_spec("energymeter.session.meter") is None,
                    reason="energymeter.meter (measure()) has not landed yet")
def test_default_measurement_makes_no_network_connection(tmp_path: Path) -> None:
    result = _run_audited(tmp_path, {}, wait=False)
    assert result["events"] == []
    assert result["carbon"]["provider"] == "table"


@pytest.mark.skipif(importlib.util.find_spec("energymeter.session.meter") is None,
                    reason="energymeter.meter (measure()) has not landed yet")
def test_audit_hook_sees_a_configured_provider(tmp_path: Path,
                                               grid: tuple[FakeGrid, str]) -> None:
    # Positive control for the test above: the same hook does see the live provider's socket.
    state, url = grid
    result = _run_audited(tmp_path, {"ENERGYMETER_CARBON_PROVIDER": "gb",
                                     "ENERGYMETER_REGION": "GB",
                                     "ENERGYMETER_GB_CARBON_URL": url}, wait=True)
    assert any(e.startswith("socket.connect") and "127.0.0.1" in e for e in result["events"])
    assert result["carbon"]["provider"] == "gb"


# -- credentials and redirects ---------------------------------------------
class Redirector:
    """A second local server: ``/v3/...`` answers 302 to ``target(path)``; anything else
    answers an intensity of 42. Every request's credential headers are recorded."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.target = lambda path: path
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                return

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                owner.requests.append({"path": self.path, **{
                    h: self.headers.get(h) for h in ("auth-token", "Authorization", "Cookie")}})
                if self.path.startswith("/v3/"):
                    self.send_response(302)
                    self.send_header("Location", owner.target(self.path))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = json.dumps({"carbonIntensity": 42}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.02}, daemon=True)


@pytest.fixture
def redirector() -> Iterator[Redirector]:
    r = Redirector()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()
        r.thread.join(2)


def test_a_redirect_to_another_origin_is_refused(grid: tuple[FakeGrid, str],
                                                 redirector: Redirector) -> None:
    """The value of another host was taken and labelled as the provider's
    live figure (and, once, the token went with the request)."""
    state, other = grid  # another port on 127.0.0.1: another origin
    redirector.target = lambda path: other + path
    with pytest.raises(LiveError) as info:
        ElectricityMapsProvider("SE", TOKEN, base_url=redirector.url).fetch(1.0)
    assert info.value.kind == "redirect"
    port = other.rsplit(":", 1)[1]
    assert f"another origin (http://127.0.0.1:{port})" in info.value.message
    assert TOKEN not in info.value.message and "zone=" not in info.value.message
    assert redirector.requests[0]["auth-token"] == TOKEN
    assert state.requests == []  # nothing at all was sent to the other origin


@pytest.mark.parametrize("target", ["http://localhost:{port}/x",  # another host name
                                    "https://127.0.0.1:{port}/x"])  # another scheme
def test_other_hosts_and_schemes_are_other_origins(redirector: Redirector,
                                                   target: str) -> None:
    from energymeter.carbon.live import _http_get_json

    port = redirector.url.rsplit(":", 1)[1]
    redirector.target = lambda path: target.format(port=port)
    with pytest.raises(LiveError) as info:
        _http_get_json(redirector.url + "/v3/x", {"Authorization": "Bearer b"}, 1.0)
    assert info.value.kind == "redirect"
    assert len(redirector.requests) == 1  # the redirect was not followed, even to us


def test_a_run_redirected_elsewhere_uses_the_table_and_says_so(
        tmp_path: Path, grid: tuple[FakeGrid, str], redirector: Redirector) -> None:
    state, other = grid
    redirector.target = lambda path: other + path
    acct = CarbonAccount.start(live_settings(tmp_path, "electricitymaps", "DK-DK2"),
                               env=em_env(redirector.url))
    for _ in range(2):
        assert acct.wait_for_poll(5)
    block = acct.finish(3.6e6)
    assert block["live_energy_share"] == 0.0 and block["g_per_kwh"] == 144.0
    assert "never answered" in block["source"]
    (warning,) = acct.warnings
    assert "redirected to another origin" in warning and "144 g/kWh" in warning
    assert state.requests == []


def test_token_is_kept_on_a_same_origin_redirect(redirector: Redirector) -> None:
    redirector.target = lambda path: redirector.url + "/moved" + path
    assert ElectricityMapsProvider("SE", TOKEN, base_url=redirector.url).fetch(1.0) == 42.0
    first, moved = redirector.requests
    assert moved["path"].startswith("/moved/v3/")
    assert first["auth-token"] == moved["auth-token"] == TOKEN


@pytest.mark.parametrize(("a", "b", "same"), [
    ("https://api.example.com/x", "https://api.example.com:443/y?z", True),
    ("http://h/x", "http://H:80/y", True),
    ("https://h/x", "http://h/x", False),  # a downgrade to plain HTTP
    ("http://h:8080/", "http://h:8081/", False),
    ("https://api.example.com/", "https://api.example.com.evil.net/", False),
])
def test_same_origin(a: str, b: str, same: bool) -> None:
    from energymeter.carbon.live import same_origin

    assert same_origin(a, b) is same
