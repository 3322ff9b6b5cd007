"""What must hold after the campaign, each counted from the exchange's own records and the ledger (all must be 0).

Pure functions of plain data: the exchange's records of the desk's account (benchmarks/chaos/simhost.py
`/records`) and rows read from PostgreSQL. Money is in ticks ($0.0001), counts in 1/100 contract.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from libs.common.families import family_of
from libs.common.money import ONE_CONTRACT, ONE_DOLLAR
from services.executor.exposure import Holding, Strike, event_exposure

Row = Mapping[str, Any]


def _t(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s) if s else None


def leg_cost(book_side: str, yes_price: int, count: int) -> int:
    """What `count` contracts cost on the leg an order buys (bid: YES at the price, ask: NO at $1 - price)."""
    leg = yes_price if book_side == "bid" else ONE_DOLLAR - yes_price
    return -(-count * leg // ONE_CONTRACT)


def duplicate_orders(exchange_orders: Sequence[Row], ledger_orders: Sequence[Row], now: datetime) -> dict[str, Any]:
    """Orders on the exchange for one client_order_id (more than one), and for one intent (signal id + leg) at the
    same time; and orders on the exchange the ledger has no row for."""
    by_coid: dict[str, list[Row]] = defaultdict(list)
    for o in exchange_orders:
        if o.get("client_order_id"):
            by_coid[o["client_order_id"]].append(o)
    same_coid = sum(len(v) - 1 for v in by_coid.values() if len(v) > 1)
    ledger = {r["client_order_id"]: r for r in ledger_orders}
    unknown = [o["order_id"] for o in exchange_orders if o.get("client_order_id") not in ledger]
    by_intent: dict[tuple[str, str], list[tuple[datetime, datetime]]] = defaultdict(list)
    for coid, orders in by_coid.items():
        row = ledger.get(coid)
        if row is None or not row.get("signal_id"):
            continue
        for o in orders:
            start = _t(o["created_time"]) or now
            end = now if o["status"] == "resting" else (_t(o["last_update_time"]) or now)
            by_intent[(row["signal_id"], row.get("leg") or "")].append((start, end))
    overlapping = 0
    for spans in by_intent.values():
        spans.sort()
        for (_, a_end), (b_start, _) in itertools.pairwise(spans):
            if b_start < a_end:
                overlapping += 1
    return {"duplicate_orders": same_coid + overlapping, "unknown_orders": len(unknown),
            "unknown_order_ids": unknown[:10]}


def fill_key(trade_id: str, order_id: str) -> str:
    """One side of one execution: the trade (Kalshi's fill_id) and our order in it (the ledger's fill key)."""
    return f"{trade_id}:{order_id}"


def lost_fills(exchange_fills: Sequence[Row], ledger_fill_keys: Iterable[str]) -> dict[str, Any]:
    """Fills the exchange has that the ledger lacks, and fills the ledger has that the exchange never made
    (both keyed by `fill_key`)."""
    have = set(ledger_fill_keys)
    ex = {fill_key(f["trade_id"], f["order_id"]) for f in exchange_fills}
    lost = sorted(ex - have)
    phantom = sorted(have - ex)
    return {"lost_fills": len(lost), "lost_fill_ids": lost[:10], "phantom_fills": len(phantom),
            "phantom_fill_ids": phantom[:10]}


def ledger_diffs(exchange_positions: Sequence[Row], ledger_positions: Mapping[str, int],
                 markets: Mapping[str, Row]) -> dict[str, Any]:
    """Markets (not yet settled) where the ledger's position differs from the exchange's."""
    ex = {p["ticker"]: p["position"] for p in exchange_positions}
    diffs = {}
    for t in set(ex) | set(ledger_positions):
        if (markets.get(t) or {}).get("status") == "finalized":
            continue
        a, b = ledger_positions.get(t, 0), ex.get(t, 0)
        if a != b:
            diffs[t] = {"ledger": a, "exchange": b}
    return {"ledger_diffs": len(diffs), "ledger_diff_detail": dict(list(diffs.items())[:10])}


def _strike(m: Row | None) -> Strike | None:
    if not m or not m.get("strike_type"):
        return None
    floor = Decimal(m["floor_strike"]) if m.get("floor_strike") is not None else None
    cap = Decimal(m["cap_strike"]) if m.get("cap_strike") is not None else None
    return Strike(m["strike_type"], floor, cap)


def cap_breaches(records: Row, caps: Mapping[str, int]) -> dict[str, Any]:
    """Caps exceeded as seen from the exchange: each order's cost (not reduce-only) against the per-order cap, and
    after every fill the holdings' worst-case loss per market, per event (netted across its strikes), per family
    and for the portfolio against those caps. Settled markets leave the holdings when they settle."""
    markets: Mapping[str, Row] = records["markets"]
    breaches: dict[str, int] = defaultdict(int)
    peaks: dict[str, int] = defaultdict(int)
    worst_seen: dict[str, Any] = {}
    spent: dict[str, int] = defaultdict(int)
    for f in records["fills"]:
        spent[f["order_id"]] += leg_cost("bid" if f["outcome_side"] == "yes" else "ask", f["yes_price"], f["count"])
    for o in records["orders"]:
        if o.get("reduce_only"):
            continue
        # What the order paid for its fills plus what its rest still commits at its (last) limit. The exchange keeps
        # only an order's last state, so an amend's momentary commitment is not seen here.
        rest = o["remaining_count"] if o["status"] == "resting" else 0
        cost = spent[o["order_id"]] + leg_cost(o["book_side"], o["price"], rest)
        peaks["order"] = max(peaks["order"], cost)
        if cost > caps["order"]:
            breaches["order"] += 1
            worst_seen.setdefault("order", o["order_id"])
    timeline: list[tuple[datetime, int, Row]] = [(_t(f["created_time"]), 1, f) for f in records["fills"]]  # type: ignore[misc]
    timeline += [(_t(s["settled_time"]), 0, s) for s in records["settlements"]]  # type: ignore[misc]
    timeline.sort(key=lambda x: (x[0], x[1]))
    holdings: dict[str, Holding] = {}
    for _, kind, item in timeline:
        t = item["ticker"]
        if kind == 0:
            holdings.pop(t, None)
            continue
        h = holdings.setdefault(t, Holding())
        if item["outcome_side"] == "yes":
            h.yes += item["count"]
        else:
            h.no += item["count"]
        h.cost += leg_cost("bid" if item["outcome_side"] == "yes" else "ask", item["yes_price"], item["count"])
        by_event: dict[str, dict[str, Holding]] = defaultdict(dict)
        for tk, hh in holdings.items():
            by_event[(markets.get(tk) or {}).get("event_ticker") or tk][tk] = hh
        market = h.worst()
        ev_key = (markets.get(t) or {}).get("event_ticker") or t
        events = {e: event_exposure(hs, {tk: _strike(markets.get(tk)) for tk in hs}) for e, hs in by_event.items()}
        fams: dict[str, int] = defaultdict(int)
        for e, hs in by_event.items():
            series = (markets.get(next(iter(hs))) or {}).get("series_ticker") or ""
            fams[family_of(series) or "?"] += events[e]
        fam = family_of((markets.get(t) or {}).get("series_ticker") or "") or "?"
        for scope, value in (("market", market), ("event", events[ev_key]), ("family", fams[fam]),
                             ("portfolio", sum(events.values()))):
            peaks[scope] = max(peaks[scope], value)
            if value > caps[scope]:
                breaches[scope] += 1
                worst_seen.setdefault(scope, {"ticker": t, "value_ticks": value, "at": item["created_time"]})
    return {"cap_breaches": sum(breaches.values()), "cap_breaches_by_scope": dict(breaches),
            "cap_peaks_ticks": dict(peaks), "caps_ticks": dict(caps), "cap_breach_first": worst_seen}


def double_decisions(ledger_orders: Sequence[Row]) -> dict[str, Any]:
    """Signals decided twice: more than one order row that is not `blocked` for one signal id and leg."""
    n: dict[tuple[str, str], int] = defaultdict(int)
    for r in ledger_orders:
        if r.get("signal_id") and r["status"] != "blocked":
            n[(r["signal_id"], r.get("leg") or "")] += 1
    doubled = [k for k, v in n.items() if v > 1]
    return {"double_decisions": len(doubled), "double_decision_ids": [f"{s}/{leg}" for s, leg in doubled[:10]]}


# -- secrets ------------------------------------------------------------------------------------------------------

# A base64 RSA-2048 signature (256 bytes → 344 characters) or a signature header with a value.
SIGNATURE_RES = (re.compile(r"KALSHI-ACCESS-SIGNATURE['\"]?\s*[:=]\s*['\"]?[A-Za-z0-9+/]{20,}", re.I),
                 re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{342,343}={0,2}(?![A-Za-z0-9+/])"))


def pem_needles(pem: str) -> list[str]:
    """Distinctive pieces of a private key's PEM body: every full base64 line (64 characters)."""
    lines = [ln.strip() for ln in pem.splitlines() if ln.strip() and not ln.startswith("-----")]
    return [ln for ln in lines if len(ln) >= 40]


def scan_text(text: str, needles: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """How many times each kind of secret appears in `text` (a log line, a stored value)."""
    found: dict[str, int] = {}
    for kind, values in needles.items():
        n = sum(text.count(v) for v in values if v)
        if n:
            found[kind] = n
    n = sum(len(r.findall(text)) for r in SIGNATURE_RES)
    if n:
        found["signature"] = n
    return found
