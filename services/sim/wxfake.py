"""Fake Open-Meteo (ensemble + forecast) and NWS observations and climate reports, shaped like the real APIs
(data_sources.md A2, B1–B4).

Driven by `WeatherTruth` (services/sim/weather_truth.py): the ensemble serves the newest model run available
at the fake's clock, whose members know the weather only up to the run's start; observations are the true
trace at each hourly METAR, in whole °F as ASOS reports them (sent as tenths of °C, which round-trips);
the climate report carries the day's true CLI maximum, so the markets, the CLI and the feeds agree.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from aiohttp import web

from libs.common.climate import climate_day, standard_offset
from libs.common.logs import get_logger
from libs.common.stations import STATIONS, Station
from services.sim.weather_truth import ERROR_TIMESCALE_H, MODELS, WeatherTruth, round_half_up

log = get_logger(__name__)

ALIASES = {"gfs025": "ncep_gefs025", "gfs_seamless": "ncep_gefs_seamless", "ecmwf_ifs025": "ecmwf_ifs025_ensemble",
           "gem_global": "gem_global_ensemble", "icon_global": "dwd_icon_global_eps",
           "icon_global_eps": "dwd_icon_global_eps", "cmc_gem_geps": "gem_global_ensemble"}
__all__ = ["MODELS", "WeatherFake", "WeatherTruth"]


def _epoch_hours(times: list[datetime]) -> np.ndarray:
    return np.array([int(t.timestamp()) // 3600 for t in times], dtype=np.int64)


def observed_f(truth: WeatherTruth, station: Station, t: datetime) -> float:
    """What ASOS reports at `t`: the true 5-minute value in whole °F."""
    return float(round_half_up(truth.temp_f(station, t)))


def ensemble_hourly(truth: WeatherTruth, station: Station, hours: list[datetime], models: list[str], now: datetime,
                    unit: str = "°F", conv: Callable[[np.ndarray], np.ndarray] = lambda f: np.round(f, 1)
                    ) -> tuple[dict[str, list[Any]], dict[str, str]]:
    """The `hourly` and `hourly_units` of an ensemble answer at `now`: the newest run's members (A2 keys)."""
    hourly: dict[str, list[Any]] = {"time": [t.strftime("%Y-%m-%dT%H:%M") for t in hours]}
    units: dict[str, str] = {"time": "iso8601"}
    weather = truth.station(station.icao)
    run = weather.latest_run(now)
    epoch_h = _epoch_hours(hours)
    for model in models:
        values = conv(weather.members_f(run, model, epoch_h))
        for k in range(values.shape[0]):
            key = "temperature_2m" + (f"_member{k:02d}" if k else "")
            if len(models) > 1:
                key += f"_{model}"  # several models: every key gets the canonical model suffix (A2)
            hourly[key] = values[k].tolist()
            units[key] = unit
    return hourly, units


class WeatherFake:
    """The HTTP server: `/v1/ensemble`, `/v1/forecast`, `/stations/{icao}/observations`."""

    def __init__(self, truth: WeatherTruth, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 stations: tuple[Station, ...] = STATIONS) -> None:
        self.truth = truth
        self.clock = clock
        self.stations = stations
        self.requests: list[str] = []
        self._fail: list[int] = []
        self._garbage = 0
        self._runner: web.AppRunner | None = None
        self.port = 0
        app = web.Application(middlewares=[self._faults])
        app.router.add_get("/v1/ensemble", self._ensemble)
        app.router.add_get("/v1/forecast", self._forecast)
        app.router.add_get("/stations/{icao}/observations", self._observations)
        app.router.add_get("/products/types/CLI/locations/{loc}", self._cli_list)
        app.router.add_get("/products/types/CLI/locations/{loc}/latest", self._cli_latest)
        app.router.add_get("/products/{pid}", self._cli_product)
        self.app = app

    @property
    def url(self) -> str:
        """Root URL."""
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """Answer the next `n` requests with `status`."""
        self._fail.extend([status] * n)

    def garbage_next(self, n: int = 1) -> None:
        """Answer the next `n` requests with malformed JSON."""
        self._garbage += n

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> WeatherFake:
        """Listen (0 = a free port)."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _faults(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        if self._fail:
            status = self._fail.pop(0)
            return web.json_response({"error": True, "reason": "injected failure"}, status=status)
        if self._garbage:
            self._garbage -= 1
            return web.Response(text='{"hourly": {"time": [', content_type="application/json")
        return await handler(request)

    def _station_at(self, request: web.Request) -> Station:
        try:
            lat, lon = float(request.query["latitude"]), float(request.query["longitude"])
        except (KeyError, ValueError):
            raise web.HTTPBadRequest(text='{"error": true, "reason": "latitude and longitude are required"}',
                                     content_type="application/json") from None
        return min(self.stations, key=lambda s: (s.lat - lat) ** 2 + (s.lon - lon) ** 2)

    def _hours(self, request: web.Request) -> list[datetime]:
        if request.query.get("timezone", "GMT") not in ("GMT", "UTC"):
            raise web.HTTPBadRequest(text='{"error": true, "reason": "this fake serves timezone=GMT only"}',
                                     content_type="application/json")
        try:
            days = int(request.query.get("forecast_days", "7"))
            past = int(request.query.get("past_days", "0"))
        except ValueError:
            raise web.HTTPBadRequest(text='{"error": true, "reason": "forecast_days and past_days are integers"}',
                                     content_type="application/json") from None
        # Open-Meteo's hourly series starts at 00:00 GMT of the current day, minus `past_days` days.
        start = self.clock().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=past)
        return [start + timedelta(hours=i) for i in range(24 * (days + past))]

    def _unit(self, request: web.Request) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
        if request.query.get("temperature_unit", "celsius") == "fahrenheit":
            return "°F", lambda f: np.round(f, 1)
        return "°C", lambda f: np.round((f - 32) * 5 / 9, 1)

    async def _ensemble(self, request: web.Request) -> web.Response:
        station = self._station_at(request)
        hours = self._hours(request)
        unit, conv = self._unit(request)
        asked = [m.strip() for m in request.query.get("models", "ncep_gefs025").split(",") if m.strip()]
        models = [ALIASES.get(m, m) for m in asked]
        unknown = [m for m in models if m not in MODELS]
        if unknown:
            return web.json_response({"error": True, "reason": f"Invalid model {unknown[0]}"}, status=400)
        hourly, units = ensemble_hourly(self.truth, station, hours, models, self.clock(), unit, conv)
        return web.json_response(self._envelope(station, units, hourly))

    async def _forecast(self, request: web.Request) -> web.Response:
        station = self._station_at(request)
        hours = self._hours(request)
        unit, conv = self._unit(request)
        # The deterministic run: the newest run's expected error decaying from what it assimilated.
        weather = self.truth.station(station.icao)
        run = weather.latest_run(self.clock())
        tau = int(run.timestamp()) // 3600
        epoch_h = _epoch_hours(hours)
        eps0 = weather.eps_at_hour(tau)
        lead = np.maximum(epoch_h - tau, 0)
        values = weather.centre_f(epoch_h.astype(float)) + np.where(
            epoch_h <= tau, [weather.eps_at_hour(int(h)) if h <= tau else 0.0 for h in epoch_h],
            eps0 * np.exp(-lead / ERROR_TIMESCALE_H))
        hourly = {"time": [t.strftime("%Y-%m-%dT%H:%M") for t in hours],
                  "temperature_2m": conv(values).tolist()}
        return web.json_response(self._envelope(station, {"time": "iso8601", "temperature_2m": unit}, hourly))

    @staticmethod
    def _envelope(station: Station, units: dict[str, str], hourly: dict[str, list[Any]]) -> dict[str, Any]:
        return {"latitude": round(station.lat, 2), "longitude": round(station.lon, 2), "generationtime_ms": 0.5,
                "utc_offset_seconds": 0, "timezone": "GMT", "timezone_abbreviation": "GMT", "elevation": 10.0,
                "hourly_units": units, "hourly": hourly}

    async def _observations(self, request: web.Request) -> web.Response:
        if not request.headers.get("User-Agent"):
            # api.weather.gov refuses requests without a User-Agent (B1).
            return web.json_response({"title": "Forbidden", "status": 403, "detail": "A User-Agent is required"},
                                     status=403)
        icao = request.match_info["icao"].upper()
        station = next((s for s in self.stations if s.icao == icao), None)
        if station is None:
            return web.json_response({"title": "Not Found", "status": 404}, status=404)
        now = self.clock().astimezone(UTC)
        start = datetime.fromisoformat(request.query["start"]) if "start" in request.query else now - timedelta(days=1)
        limit = int(request.query.get("limit", "500"))
        # Hourly METARs at :51, newest first, as api.weather.gov lists them.
        t = now.replace(minute=51, second=0, microsecond=0)
        if t > now:
            t -= timedelta(hours=1)
        features = []
        while t >= start and len(features) < limit:
            c = round((observed_f(self.truth, station, t) - 32) * 5 / 9, 1)
            features.append({"id": f"https://api.weather.gov/stations/{icao}/observations/{t.isoformat()}",
                             "type": "Feature", "properties": {
                                 "stationId": icao, "timestamp": t.isoformat(), "rawMessage": f"METAR {icao} ...",
                                 "temperature": {"unitCode": "wmoUnit:degC", "value": c, "qualityControl": "V"},
                                 "maxTemperatureLast24Hours": {"unitCode": "wmoUnit:degC", "value": None,
                                                               "qualityControl": "Z"}}})
            t -= timedelta(hours=1)
        return web.json_response({"type": "FeatureCollection", "features": features},
                                 content_type="application/geo+json")

    # -- NWS Daily Climate Reports (B1–B3): one final report per past climate day, issued ~01:30 LST ----------

    def _cli_days(self, loc: str) -> tuple[Station, list[tuple[date, datetime]]]:
        station = next((s for s in self.stations if s.cli == loc.upper()), None)
        if station is None:
            raise web.HTTPNotFound(text='{"title": "Not Found", "status": 404}', content_type="application/json")
        now = self.clock().astimezone(UTC)
        today = climate_day(now, station.tz)
        out = []
        for back in range(1, 4):
            day = today - timedelta(days=back)
            issued = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC) \
                - standard_offset(station.tz, day) + timedelta(hours=1, minutes=30)
            if issued <= now:
                out.append((day, issued))
        return station, out

    def _stub(self, station: Station, day: date, issued: datetime) -> dict[str, Any]:
        pid = f"CLI{station.cli}-{day:%Y%m%d}"
        return {"@id": f"{self.url}/products/{pid}", "id": pid, "wmoCollectiveId": "CDUS41",
                "issuingOffice": "KOKX", "issuanceTime": issued.isoformat(), "productCode": "CLI",
                "productName": "Climatological Report (Daily)"}

    def cli_text(self, station: Station, day: date, issued: datetime) -> str:
        """A final CLI bulletin in the B2 layout for `day`."""
        mx = self.truth.day_max(station.icao, day)
        local = issued + standard_offset(station.tz, day)
        text = (f"CDUS41 KOKX {issued:%d%H%M}\nCLI{station.cli}\n\nCLIMATE REPORT\nNATIONAL WEATHER SERVICE\n"
                f"{local:%I%M %p} LST {local:%a %b %d %Y}\n\n"
                f"...THE {station.city.upper()} CLIMATE SUMMARY FOR {day:%B} {day.day} {day.year}...\n\n"
                "WEATHER ITEM   OBSERVED TIME   RECORD YEAR NORMAL DEPARTURE LAST\n"
                "                VALUE   (LST)  VALUE       VALUE  FROM      YEAR\n"
                "                                                  NORMAL\n"
                "...................................................................\n"
                "TEMPERATURE (F)\n YESTERDAY\n"
                f"  MAXIMUM         {mx:>3}    259 PM  75    1931  50     {mx - 50:>3}       52\n"
                f"  MINIMUM         {mx - 15:>3}    545 AM  12    1933  38     {mx - 53:>3}       40\n"
                f"  AVERAGE         {mx - 8:>3}                          44     {mx - 52:>3}       46\n")
        return text.upper()  # bulletins are upper case

    async def _cli_list(self, request: web.Request) -> web.Response:
        station, days = self._cli_days(request.match_info["loc"])
        graph = [self._stub(station, d, i) for d, i in days]
        return web.json_response({"@context": {"@version": "1.1"}, "@graph": graph},
                                 content_type="application/ld+json")

    async def _cli_latest(self, request: web.Request) -> web.Response:
        station, days = self._cli_days(request.match_info["loc"])
        if not days:
            raise web.HTTPNotFound(text='{"title": "Not Found", "status": 404}', content_type="application/json")
        day, issued = days[0]
        return web.json_response({**self._stub(station, day, issued), "productText": self.cli_text(station, day,
                                                                                                    issued)},
                                 content_type="application/ld+json")

    async def _cli_product(self, request: web.Request) -> web.Response:
        pid = request.match_info["pid"]
        for station in self.stations:
            prefix = f"CLI{station.cli}-"
            if pid.startswith(prefix):
                _, days = self._cli_days(station.cli)
                for day, issued in days:
                    if pid == f"{prefix}{day:%Y%m%d}":
                        return web.json_response({**self._stub(station, day, issued),
                                                  "productText": self.cli_text(station, day, issued)},
                                                 content_type="application/ld+json")
        raise web.HTTPNotFound(text='{"title": "Not Found", "status": 404}', content_type="application/json")
