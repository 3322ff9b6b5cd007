"""The resolver service: how every market settled, the official climate reports, and the desk's scores.

Inputs: `md.market.*` definitions (a status of determined / finalized / settled with a result makes
the resolver read that market from Kalshi REST, which carries the settlement value and times), a
periodic sweep of the configured series' settled markets (so nothing missed while down stays
missed), and the NWS CLI products of the traded weather stations. Outputs: `market_resolutions`
(one row per market, updated in place on a reversal), `res.market.<ticker>` for each new or changed
resolution, `prediction_accuracy` (one row per signal), `res.accuracy` after each scoring batch, and
`cmd.resolver.accuracy` / `cmd.resolver.calibration` answers (data only; the CLI and Telegram render).

When a weather market's result and its official report's maximum disagree, both are kept and
`ops.alert.resolution` is raised.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from libs.common import subjects
from libs.common.bus import Bus, CommandError
from libs.common.config import Mode, Settings
from libs.common.db import MarketResolution, create_engine, session_factory
from libs.common.events import AccuracyUpdate, Alert, MarketDefinition, ModelParamUpdate, Resolution
from libs.common.families import family_of
from libs.common.jobs import Job, Jobs
from libs.common.kalshi import KalshiRest
from libs.common.kalshi.factory import environment, rest_client, signer
from libs.common.kalshi.models import Market
from libs.common.logs import get_logger
from libs.common.runtime import ServiceRuntime
from libs.common.station_bias import fit_station_bias
from libs.common.stations import BY_SERIES, Station
from services.resolver.reports import ClimateReports
from services.resolver.scoring import summary
from services.resolver.store import Outcome, ResolverStore, as_scored, implied_result

log = get_logger(__name__)

RESOLVED = {"determined", "finalized", "settled", "amended"}
NWS_URL = "https://api.weather.gov"


def event_date(event_ticker: str) -> date | None:
    """The climate day a daily weather event is about, from its ticker (`KXHIGHNY-26NOV23` → 2026-11-23)."""
    try:
        return datetime.strptime(event_ticker.rsplit("-", 1)[1][:7].title(), "%y%b%d").date()
    except (IndexError, ValueError):
        return None


def outcome_of(m: Market, series: str | None, source: str) -> Outcome | None:
    if m.result not in ("yes", "no", "scalar", "void"):
        return None
    return Outcome(ticker=m.ticker, event_ticker=m.event_ticker, series_ticker=series or subjects.series_of(m.ticker),
                   result=m.result, status=m.status, settlement_value=m.settlement_value,
                   expiration_value=m.expiration_value or None, determined_at=None, settled_at=m.settlement_ts,
                   source=source, strike_type=m.strike_type, floor_strike=m.floor_strike, cap_strike=m.cap_strike,
                   raw=m.model_dump(mode="json", by_alias=True))


class Resolver:
    """One resolver replica (the work is idempotent, so two replicas only repeat each other harmlessly)."""

    def __init__(self, settings: Settings, bus: Bus, store: ResolverStore, rest: KalshiRest,
                 nws: httpx.AsyncClient | None, *, account: KalshiRest | None = None, sweep_every_s: float = 600,
                 reports_every_s: float = 600, score_every_s: float = 5, fetch_every_s: float = 2) -> None:
        """`nws`: an HTTP client on the NWS API root (User-Agent set); None reads no climate reports.
        `account`: a signed client of the desk's account (sim, demo, live): its settlements name markets
        the desk held, whatever series they belong to."""
        self.settings = settings
        self.bus = bus
        self.store = store
        self.rest = rest
        stations = [BY_SERIES[x] for x in settings.series_list() if x in BY_SERIES]
        reports = ClimateReports(nws, store, stations, self.on_report) if nws is not None and stations else None
        self.reports = reports
        self.mode = settings.mode
        self.pending: set[str] = set()  # tickers a lifecycle event said are resolved: read them from REST
        self.unpublished: set[str] = set()  # resolutions whose res.market publish failed
        self.counts: dict[str, int] = defaultdict(int)
        self.jobs = Jobs(self._job_failing)
        self.jobs.add("fetch", fetch_every_s, self.fetch_pending, when=lambda: bool(self.pending or self.unpublished))
        self.jobs.add("sweep", sweep_every_s, self.sweep)
        self.account = account
        if account is not None:
            self.jobs.add("settlements", sweep_every_s, self.from_settlements)
        self.jobs.add("score", score_every_s, self.score)
        if reports is not None:
            self.jobs.add("climate_reports", reports_every_s, reports.poll)
            self.jobs.add("station_bias", reports_every_s, self.fit_station_biases)
        self.biases: dict[str, tuple[float, int]] = {}  # station -> (bias °F, days) last published
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        await self.bus.follow("md.market.>", MarketDefinition, self.on_market, replay_last=True)
        for verb, fn in (("accuracy", self.cmd_accuracy), ("calibration", self.cmd_calibration),
                         ("status", self.cmd_status), ("backfill", self.cmd_backfill)):
            await self.bus.serve("resolver", verb, fn)
        for job in self.jobs.jobs.values():  # one pass at start, then on each job's timer
            await self.jobs.run_once(job)
        self._tasks = self.jobs.start(self._stop)
        log.info("resolver_started", mode=self.mode.value, series=self.settings.series_list())

    async def stop(self) -> None:
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _job_failing(self, job: Job, failing: bool) -> None:
        await self.alert("resolver", f"job:{job.name}", f"resolver job '{job.name}' "
                         + (f"keeps failing ({job.consecutive} in a row)" if failing else "recovered"),
                         job.last_error or "", "warning" if failing else "info")

    async def alert(self, family: str, key: str, title: str, detail: str, severity: str = "warning",
                    data: dict[str, Any] | None = None) -> None:
        await self.bus.publish_js(subjects.ops_alert(family), Alert(
            ts_event=datetime.now(UTC), mode=self.mode, family=family, severity=severity,  # type: ignore[arg-type]
            dedupe_key=key, title=title, detail=detail, data=data or {}))

    # -- outcomes ---------------------------------------------------------------------------------

    async def on_market(self, d: MarketDefinition) -> None:
        if d.status in RESOLVED and d.result:
            self.pending.add(d.ticker)

    async def fetch_pending(self) -> None:
        """Read the markets lifecycle events named (REST has the settlement value and times)."""
        todo = sorted(self.pending | self.unpublished)
        for i in range(0, len(todo), 100):
            chunk = todo[i:i + 100]
            for m in await self.rest.markets(tickers=chunk):
                await self.resolve(m, "kalshi-rest")
            self.pending.difference_update(chunk)

    async def sweep(self, since: datetime | None = None) -> int:
        """Every settled market of the configured series (catches what was missed while down), or only
        those settled since `since`; the number of new or changed resolutions."""
        before = self.counts["new"] + self.counts["changed"]
        for series in self.settings.series_list():
            for m in await self.rest.markets(series_ticker=series, status="settled"):
                if since is None or m.settlement_ts is None or m.settlement_ts >= since:
                    await self.resolve(m, "kalshi-rest", series=series)
        return self.counts["new"] + self.counts["changed"] - before

    async def from_settlements(self) -> int:
        """Markets the account was paid on that have no resolution yet: read them (next fetch)."""
        assert self.account is not None
        rows = await self.account.settlements()
        new = {r.ticker for r in rows} - await self.store.resolved({r.ticker for r in rows})
        self.pending |= new
        return len(new)

    async def resolve(self, m: Market, source: str, *, series: str | None = None) -> None:
        o = outcome_of(m, series, source)
        if o is None:
            return
        change, row = await self.store.record(o)
        if row is None:
            return
        if change is not None:
            self.counts[change] += 1
            log.info("market_resolved", ticker=o.ticker, result=o.result, change=change, revision=row.revision)
            await self._check_report(row, o)
            await self._btc_basis(o, m)
        if change is not None or o.ticker in self.unpublished:
            self.unpublished.add(o.ticker)
            await self._publish(row)
            self.unpublished.discard(o.ticker)

    async def _publish(self, row: MarketResolution) -> None:
        await self.bus.publish_js(subjects.res_market(row.ticker), Resolution(
            id=f"res:{self.mode.value}:{row.ticker}:{row.revision}", ts_event=datetime.now(UTC), mode=self.mode,
            ticker=row.ticker, event_ticker=row.event_ticker, result=row.result,  # type: ignore[arg-type]
            settlement_value=row.settlement_value_price, settled_time=row.settled_at))

    async def _btc_basis(self, o: Outcome, m: Market) -> None:
        if family_of(o.series_ticker or "") != "btc" or not o.expiration_value:
            return
        basis = await self.store.record_basis(o.ticker, o.event_ticker, m.close_time)
        if basis is not None:
            log.info("btc_basis", ticker=o.ticker, basis=str(basis), settlement=o.expiration_value)

    async def _check_report(self, row: MarketResolution, o: Outcome | None = None) -> None:
        """Weather: attach the official report and alert when its maximum implies another result."""
        station = BY_SERIES.get(row.series_ticker or "")
        day = event_date(row.event_ticker)
        if station is None or day is None or self.reports is None:
            return
        rep = await self.store.official_report(self.reports.source, station.icao, day)
        if rep is None or rep.max_temp_f is None:
            return
        await self.store.attach_report(row.ticker, rep.id, rep.max_temp_f)
        raw = row.raw or {}
        strike_type = o.strike_type if o else raw.get("strike_type")
        floor = o.floor_strike if o else _dec(raw.get("floor_strike"))
        cap = o.cap_strike if o else _dec(raw.get("cap_strike"))
        implied = implied_result(strike_type, floor, cap, Decimal(rep.max_temp_f))
        if implied is not None and row.result in ("yes", "no") and implied != row.result:
            self.counts["report_disagrees"] += 1
            await self.alert("resolution", f"resolution:{row.ticker}:{row.revision}:{rep.id}",
                             f"{row.ticker} settled {row.result.upper()} but the official report says "
                             f"{rep.max_temp_f} °F (→ {implied.upper()})",
                             f"climate report {rep.product_id} ({rep.kind}, issued {rep.issued_at:%Y-%m-%d %H:%M} UTC)",
                             data={"ticker": row.ticker, "result": row.result, "report_max_f": rep.max_temp_f,
                                   "report_id": rep.id})

    async def on_report(self, station: Station, report: dict[str, Any]) -> None:
        """A new CLI issuance: alert once if unparsed; else re-check the day's resolved markets against it."""
        if report["parse_error"]:
            await self.alert("resolution", f"cli_unparsed:{report['product_id']}",
                             f"climate report {report['product_id']} ({station.icao}) could not be read",
                             report["parse_error"])
            return
        if report["kind"] == "intermediate" or report["climate_date"] is None:
            return
        event = f"{station.series}-{report['climate_date']:%y%b%d}".upper()
        for row in await self.store.resolutions_of(station.series, event):
            await self._check_report(row)

    # -- scoring ----------------------------------------------------------------------------------

    async def score(self) -> int:
        """Score everything pending, batch by batch; the number scored."""
        total = 0
        while True:
            rows = await self.store.score_pending()
            if not rows:
                return total
            total += len(rows)
            self.counts["scored"] += len(rows)
            for family in sorted({r.family for r in rows}):
                s = summary([as_scored(a) for a in await self.store.scored(days=30, family=family)])
                await self.bus.publish(subjects.res_accuracy(), AccuracyUpdate(
                    ts_event=datetime.now(UTC), mode=self.mode, model="all", family=family, n=s["n"],
                    brier=s["brier"], log_loss=s["log_loss"]))

    # -- feedback into the models ---------------------------------------------------------------

    async def fit_station_biases(self) -> None:
        """Each weather station's forecast bias from its resolved days, published on `res.param.*`
        (signals applies it to the next ladder and keeps it in model_params)."""
        if self.reports is None:
            return
        for st in self.reports.stations:
            days = await self.store.station_days(self.reports.source, st.icao, st.series)
            if not days:
                continue
            value = round(fit_station_bias([f for _, f, _ in days], [float(o) for _, _, o in days]), 3)
            if self.biases.get(st.icao) == (value, len(days)):
                continue
            await self.bus.publish_js(subjects.res_param("weather", "station_bias_f", st.icao), ModelParamUpdate(
                id=f"param:{self.mode.value}:weather:station_bias_f:{st.icao}:{len(days)}:{value}",
                ts_event=datetime.now(UTC), mode=self.mode, family="weather", name="station_bias_f",
                scope=st.icao, value=value, n_samples=len(days),
                params={"first_day": days[0][0].isoformat(), "last_day": days[-1][0].isoformat(), "prior_n": 10}))
            self.biases[st.icao] = (value, len(days))
            log.info("station_bias_fitted", station=st.icao, bias_f=value, days=len(days))

    # -- commands ---------------------------------------------------------------------------------

    @staticmethod
    def _window(req: dict[str, Any]) -> tuple[float, str | None]:
        try:
            days = float(req.get("days", 30))
        except (TypeError, ValueError):
            raise CommandError("bad_request", "days must be a number") from None
        if not 0 < days <= 3650:
            raise CommandError("bad_request", "days must be between 0 and 3650")
        family = req.get("family")
        return days, str(family) if family else None

    async def cmd_accuracy(self, req: dict[str, Any]) -> dict[str, Any]:
        """{days, family?} → per family: n, Brier, market Brier, skill, log loss, hit rate, sharpness, bins, P&L."""
        days, family = self._window(req)
        by_family: dict[str, list[Any]] = defaultdict(list)
        for a in await self.store.scored(days=days, family=family):
            by_family[a.family].append(as_scored(a))
        return {"mode": self.mode.value, "days": days,
                "families": {f: summary(rows) for f, rows in sorted(by_family.items())}}

    async def cmd_calibration(self, req: dict[str, Any]) -> dict[str, Any]:
        days, family = self._window(req)
        try:
            n_bins = int(req.get("bins", 10))
        except (TypeError, ValueError):
            raise CommandError("bad_request", "bins must be a whole number") from None
        if not 2 <= n_bins <= 50:
            raise CommandError("bad_request", "bins must be between 2 and 50")
        rows = [as_scored(a) for a in await self.store.scored(days=days, family=family)]
        return {"mode": self.mode.value, "days": days, "family": family, "n": len(rows),
                "bins": summary(rows, n_bins=n_bins)["bins"]}

    async def cmd_backfill(self, req: dict[str, Any]) -> dict[str, Any]:
        """{days}: resolve every market settled in the window and score what has no score yet (idempotent)."""
        days, _ = self._window(req)
        since = datetime.now(UTC) - timedelta(days=days)
        resolutions = await self.sweep(since)
        scored = await self.score()
        return {"mode": self.mode.value, "days": days, "resolutions_new_or_changed": resolutions, "scored": scored}

    async def cmd_status(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"mode": self.mode.value, "counts": dict(self.counts), "pending": len(self.pending),
                "station_bias_f": {k: v for k, (v, _) in self.biases.items()},
                "unpublished": len(self.unpublished), "jobs": self.jobs.snapshot()}


def _dec(v: Any) -> Decimal | None:
    return Decimal(str(v)) if v is not None else None


async def run_resolver(rt: ServiceRuntime) -> None:
    s = rt.settings
    engine = create_engine(s.require_database_url("the resolver keeps its records in PostgreSQL"))
    store = ResolverStore(session_factory(engine), s.mode.value)
    rest = KalshiRest(environment(s))  # public market data: no key needed
    http = httpx.AsyncClient(base_url=s.weather_root() or NWS_URL, timeout=30,
                             headers={"User-Agent": s.nws_user_agent})
    # The account's settlements (not in paper: its positions live in the paper broker, not on Kalshi).
    account = rest_client(s) if s.mode is not Mode.PAPER and signer(s) is not None else None
    resolver = Resolver(s, rt.bus, store, rest, http, account=account)
    try:
        await resolver.start()
        while not rt.stopping.is_set():
            failing = resolver.jobs.failing()
            rt.health.detail = (f"failing: {failing}; " if failing else "") + f"counts {dict(resolver.counts)}"
            try:
                await asyncio.wait_for(rt.stopping.wait(), 2)
            except TimeoutError:
                pass
    finally:
        await resolver.stop()
        await rest.aclose()
        if account is not None:
            await account.aclose()
        await http.aclose()
        await engine.dispose()


__all__ = ["Resolver", "event_date", "outcome_of", "run_resolver"]
