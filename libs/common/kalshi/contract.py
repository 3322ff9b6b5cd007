"""The Kalshi contract tripwire: does the API still speak the shapes the desk reads?

Every Kalshi project in the peer survey broke on an API change in 2026, some silently (a deprecated
endpoint answering 2xx without an order). The desk's client models are lenient on purpose, so a
changed format could pass them and be misread (a price in cents read as dollars). This check reads
raw JSON and holds it to what the desk depends on (kalshi_api.md §3–§6):
- `GET /exchange/status`: `exchange_active` / `trading_active` are booleans;
- a market (`GET /markets` or `/markets/{ticker}`): dollar strings with 4 decimals between $0 and $1,
  fixed-point counts with 2 decimals, RFC3339 times, the status and result enums, a `price_ranges`
  grid that tiles $0–$1, `settlement_bounds_type` (the desk prices binary payouts only: a `floor`
  market is reported);
- its series (through its event): `fee_type` one the desk's fee math covers and a numeric
  `fee_multiplier`; the series' scheduled fee changes likewise;
- the V2 order path: cancelling an order that does not exist must be refused with Kalshi's error
  shape — a 2xx there means the endpoint no longer does what we think.
It also fingerprints the fee schedule it saw, so a change between two checks can be reported.

Pure checks (`check_market`, `check_series`, ...) take dicts and return problems; `check_contract`
does the I/O. The executor runs it at start and every few hours and pauses on any problem.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from libs.common.kalshi import errors as E
from libs.common.kalshi.rest import KalshiRest
from libs.common.money import MoneyError, PriceGrid

# The fee types the desk's fee math (libs/common/money.py) prices; "flat" is documented but its table
# is not published (kalshi_api.md §6.1), so a series using it cannot be priced.
PRICED_FEE_TYPES = ("quadratic", "quadratic_with_maker_fees", "quadratic_with_combo_maker_fees")
DOCUMENTED_FEE_TYPES = (*PRICED_FEE_TYPES, "flat")
MARKET_STATUSES = ("initialized", "inactive", "active", "closed", "determined", "disputed", "amended", "finalized")
RESULTS = ("yes", "no", "scalar", "")
PRICE_FIELDS = ("yes_bid_dollars", "yes_ask_dollars", "no_bid_dollars", "no_ask_dollars", "last_price_dollars")
COUNT_FIELDS = ("yes_bid_size_fp", "yes_ask_size_fp", "volume_fp", "open_interest_fp")
TIME_FIELDS = ("open_time", "close_time")

_PRICE = re.compile(r"^\d+\.\d{4}$")
_COUNT = re.compile(r"^\d+\.\d{2}$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _price_problem(name: str, v: Any) -> str | None:
    if not isinstance(v, str) or not _PRICE.match(v):
        return f"{name} is {v!r}, expected a dollar string with 4 decimals like \"0.4200\""
    if not Decimal(0) <= Decimal(v) <= Decimal(1):
        return f"{name} is {v!r}, outside $0–$1 (cents instead of dollars?)"
    return None


def check_status(d: Any) -> list[str]:
    """Problems with a `GET /exchange/status` body."""
    if not isinstance(d, dict):
        return [f"exchange status is {type(d).__name__}, expected an object"]
    return [f"exchange status {k} is {d.get(k)!r}, expected true/false"
            for k in ("exchange_active", "trading_active") if not isinstance(d.get(k), bool)]


def check_market(d: Any) -> list[str]:
    """Problems with a Market object, as far as the desk reads it."""
    if not isinstance(d, dict):
        return [f"market is {type(d).__name__}, expected an object"]
    where = f"market {d.get('ticker')!r}"
    out = [f"{where}: {k} is {d.get(k)!r}, expected a string"
           for k in ("ticker", "event_ticker") if not isinstance(d.get(k), str) or not d.get(k)]
    if d.get("status") not in MARKET_STATUSES:
        out.append(f"{where}: status is {d.get('status')!r}, not one of {', '.join(MARKET_STATUSES)}")
    if d.get("result") not in RESULTS:
        out.append(f"{where}: result is {d.get('result')!r}, not one of yes/no/scalar/\"\"")
    for k in PRICE_FIELDS:
        p = _price_problem(k, d.get(k))
        if p:
            out.append(f"{where}: {p}")
    for k in COUNT_FIELDS:
        v = d.get(k)
        if not isinstance(v, str) or not _COUNT.match(v):
            out.append(f"{where}: {k} is {v!r}, expected a fixed-point count with 2 decimals like \"10.00\"")
    for k in TIME_FIELDS:
        v = d.get(k)
        if not isinstance(v, str) or not _RFC3339.match(v):
            out.append(f"{where}: {k} is {v!r}, expected an RFC3339 time")
    for k in ("floor_strike", "cap_strike"):
        if d.get(k) is not None and not _is_number(d.get(k)):
            out.append(f"{where}: {k} is {d.get(k)!r}, expected a number or null")
    bounds = d.get("settlement_bounds_type")
    if bounds not in ("default", "floor"):
        out.append(f"{where}: settlement_bounds_type is {bounds!r}, expected \"default\" or \"floor\"")
    elif bounds == "floor":
        out.append(f"{where}: settlement_bounds_type is \"floor\" (a settlement floor changes the payout the desk "
                   f"prices; floor {d.get('settlement_floor_dollars')!r})")
    out.extend(f"{where}: {p}" for p in check_price_ranges(d.get("price_ranges")))
    return out


def check_price_ranges(ranges: Any) -> list[str]:
    """Problems with a `price_ranges` list: dollar-string bands that tile $0–$1 (the desk's tick grid)."""
    if not isinstance(ranges, list) or not ranges:
        return [f"price_ranges is {ranges!r}, expected a non-empty list of {{start, end, step}}"]
    out = []
    for r in ranges:
        if not isinstance(r, dict):
            return [f"price_ranges entry {r!r} is not an object"]
        for k in ("start", "end", "step"):
            p = _price_problem(f"price_ranges {k}", r.get(k))
            if p:
                out.append(p)
    if out:
        return out
    try:
        PriceGrid.from_api(ranges)
    except (MoneyError, ValueError, InvalidOperation) as e:
        return [f"price_ranges {ranges!r} is not a grid the desk can use: {e}"]
    if Decimal(ranges[0]["start"]) != 0 or Decimal(ranges[-1]["end"]) != 1:
        return [f"price_ranges cover {ranges[0]['start']}–{ranges[-1]['end']}, not $0–$1"]
    return []


def check_series(d: Any) -> list[str]:
    """Problems with a Series object's fee terms."""
    if not isinstance(d, dict):
        return [f"series is {type(d).__name__}, expected an object"]
    where = f"series {d.get('ticker')!r}"
    out = []
    fee_type = d.get("fee_type")
    if fee_type not in DOCUMENTED_FEE_TYPES:
        out.append(f"{where}: fee_type is {fee_type!r}, not one of {', '.join(DOCUMENTED_FEE_TYPES)}")
    elif fee_type not in PRICED_FEE_TYPES:
        out.append(f"{where}: fee_type {fee_type!r} is documented but the desk's fee math does not price it")
    mult = d.get("fee_multiplier")
    if not _is_number(mult) or mult < 0:
        out.append(f"{where}: fee_multiplier is {mult!r}, expected a number >= 0")
    return out


def check_fee_changes(d: Any) -> list[str]:
    """Problems with a `GET /series/fee_changes` body."""
    items = d.get("series_fee_change_arr") if isinstance(d, dict) else None
    if not isinstance(items, list):
        return [f"series fee changes: series_fee_change_arr is {items!r}, expected a list"]
    out = []
    for c in items:
        if not isinstance(c, dict) or c.get("fee_type") not in DOCUMENTED_FEE_TYPES or not _is_number(
                c.get("fee_multiplier")):
            out.append(f"series fee change {c!r}: expected a documented fee_type and a numeric fee_multiplier")
    return out


def fee_fingerprint(series: dict[str, Any], changes: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A stable hash of the fee schedule seen (series fee terms + scheduled changes), and what it hashes."""
    schedule = {
        "series": series.get("ticker"), "fee_type": series.get("fee_type"),
        "fee_multiplier": str(series.get("fee_multiplier")),
        "scheduled": sorted(
            (str(c.get("scheduled_ts")), str(c.get("fee_type")), str(c.get("fee_multiplier")))
            for c in (changes.get("series_fee_change_arr") or []) if isinstance(c, dict)),
    }
    digest = hashlib.sha256(json.dumps(schedule, sort_keys=True).encode()).hexdigest()[:16]
    return digest, schedule


@dataclass(frozen=True)
class ContractReport:
    """What one contract check saw."""

    checked_at: datetime
    problems: tuple[str, ...]
    market: str | None = None
    series: str | None = None
    fee_fingerprint: str | None = None
    fee_schedule: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the API matched the contract."""
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """Plain data for `status`."""
        return {"ok": self.ok, "checked_at": self.checked_at.isoformat(), "problems": list(self.problems),
                "market": self.market, "series": self.series, "fee_fingerprint": self.fee_fingerprint,
                "fee_schedule": self.fee_schedule}


async def check_contract(rest: KalshiRest, now: datetime, *, market_ticker: str | None = None) -> ContractReport:
    """Fetch the exchange status, one market (an open one unless `market_ticker`), its series and fee
    changes, and probe the V2 cancel; report every mismatch. Network errors propagate (no verdict);
    an answer that is not a JSON object is a mismatch."""
    problems: list[str] = []

    async def get(path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            return await rest.get_json(path, params=params)
        except E.MalformedResponse as e:
            problems.append(str(e))
            return {}

    problems += check_status(await get("/exchange/status"))
    if market_ticker:
        market = (await get(f"/markets/{market_ticker}")).get("market")
    else:
        listed = await get("/markets", params={"status": "open", "limit": 5, "mve_filter": "exclude"})
        markets = listed.get("markets")
        if not isinstance(markets, list):
            problems.append(f"GET /markets: markets is {markets!r}, expected a list")
            markets = []
        market = markets[0] if markets else None
    series: dict[str, Any] = {}
    fingerprint, schedule = None, {}
    if market is None:
        problems.append("no open market to check the contract against")
    else:
        problems += check_market(market)
        event_ticker = market.get("event_ticker") if isinstance(market, dict) else None
        if isinstance(event_ticker, str) and event_ticker:
            event = (await get(f"/events/{event_ticker}")).get("event") or {}
            series_ticker = event.get("series_ticker")
            if isinstance(series_ticker, str) and series_ticker:
                series = (await get(f"/series/{series_ticker}")).get("series") or {}
                problems += check_series(series)
                changes = await get("/series/fee_changes", params={"series_ticker": series_ticker})
                problems += check_fee_changes(changes)
                fingerprint, schedule = fee_fingerprint(series, changes)
            else:
                problems.append(f"event {event_ticker!r}: series_ticker is {series_ticker!r}, expected a string")
    problems += await _probe_v2_cancel(rest)
    return ContractReport(checked_at=now, problems=tuple(problems),
                          market=market.get("ticker") if isinstance(market, dict) else None,
                          series=series.get("ticker"), fee_fingerprint=fingerprint, fee_schedule=schedule)


async def _probe_v2_cancel(rest: KalshiRest) -> list[str]:
    """Cancel an order id nobody has: harmless, and it must be refused with Kalshi's error shape."""
    ghost = str(uuid.uuid4())
    try:
        answer = await rest.cancel_order(ghost, exchange_index=0)  # asked of the default shard, on purpose
    except E.NotFound:
        return []
    except E.AuthError:
        raise  # a credentials problem, reported as such by the caller, not a contract verdict
    except (E.OrderRejected, E.KalshiError) as e:
        if e.status is not None and 400 <= e.status < 500 and not isinstance(e, E.MalformedResponse) and e.code:
            return []
        if isinstance(e, E.ServerError | E.TransportError | E.RateLimited):
            raise
        return [f"V2 cancel of a non-existent order answered {e} (expected a 4xx with an error code)"]
    return [f"V2 cancel of a non-existent order {ghost} answered 2xx ({answer!r}): the V2 order endpoint does not "
            "behave as documented"]


__all__ = ["ContractReport", "check_contract", "check_fee_changes", "check_market", "check_price_ranges",
           "check_series", "check_status", "fee_fingerprint"]
