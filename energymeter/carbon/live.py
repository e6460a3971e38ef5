"""Live carbon-intensity providers, polled in a background thread.

Imported only when the user configured ``carbon_provider`` (never by default): without it
energymeter makes no network connection at all.

* Electricity Maps API v3: ``GET {base}/v3/carbon-intensity/latest?zone=<ZONE>`` with header
  ``auth-token: <token>``; the reply's ``carbonIntensity`` (gCO2eq/kWh, lifecycle,
  consumption-based). Token from ``ENERGYMETER_ELECTRICITYMAPS_TOKEN``; base URL
  ``https://api.electricitymap.org``, overridable with ``ENERGYMETER_ELECTRICITYMAPS_URL``.
* GB Carbon Intensity API (National Energy System Operator, Great Britain only, no key):
  ``GET {base}/intensity``; ``data[0].intensity.actual``, else ``.forecast`` (gCO2/kWh,
  per kWh consumed, direct emission factors).
  Base URL ``https://api.carbonintensity.org.uk``, overridable with ``ENERGYMETER_GB_CARBON_URL``.

Every request has a timeout; every failure becomes a :class:`LiveError` with a ``kind``
(``http-401``, ``timeout``, ``network``, ``malformed``...) that the account turns into one
warning per kind and a fallback to the static table.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .._lazy import LazyLogger

log = LazyLogger("energymeter")

ELECTRICITYMAPS_URL = "https://api.electricitymap.org"
GB_CARBON_URL = "https://api.carbonintensity.org.uk"
ELECTRICITYMAPS_TOKEN_ENV = "ENERGYMETER_ELECTRICITYMAPS_TOKEN"
ELECTRICITYMAPS_URL_ENV = "ENERGYMETER_ELECTRICITYMAPS_URL"
GB_CARBON_URL_ENV = "ENERGYMETER_GB_CARBON_URL"
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
_MAX_REPLY_BYTES = 1 << 20


class LiveError(Exception):
    """A live provider could not give an intensity. ``kind`` groups failures for warnings."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class Provider(Protocol):
    name: str
    basis: str
    source: str

    def fetch(self, timeout_s: float) -> float:
        """The current intensity in g/kWh; raises :class:`LiveError`."""
        ...


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None] | None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # a port that is not a number
        return None


def same_origin(a: str, b: str) -> bool:
    """Whether URLs ``a`` and ``b`` have the same origin: scheme, host and port (the default
    port of the scheme when none is written)."""
    origin = _origin(a)
    return origin is not None and origin == _origin(b)


def _shown_origin(url: str) -> str:
    """``scheme://host:port`` of ``url``, nothing of its path or query (which may hold
    a token)."""
    origin = _origin(url)
    return f"{origin[0]}://{origin[1]}:{origin[2]}" if origin else "an unparsable address"


class _CrossOriginRedirect(Exception):
    """A provider's server redirected to another origin (raised by the redirect handler)."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


def _redirect_handler() -> Any:
    """A redirect handler that follows redirects within the provider's origin only.

    A redirect to another origin (another host, port or scheme, https to http included) is
    refused before any request is sent there: its answer would not be the provider's live
    figure, yet would be labelled as one, and the provider's token would travel with it."""
    import urllib.request

    class SameOriginRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                             newurl: str) -> Any:
            if not same_origin(req.full_url, newurl):
                fp.close()  # the redirect's own reply: its connection is not used again
                raise _CrossOriginRedirect(newurl)
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return SameOriginRedirect()


def _http_get_json(url: str, headers: Mapping[str, str], timeout_s: float, hint: str = "") -> Any:
    """GET ``url`` and decode its JSON body; any failure -> :class:`LiveError`. Redirects are
    followed within ``url``'s origin only (:func:`same_origin`); one to another origin is a
    ``redirect`` failure, and nothing is sent there."""
    import http.client
    import urllib.error
    import urllib.parse
    import urllib.request

    host = urllib.parse.urlsplit(url).hostname or ""
    handlers = [urllib.request.ProxyHandler({})] if host in _LOOPBACK else []
    opener = urllib.request.build_opener(*handlers, _redirect_handler())
    shown = url.split("?", 1)[0]
    try:
        request = urllib.request.Request(url, headers={"Accept": "application/json", **headers})
        with opener.open(request, timeout=timeout_s) as reply:
            body = reply.read(_MAX_REPLY_BYTES)
    except _CrossOriginRedirect as exc:
        raise LiveError(
            "redirect", f"{shown} redirected to another origin ({_shown_origin(exc.target)}); "
            "an answer from there is not this provider's live figure, so it is not used (if "
            "the provider really moved, give its new address in the provider's URL variable)"
        ) from None
    except urllib.error.HTTPError as exc:
        more = f"; {hint}" if hint and exc.code in (401, 403) else ""
        raise LiveError(
            f"http-{exc.code}", f"HTTP {exc.code} {exc.reason} from {shown}{more}"
        ) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise LiveError("timeout", f"no reply from {shown} within {timeout_s:g} s") from None
        raise LiveError("network", f"cannot reach {shown}: {exc.reason}") from None
    except TimeoutError:
        raise LiveError("timeout", f"no reply from {shown} within {timeout_s:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise LiveError("network", f"cannot read {shown}: {exc!r}") from None
    except ValueError as exc:  # e.g. "unknown url type" for a bad base URL
        raise LiveError("bad-url", f"cannot request {shown!r}: {exc}") from None
    try:
        return json.loads(body.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LiveError("malformed", f"reply from {shown} is not JSON: {exc}") from None


def _as_intensity(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LiveError("malformed", f"{where} is {value!r}, not a number")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise LiveError("malformed", f"{where} is {value!r}, not a finite intensity >= 0")
    return number


class ElectricityMapsProvider:
    """Electricity Maps API v3, latest carbon intensity of one zone."""

    name = "electricitymaps"
    basis = "consumption"
    source = "Electricity Maps API v3 (carbon-intensity/latest, live)"

    def __init__(
        self, zone: str, token: str, *, base_url: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        base = base_url or env.get(ELECTRICITYMAPS_URL_ENV) or ELECTRICITYMAPS_URL
        self.zone = zone
        self.token = token
        self.base_url = base.rstrip("/")

    @property
    def url(self) -> str:
        from urllib.parse import quote

        return f"{self.base_url}/v3/carbon-intensity/latest?zone={quote(self.zone, safe='')}"

    def fetch(self, timeout_s: float) -> float:
        reply = _http_get_json(
            self.url, {"auth-token": self.token}, timeout_s,
            hint=f"check the token in ${ELECTRICITYMAPS_TOKEN_ENV} and that it covers zone "
                 f"{self.zone}",
        )
        if not isinstance(reply, dict) or "carbonIntensity" not in reply:
            raise LiveError("malformed", f"Electricity Maps reply has no carbonIntensity: "
                                         f"{str(reply)[:200]}")
        return _as_intensity(reply["carbonIntensity"], "Electricity Maps carbonIntensity")


class GBCarbonProvider:
    """GB Carbon Intensity API (Great Britain, national, current half hour)."""

    name = "gb"
    # NESO: CO2 per kWh *consumed* in GB (imports and transmission losses counted), with
    # direct (operational) emission factors, not lifecycle ones.
    basis = "consumption"
    source = "GB Carbon Intensity API (NESO, live; direct CO2 per kWh consumed)"

    def __init__(
        self, *, base_url: str | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        env = os.environ if env is None else env
        base = base_url or env.get(GB_CARBON_URL_ENV) or GB_CARBON_URL
        self.base_url = base.rstrip("/")

    @property
    def url(self) -> str:
        return f"{self.base_url}/intensity"

    def fetch(self, timeout_s: float) -> float:
        reply = _http_get_json(self.url, {}, timeout_s)
        try:
            entry = reply["data"][0]["intensity"]
            actual = entry.get("actual")
            value = actual if actual is not None else entry["forecast"]
        except (KeyError, IndexError, TypeError, AttributeError):
            raise LiveError("malformed", f"GB carbon reply lacks data[0].intensity.actual/"
                                         f"forecast: {str(reply)[:200]}") from None
        return _as_intensity(value, "GB carbon intensity")


class Poller:
    """Polls ``provider`` in a daemon thread: at start, then every ``interval_s``.

    ``on_value(g_per_kwh)`` gets each answer, ``on_failure(LiveError)`` each failure. Neither
    the constructor nor :meth:`start` does any I/O; the first request happens in the thread.
    """

    def __init__(
        self,
        provider: Provider,
        *,
        interval_s: float,
        timeout_s: float,
        on_value: Callable[[float], None],
        on_failure: Callable[[LiveError], None],
    ) -> None:
        self.provider = provider
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._on_value = on_value
        self._on_failure = on_failure
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._started = 0
        self._completed = 0
        self._thread = threading.Thread(
            target=self._run, name=f"energymeter-carbon-{provider.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, join_timeout_s: float = 0.2) -> None:
        """Ask the thread to stop and wait briefly; a request in flight is abandoned (daemon)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(join_timeout_s)

    @property
    def polls_completed(self) -> int:
        with self._cond:
            return self._completed

    def wait_for_poll(self, timeout_s: float = 5.0, *, fresh: bool = True) -> bool:
        """Wait until a poll has completed and been applied: with ``fresh``, one that *starts
        after this call* (so it sees the provider's state as of now); otherwise the one in
        flight, or the next one if none is."""
        with self._cond:
            target = self._started + 1 if fresh else self._completed + 1
            return self._cond.wait_for(
                lambda: self._completed >= target or self._stop.is_set(), timeout_s
            ) and self._completed >= target

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                self._started += 1
            try:
                value = self.provider.fetch(self.timeout_s)
            except LiveError as exc:
                log.debug("carbon provider %s failed: %s", self.provider.name, exc.message)
                if not self._stop.is_set():
                    self._on_failure(exc)
            else:
                if not self._stop.is_set():
                    self._on_value(value)
            finally:
                with self._cond:
                    self._completed += 1
                    self._cond.notify_all()
            self._stop.wait(self.interval_s)
