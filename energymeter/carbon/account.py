"""Carbon accounting of one measurement: emissions = IT energy x PUE x intensity.

The meter calls :meth:`CarbonAccount.start` before measuring, :meth:`CarbonAccount.update` on
every sampler tick with the cumulative IT energy, and :meth:`CarbonAccount.finish` at the end,
which returns the report's ``carbon`` block. With a static table the result is
``E x PUE x I``; with a live provider each update's energy since the previous update is
attributed to the intensity in force at that update (time-weighted).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..settings import CARBON_PROVIDERS
from .region import resolve_region
from .static import WORLD, Intensity, intensity

if TYPE_CHECKING:
    from .live import LiveError, Poller, Provider

J_PER_KWH = 3.6e6


def _make_provider(
    settings: Any, static: Intensity, env: Mapping[str, str]
) -> tuple[Provider | None, list[str]]:
    """The live provider ``settings`` asks for, or ``None`` and a warning saying why not."""
    from . import live

    kind = settings.carbon_provider
    fallback = (
        f"using the static table value {static.g_per_kwh:g} g/kWh ({static.source}, "
        f"{static.region}) instead"
    )
    if kind == "electricitymaps":
        if static.region == WORLD:
            return None, [
                "carbon_provider 'electricitymaps' needs a zone, but the region is the world "
                f"average; set the region (e.g. ENERGYMETER_REGION=SE-SE3); {fallback}"
            ]
        token = env.get(live.ELECTRICITYMAPS_TOKEN_ENV, "").strip()
        if not token:
            return None, [
                f"carbon_provider 'electricitymaps' needs an API token in "
                f"${live.ELECTRICITYMAPS_TOKEN_ENV} (get one at https://portal.electricitymaps.com)"
                f"; {fallback}"
            ]
        return live.ElectricityMapsProvider(static.region, token, env=env), []
    if kind == "gb":
        code = static.region
        if code != "GB" and not (code.startswith("GB-") and code != "GB-NIR"):
            return None, [
                f"carbon_provider 'gb' covers Great Britain only (region GB), but the region is "
                f"{code}; {fallback}"
            ]
        return live.GBCarbonProvider(env=env), []
    raise ConfigError(
        f"carbon_provider {kind!r} is unknown; accepted: {', '.join(CARBON_PROVIDERS)}"
    )


class CarbonAccount:
    """Running carbon account of one measurement. Thread-safe; create with :meth:`start`."""

    def __init__(
        self,
        settings: Any,
        static: Intensity,
        region_source: str,
        warnings: list[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.static = static
        self.region = static.region
        self.region_source = region_source
        self.pue = float(settings.pue)
        self._clock = clock
        self._t0 = clock()
        self._lock = threading.Lock()
        self._warnings = list(warnings)
        self._failure_kinds: set[str] = set()
        self._provider: Provider | None = None
        self._poller: Poller | None = None
        # Intensity in force now (changed by the poller thread).
        self._g_per_kwh = static.g_per_kwh
        self._live = False
        # The open segment: energy from _seg_start_j on is attributed to _seg_g (live or not).
        self._seg_g = static.g_per_kwh
        self._seg_live = False
        self._seg_start_j = 0.0
        self._closed_jg = 0.0  # sum over closed segments of energy_j x g_per_kwh
        self._closed_live_j = 0.0
        self._last_j = 0.0
        self._timeline: list[dict[str, Any]] = []
        self._finishing = False
        self._block: dict[str, Any] | None = None

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        settings: Any,
        *,
        env: Mapping[str, str] | None = None,
        tz: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        live: bool = True,
        provider: Provider | None = None,
    ) -> CarbonAccount:
        """Resolve the region (``ConfigError`` if an explicit one is unknown), start the live
        poller if ``settings.carbon_provider`` asks for one, and return at once.

        No network I/O happens here: the first poll runs in the background thread and until it
        answers the static table value is in force. ``live=False`` never starts a provider
        (e.g. to rebuild the block of a finished run); ``provider`` replaces the configured one.
        """
        env = os.environ if env is None else env
        code, region_source, warnings = resolve_region(settings, env=env, tz=tz)
        static = intensity(code, settings.carbon_table)
        acct = cls(settings, static, region_source, warnings, clock)
        if live and (provider is not None or settings.carbon_provider != "none"):
            if provider is None:
                provider, more = _make_provider(settings, static, env)
                acct._warnings.extend(more)
            if provider is not None:
                acct._start_poller(provider)
        return acct

    def _start_poller(self, provider: Provider) -> None:
        from .live import Poller

        self._provider = provider
        self._timeline.append(
            {"t_s": 0.0, "g_per_kwh": self.static.g_per_kwh, "live": False}
        )
        self._poller = Poller(
            provider,
            interval_s=float(self.settings.carbon_poll_s),
            timeout_s=float(self.settings.carbon_timeout_s),
            on_value=self._on_live_value,
            on_failure=self._on_live_failure,
        )
        self._poller.start()

    # -- poller callbacks (background thread) ------------------------------------------------
    def _set_in_force(self, g_per_kwh: float, live: bool) -> None:
        """Caller holds the lock."""
        if g_per_kwh == self._g_per_kwh and live == self._live:
            return
        self._g_per_kwh = g_per_kwh
        self._live = live
        t_s = max(0.0, self._clock() - self._t0)
        self._timeline.append({"t_s": t_s, "g_per_kwh": g_per_kwh, "live": live})

    def _on_live_value(self, g_per_kwh: float) -> None:
        with self._lock:
            if not self._finishing:
                self._set_in_force(g_per_kwh, True)

    def _on_live_failure(self, exc: LiveError) -> None:
        with self._lock:
            if self._finishing:
                return
            self._set_in_force(self.static.g_per_kwh, False)
            if exc.kind not in self._failure_kinds:
                self._failure_kinds.add(exc.kind)
                name = self._provider.name if self._provider is not None else "live"
                self._warnings.append(
                    f"carbon provider {name}: {exc.message}; using the static table value "
                    f"{self.static.g_per_kwh:g} g/kWh ({self.static.source}, {self.region}) "
                    "while it fails"
                )

    # -- the meter's interface ---------------------------------------------------------------
    def _update_locked(self, energy_j: float) -> None:
        e = float(energy_j)
        if not math.isfinite(e) or e < self._last_j:
            return  # cumulative energy never decreases; ignore a bad reading
        if self._g_per_kwh != self._seg_g or self._live != self._seg_live:
            seg_j = self._last_j - self._seg_start_j
            self._closed_jg += seg_j * self._seg_g
            if self._seg_live:
                self._closed_live_j += seg_j
            self._seg_start_j = self._last_j
            self._seg_g = self._g_per_kwh
            self._seg_live = self._live
        self._last_j = e

    def update(self, energy_j: float) -> None:
        """Record the cumulative IT energy (J) since start; the energy since the previous update
        is attributed to the intensity in force now. Cheap and thread-safe."""
        with self._lock:
            if not self._finishing:
                self._update_locked(energy_j)

    def wait_for_poll(self, timeout_s: float = 5.0, *, fresh: bool = True) -> bool:
        """Block until a live poll has been applied (tests, diagnostics): with ``fresh`` one
        that starts after this call, else the one in flight. ``False`` on timeout or when no
        live provider runs."""
        poller = self._poller
        return poller.wait_for_poll(timeout_s, fresh=fresh) if poller is not None else False

    @property
    def warnings(self) -> list[str]:
        """Warnings for the report (world-average default, provider failures...)."""
        with self._lock:
            return list(self._warnings)

    @property
    def g_per_kwh_now(self) -> float:
        """The intensity in force now (live value or static table value)."""
        with self._lock:
            return self._g_per_kwh

    def finish(self, energy_j: float) -> dict[str, Any]:
        """Final update, stop the poller, and return the report's ``carbon`` block.

        Calling it again returns the same block."""
        with self._lock:
            if self._block is not None:
                return dict(self._block)
            self._update_locked(energy_j)
            self._finishing = True
        if self._poller is not None:
            self._poller.stop(join_timeout_s=0.2)
        with self._lock:
            self._block = self._build_block()
            return dict(self._block)

    # -- the block ---------------------------------------------------------------------------
    def _build_block(self) -> dict[str, Any]:
        """The ``carbon`` block (caller holds the lock): the table's intensity and the
        energies, then what the live provider changed, then the cost where a price is set."""
        it_j = self._last_j
        seg_j = it_j - self._seg_start_j
        weighted_jg = self._closed_jg + seg_j * self._seg_g
        live_j = self._closed_live_j + (seg_j if self._seg_live else 0.0)
        facility_j = it_j * self.pue
        facility_kwh = facility_j / J_PER_KWH
        emissions_g = _emissions_g(it_j, facility_kwh, weighted_jg, live_j, self.pue,
                                   self.static.g_per_kwh)
        block = self._table_block(it_j, facility_j, emissions_g)
        if self._provider is not None:
            block.update(self._live_fields(self._provider, it_j, live_j, emissions_g,
                                           facility_kwh))
        if self.settings.price_per_kwh is not None:
            price = float(self.settings.price_per_kwh)
            block.update(price_per_kwh=price, currency=self.settings.currency,
                         cost=facility_kwh * price)
        return block

    def _table_block(self, it_j: float, facility_j: float, emissions_g: float
                     ) -> dict[str, Any]:
        """The block as the static table gives it: region, intensity and its source, PUE,
        energies and emissions."""
        static = self.static
        return {
            "region": self.region,
            "region_source": self.region_source,
            "name": static.name,
            "g_per_kwh": static.g_per_kwh,
            "basis": static.basis,
            "source": static.source,
            "year": static.year,
            "table": static.table,
            "provider": "table",
            "pue": self.pue,
            "it_energy_j": it_j,
            "facility_energy_j": facility_j,
            "it_energy_kwh": it_j / J_PER_KWH,
            "facility_energy_kwh": facility_j / J_PER_KWH,
            "emissions_g": emissions_g,
        }

    def _live_fields(self, provider: Provider, it_j: float, live_j: float, emissions_g: float,
                     facility_kwh: float) -> dict[str, Any]:
        """What a live provider changes in the block: the effective intensity, its basis and
        source, the share of the energy it covered, the table's figures beside them and the
        timeline of intensities in force."""
        live_share = live_j / it_j if it_j > 0 else (1.0 if self._live else 0.0)
        basis, source = _live_basis(provider.basis, provider.source, self.static, live_share)
        return dict(
            g_per_kwh=emissions_g / facility_kwh if facility_kwh > 0 else self._g_per_kwh,
            basis=basis,
            source=source,
            provider=provider.name,
            live_energy_share=live_share,
            table_g_per_kwh=self.static.g_per_kwh,
            table_basis=self.static.basis,
            table_source=self.static.source,
            intensity_timeline=[dict(entry) for entry in self._timeline],
        )


def _emissions_g(it_j: float, facility_kwh: float, weighted_jg: float, live_j: float,
                 pue: float, table_g_per_kwh: float) -> float:
    """Grams of CO2e: exactly E x PUE x I when the static table's intensity was in force
    throughout, else the time-weighted sum (``weighted_jg``: joules x g/kWh) x PUE."""
    if weighted_jg == it_j * table_g_per_kwh and live_j == 0.0:
        return facility_kwh * table_g_per_kwh  # static table: exactly E x PUE x I
    return weighted_jg * pue / J_PER_KWH


def _live_basis(provider_basis: str, provider_source: str, static: Intensity,
                live_share: float) -> tuple[str, str]:
    """The basis and source of the intensity of a run with a live provider that covered
    ``live_share`` of its energy (the static table covered the rest)."""
    if live_share >= 1.0:
        return provider_basis, provider_source
    if live_share > 0:
        basis = provider_basis if provider_basis == static.basis else "mixed"
        return basis, (f"{provider_source}; {static.source} while it failed "
                       f"({1 - live_share:.0%} of the energy)")
    return static.basis, f"{static.source} (live provider never answered)"
