"""Fetch the NWS Daily Climate Reports of the stations the desk trades and keep every issuance.

api.weather.gov (data_sources.md §B1): `GET /products/types/CLI/locations/{LOC}` lists issuances
(newest first, a few days back); `GET /products/{id}` has the text. Both need a User-Agent. Each new
product is parsed (climate_report.py) and stored; one that does not parse is stored with its reason
and alerted once (the product id makes it once), never guessed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from libs.common.logs import get_logger
from libs.common.stations import Station
from services.resolver.climate_report import ReportError, parse
from services.resolver.store import ResolverStore

log = get_logger(__name__)

OnReport = Callable[[Station, dict[str, Any]], Awaitable[None]]  # a new parsed (or unparsed) issuance


@dataclass(slots=True)
class ClimateReports:
    """Polls the CLI products of `stations` into `climate_reports` (source `nws-cli`)."""

    http: httpx.AsyncClient  # base_url = the NWS API root (the simulator's fake in sim), User-Agent set
    store: ResolverStore
    stations: Sequence[Station]
    on_report: OnReport
    source: str = "nws-cli"

    async def poll(self) -> int:
        """One pass over every station; the number of new issuances stored."""
        n = 0
        for st in self.stations:
            n += await self._station(st)
        return n

    async def _station(self, st: Station) -> int:
        resp = await self.http.get(f"/products/types/CLI/locations/{st.cli}",
                                   headers={"Accept": "application/ld+json"})
        resp.raise_for_status()
        stubs = resp.json().get("@graph") or []
        known = await self.store.known_products(self.source, st.icao)
        n = 0
        for stub in stubs:
            pid = stub.get("id")
            if not pid or pid in known:
                continue
            prod = await self.http.get(f"/products/{pid}", headers={"Accept": "application/ld+json"})
            prod.raise_for_status()
            body = prod.json()
            row = _row(st, self.source, pid, body)
            rid = await self.store.store_report(row)
            if rid is None:
                continue  # another resolver stored it first
            n += 1
            row["id"] = rid
            if row["parse_error"]:
                log.warning("climate_report_unparsed", station=st.icao, product_id=pid, reason=row["parse_error"])
            await self.on_report(st, row)
        return n


def _issued(stamped: Any) -> datetime | None:
    """The product's issuance time; None when it is missing, not ISO 8601 or has no UTC offset (never guessed)."""
    if not isinstance(stamped, str) or not stamped:
        return None
    try:
        issued = datetime.fromisoformat(stamped)
    except ValueError:
        return None
    return issued if issued.tzinfo is not None else None


def _row(st: Station, source: str, pid: str, body: dict[str, Any]) -> dict[str, Any]:
    # Never raises: a product that cannot be read is stored with its reason, so it cannot block the next ones.
    body = body if isinstance(body, dict) else {}
    text = body.get("productText")
    text = text if isinstance(text, str) else ""
    issued = _issued(body.get("issuanceTime"))
    row: dict[str, Any] = {"source": source, "station": st.icao, "cli_code": f"CLI{st.cli}", "product_id": pid,
                           "issued_at": issued or datetime.now(UTC), "raw_text": text, "climate_date": None,
                           "kind": None, "max_temp_f": None, "min_temp_f": None, "parse_error": None}
    try:
        r = parse(text)
    except ReportError as e:
        row["parse_error"] = str(e)
        return row
    if issued is None:
        row["parse_error"] = "the product has no readable issuanceTime (stored with the time it was read)"
        return row
    row.update(climate_date=r.climate_date, kind=r.kind, max_temp_f=r.max_temp_f, min_temp_f=r.min_temp_f)
    return row


__all__ = ["ClimateReports"]
