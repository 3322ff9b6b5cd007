"""JSON shapes of the simulated exchange: engine and catalog objects as Kalshi's API writes them.

Field names and types follow kalshi_api.md §3–§4 (Aug–Oct 2026): prices are `*_dollars` strings
with 4 decimals (`"0.4200"`), counts are `*_fp` strings with 2 decimals (`"10.00"`), object times
are RFC3339, a few legacy fields stay integer cents (`balance`, `portfolio_value`, settlement
`revenue`/`value`). Pure functions only: the server decides what to show, this decides how.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from libs.common.matching import frames
from libs.common.matching.frames import rfc3339, ts_ms, user_uuid
from libs.common.matching.types import (
    BookDelta,
    Fill,
    MarketSpec,
    Order,
    Position,
    Settlement,
    Trade,
)
from libs.common.money import ONE_DOLLAR, format_count, format_dollars
from services.sim.catalog import EventInfo, MarketInfo, SeriesInfo

Json = dict[str, Any]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_MARKET_NS = uuid.UUID("6b5f4f8e-2c1a-4c47-9a57-6b2b3c0e4d11")


# -- scalars ------------------------------------------------------------------------------------

def unix_s(dt: datetime) -> int:
    """Unix seconds, truncated."""
    return (dt - _EPOCH) // timedelta(seconds=1)


def dollars(ticks: int) -> str:
    """$0.0001 ticks as a 4-decimal dollar string."""
    return format_dollars(ticks)


def count(c: int) -> str:
    """1/100 contracts as a 2-decimal count string."""
    return format_count(c)


def dollars_ratio(num: int, den: int) -> str:
    """`num / den` ticks as a dollar string: 4 decimals when exact, else rounded to 6 (portfolio fields)."""
    q = Decimal(num) / Decimal(den) / ONE_DOLLAR
    exact4 = q.quantize(Decimal("0.0001"))
    if exact4 == q:
        return f"{exact4:.4f}"
    return f"{q.quantize(Decimal('0.000001'), rounding=ROUND_HALF_EVEN):.6f}"


def number(d: Decimal | None) -> int | float | None:
    """A strike or multiplier as a JSON number (an int when whole)."""
    if d is None:
        return None
    return int(d) if d == d.to_integral_value() else float(d)


def market_id(ticker: str) -> str:
    """A stable UUID for a market (Kalshi's `market_id`), derived from its ticker."""
    return str(uuid.uuid5(_MARKET_NS, ticker))


def cents(ticks: int) -> int:
    """Ticks as integer cents, truncated toward zero (Kalshi's legacy `balance`)."""
    return -(-ticks // 100) if ticks < 0 else ticks // 100


# -- market data --------------------------------------------------------------------------------

@dataclass
class Top:
    """Best bids of both sides: YES bids at YES prices, NO bids at NO prices (0 = no bid)."""

    yes_bid: int = 0
    yes_bid_size: int = 0
    no_bid: int = 0
    no_bid_size: int = 0

    @classmethod
    def of(cls, yes: list[tuple[int, int]], no: list[tuple[int, int]]) -> Top:
        """From ascending (price, count) levels, best last."""
        t = cls()
        if yes:
            t.yes_bid, t.yes_bid_size = yes[-1]
        if no:
            t.no_bid, t.no_bid_size = no[-1]
        return t

    @property
    def yes_ask(self) -> int:
        """Best YES ask = 1 − best NO bid; $1 when nobody bids NO (Kalshi's empty-book convention)."""
        return ONE_DOLLAR - self.no_bid if self.no_bid else ONE_DOLLAR

    @property
    def no_ask(self) -> int:
        """Best NO ask = 1 − best YES bid; $1 when nobody bids YES."""
        return ONE_DOLLAR - self.yes_bid if self.yes_bid else ONE_DOLLAR


@dataclass
class MarketStats:
    """Trading statistics of one market that the engine does not keep."""

    last_price: int = 0
    last_size: int = 0
    volume: int = 0
    volume_24h: int = 0
    dollar_volume: int = 0  # ticks x contracts / 100, i.e. $0.0001
    open_interest: int = 0
    previous_price: int = 0
    previous_yes_bid: int = 0
    previous_yes_ask: int = ONE_DOLLAR
    updated_time: datetime | None = None
    determination_time: datetime | None = None
    settlement_time: datetime | None = None


def series_json(s: SeriesInfo, *, updated: datetime, volume: int | None = None) -> Json:
    """A Series object; `updated` is its `last_updated_ts` (a date-time, never null)."""
    out: Json = {
        "ticker": s.ticker, "frequency": s.frequency, "title": s.title, "category": s.category,
        "categories": s.all_categories(), "tags": list(s.tags),
        "settlement_sources": [dict(x) for x in s.settlement_sources], "contract_url": s.contract_url,
        "contract_terms_url": s.contract_terms_url, "product_metadata": None, "fee_type": s.fee_type,
        "fee_multiplier": number(s.fee_multiplier), "additional_prohibitions": [],
        "last_updated_ts": rfc3339(s.last_updated or updated), "exchange_index": s.exchange_index,
    }
    if volume is not None:
        out["volume_fp"] = count(volume)
    return out


def event_json(e: EventInfo, series: SeriesInfo | None, markets: list[Json] | None = None, *,
               updated: datetime) -> Json:
    """An EventData object; `markets` only when nested markets were asked for.

    `settlement_sources` is required (nullable) and, like Kalshi, repeats the series' sources;
    `updated` is `last_updated_ts` unless the event has its own.
    """
    out: Json = {
        "event_ticker": e.event_ticker, "series_ticker": e.series_ticker, "sub_title": e.sub_title,
        "title": e.title, "collateral_return_type": e.collateral_return_type,
        "mutually_exclusive": e.mutually_exclusive, "category": series.category if series else "",
        "strike_date": rfc3339(e.strike_date), "strike_period": None, "available_on_brokers": False,
        "product_metadata": None,
        "settlement_sources": [dict(x) for x in series.settlement_sources] if series else [],
        "last_updated_ts": rfc3339(e.last_updated or updated),
        "fee_type_override": None, "fee_multiplier_override": None,
        "exchange_index": e.shard,
    }
    if markets is not None:
        out["markets"] = markets
    return out


def market_json(m: MarketInfo, spec: MarketSpec, top: Top, stats: MarketStats) -> Json:
    """A Market object (kalshi_api.md §3.4; SDK 3.34 `Market`), prices from the live book and the tape.

    `updated_time` is the last non-trading (metadata or status) change, not the last trade.
    """
    created = m.created_time or m.open_time
    result = spec.result or ""
    settle_value = None if not spec.result else dollars(ONE_DOLLAR if spec.result == "yes" else 0)
    out: Json = {
        "ticker": m.ticker, "event_ticker": m.event_ticker, "market_type": "binary",
        "title": m.title, "subtitle": "", "yes_sub_title": m.yes_sub_title, "no_sub_title": m.no_sub_title,
        "created_time": rfc3339(created), "updated_time": rfc3339(stats.updated_time or created),
        "open_time": rfc3339(m.open_time), "close_time": rfc3339(m.close_time),
        "expected_expiration_time": rfc3339(m.expected_expiration_time),
        "expiration_time": rfc3339(m.latest_expiration_time),
        "latest_expiration_time": rfc3339(m.latest_expiration_time),
        "settlement_timer_seconds": m.settlement_timer_seconds,
        "status": spec.status,
        "yes_bid_dollars": dollars(top.yes_bid), "yes_ask_dollars": dollars(top.yes_ask),
        "no_bid_dollars": dollars(top.no_bid), "no_ask_dollars": dollars(top.no_ask),
        "yes_bid_size_fp": count(top.yes_bid_size), "yes_ask_size_fp": count(top.no_bid_size),
        "last_price_dollars": dollars(stats.last_price),
        "previous_yes_bid_dollars": dollars(stats.previous_yes_bid),
        "previous_yes_ask_dollars": dollars(stats.previous_yes_ask),
        "previous_price_dollars": dollars(stats.previous_price),
        "volume_fp": count(stats.volume), "volume_24h_fp": count(stats.volume_24h),
        "open_interest_fp": count(stats.open_interest),
        "notional_value_dollars": dollars(ONE_DOLLAR), "liquidity_dollars": "0.0000",
        "result": result, "can_close_early": m.can_close_early,
        "settlement_value_dollars": settle_value, "settlement_ts": rfc3339(stats.settlement_time),
        "expiration_value": m.expiration_value,
        "occurrence_datetime": None, "fee_waiver_expiration_time": None, "early_close_condition": None,
        "strike_type": m.strike_type, "floor_strike": number(m.floor_strike), "cap_strike": number(m.cap_strike),
        "functional_strike": None, "custom_strike": None,
        "rules_primary": m.rules_primary, "rules_secondary": m.rules_secondary,
        "primary_participant_key": None,
        "price_level_structure": m.price_level_structure, "price_ranges": m.grid.to_api(),
        "is_provisional": False, "exchange_index": m.shard,
        "settlement_bounds_type": m.settlement_bounds_type,
    }
    if m.settlement_bounds_type == "floor":
        out["settlement_floor_dollars"] = dollars(m.settlement_floor)
    return out


def levels_json(levels: Iterable[tuple[int, int]]) -> list[list[str]]:
    """Book levels as `[price_dollars, count_fp]` string pairs."""
    return [[dollars(p), count(c)] for p, c in levels]


def orderbook_json(yes: list[tuple[int, int]], no: list[tuple[int, int]]) -> Json:
    """The REST `orderbook_fp` object: YES bids and NO bids, ascending, best last."""
    return {"yes_dollars": levels_json(yes), "no_dollars": levels_json(no)}


def trade_json(t: Trade) -> Json:
    """A public Trade (REST)."""
    return {
        "trade_id": t.trade_id, "ticker": t.ticker, "count_fp": count(t.count),
        "yes_price_dollars": dollars(t.yes_price), "no_price_dollars": dollars(ONE_DOLLAR - t.yes_price),
        "taker_side": t.taker_outcome_side, "taker_outcome_side": t.taker_outcome_side,
        "taker_book_side": t.taker_book_side, "created_time": rfc3339(t.created_time), "is_block_trade": False,
    }


# -- portfolio ----------------------------------------------------------------------------------

def order_json(o: Order, *, exchange_index: int = 0) -> Json:
    """An Order object (kalshi_api.md §3.10)."""
    out: Json = {
        "order_id": o.order_id, "user_id": user_uuid(o.user_id), "client_order_id": o.client_order_id or "",
        "ticker": o.ticker,
        # Legacy direction fields: a bid buys YES, an ask buys NO (order_direction mapping).
        "side": o.outcome_side, "action": "buy",
        "outcome_side": o.outcome_side, "book_side": o.book_side, "type": "limit", "status": o.status,
        "yes_price_dollars": dollars(o.price), "no_price_dollars": dollars(ONE_DOLLAR - o.price),
        "fill_count_fp": count(o.fill_count), "remaining_count_fp": count(o.remaining_count),
        "initial_count_fp": count(o.initial_count),
        "taker_fill_cost_dollars": dollars(o.taker_fill_cost), "maker_fill_cost_dollars": dollars(o.maker_fill_cost),
        "taker_fees_dollars": dollars(o.taker_fees), "maker_fees_dollars": dollars(o.maker_fees),
        "expiration_time": rfc3339(o.expiration_time), "created_time": rfc3339(o.created_time),
        "last_update_time": rfc3339(o.last_update_time),
        "self_trade_prevention_type": o.self_trade_prevention_type, "order_group_id": o.order_group_id,
        "cancel_order_on_pause": o.cancel_order_on_pause, "subaccount_number": o.subaccount,
        "exchange_index": exchange_index,
    }
    if o.last_update_reason:
        out["last_update_reason"] = o.last_update_reason
    return out


def fill_json(f: Fill, *, exchange_index: int = 0) -> Json:
    """A Fill object (REST `/portfolio/fills`); `client_order_id` is not on REST fills since 2026-03-30.

    `fill_id` and its legacy twin `trade_id` are the same value (get-fills: "same as fill_id"), the
    trade id the `fill` WebSocket message carries too.
    """
    return {
        "fill_id": f.trade_id, "trade_id": f.trade_id, "order_id": f.order_id,
        "ticker": f.ticker, "market_ticker": f.ticker, "exchange_index": exchange_index,
        "side": f.outcome_side, "action": "buy", "outcome_side": f.outcome_side, "book_side": f.book_side,
        "count_fp": count(f.count), "yes_price_dollars": dollars(f.yes_price),
        "no_price_dollars": dollars(ONE_DOLLAR - f.yes_price), "is_taker": f.is_taker,
        "created_time": rfc3339(f.created_time), "fee_cost": dollars(f.fee), "subaccount_number": 0,
        "ts": unix_s(f.created_time),
    }


def position_json(p: Position, *, now: datetime, exchange_index: int = 0) -> Json:
    """A MarketPosition (`position_fp` signed: + YES, − NO); `last_updated_ts` is required, `now` if unknown."""
    return {
        "ticker": p.ticker, "exchange_index": exchange_index,
        "total_traded_dollars": dollars(p.total_traded), "position_fp": count(p.position),
        "market_exposure_dollars": dollars(p.market_exposure), "realized_pnl_dollars": dollars(p.realized_pnl),
        "fees_paid_dollars": dollars(p.fees_paid),
        "last_updated_ts": rfc3339(p.last_updated or now),
    }


def event_position_json(event_ticker: str, positions: list[Position]) -> Json:
    """An EventPosition: the sum of the event's market positions."""
    exposure = sum(p.market_exposure for p in positions)
    return {
        "event_ticker": event_ticker, "total_cost_dollars": dollars(exposure),
        "total_cost_shares_fp": count(sum(abs(p.position) for p in positions)),
        "event_exposure_dollars": dollars(exposure),
        "realized_pnl_dollars": dollars(sum(p.realized_pnl for p in positions)),
        "fees_paid_dollars": dollars(sum(p.fees_paid for p in positions)),
    }


def settlement_json(s: Settlement, *, exchange_index: int = 0) -> Json:
    """A Settlement row; `revenue` and `value` are integer cents (legacy)."""
    return {
        "ticker": s.ticker, "exchange_index": exchange_index, "event_ticker": s.event_ticker,
        "market_result": s.market_result,
        "yes_count_fp": count(s.yes_count), "yes_total_cost_dollars": dollars(s.yes_total_cost),
        "no_count_fp": count(s.no_count), "no_total_cost_dollars": dollars(s.no_total_cost),
        "revenue": cents(s.revenue), "settled_time": rfc3339(s.settled_time), "fee_cost": dollars(s.fee_cost),
        "value": 100 if s.market_result == "yes" else 0,
    }


def average_fill(fills: Iterable[Fill]) -> tuple[str | None, str | None]:
    """(average_fill_price, average_fee_paid per contract) of some fills, None when nothing filled."""
    fs = list(fills)
    n = sum(f.count for f in fs)
    if n == 0:
        return None, None
    price = dollars_ratio(sum(f.yes_price * f.count for f in fs), n)
    fee = dollars_ratio(sum(f.fee for f in fs) * 100, n)  # per whole contract; counts are 1/100
    return price, fee


# -- WebSocket payloads -------------------------------------------------------------------------

def ws_snapshot(ticker: str, yes: list[tuple[int, int]], no: list[tuple[int, int]], *, use_yes_price: bool) -> Json:
    """`orderbook_snapshot` msg; an empty side's key is absent (kalshi_api.md §4.4)."""
    msg: Json = {"market_ticker": ticker, "market_id": market_id(ticker)}
    if yes:
        msg["yes_dollars_fp"] = levels_json(yes)
    if no:
        # use_yes_price reports NO bids at the YES price they offer (1 − q).
        levels = sorted((ONE_DOLLAR - p, c) for p, c in no) if use_yes_price else no
        msg["no_dollars_fp"] = levels_json(levels)
    return msg


def ws_delta(d: BookDelta, *, use_yes_price: bool, own: bool, subaccount: int = 0) -> Json:
    """`orderbook_delta` msg; `client_order_id`/`subaccount` only when the receiver's order caused it."""
    price = ONE_DOLLAR - d.price if use_yes_price and d.side == "no" else d.price
    msg: Json = {"market_ticker": d.ticker, "market_id": market_id(d.ticker), "price_dollars": dollars(price),
                 "delta_fp": count(d.delta), "side": d.side, "ts_ms": ts_ms(d.ts), "ts": rfc3339(d.ts)}
    if own:
        if d.client_order_id:
            msg["client_order_id"] = d.client_order_id
        msg["subaccount"] = subaccount
    return msg


def ws_ticker(ticker: str, top: Top, stats: MarketStats, now: datetime) -> Json:
    """`ticker` msg: last price, top of book, volume, open interest."""
    return {
        "market_ticker": ticker, "market_id": market_id(ticker), "price_dollars": dollars(stats.last_price),
        "yes_bid_dollars": dollars(top.yes_bid), "yes_ask_dollars": dollars(top.yes_ask),
        "volume_fp": count(stats.volume), "open_interest_fp": count(stats.open_interest),
        # Whole dollars (legacy ints): volume as traded YES notional, open interest at $1 per contract.
        "dollar_volume": stats.dollar_volume // ONE_DOLLAR, "dollar_open_interest": stats.open_interest // 100,
        "yes_bid_size_fp": count(top.yes_bid_size), "yes_ask_size_fp": count(top.no_bid_size),
        "last_trade_size_fp": count(stats.last_size),
        "ts_ms": ts_ms(now), "ts": unix_s(now), "time": rfc3339(now),
    }


def ws_trade(t: Trade) -> Json:
    """`trade` msg."""
    return {
        "trade_id": t.trade_id, "market_ticker": t.ticker, "yes_price_dollars": dollars(t.yes_price),
        "no_price_dollars": dollars(ONE_DOLLAR - t.yes_price), "count_fp": count(t.count),
        "taker_side": t.taker_outcome_side, "taker_outcome_side": t.taker_outcome_side,
        "taker_book_side": t.taker_book_side, "is_block_trade": False,
        "ts_ms": ts_ms(t.created_time), "ts": unix_s(t.created_time),
    }


def ws_fill(f: Fill, *, exchange_index: int = 0) -> Json:
    """`fill` msg (private); rendered by the engine's shared frames."""
    return frames.fill_msg(f, exchange_index=exchange_index)


def ws_user_order(o: Order) -> Json:
    """`user_order` msg (private)."""
    return frames.user_order_msg(o)


def ws_market_position(p: Position, volume: int) -> Json:
    """`market_position` msg (private; the type is singular)."""
    return {
        "user_id": user_uuid(p.user_id), "market_ticker": p.ticker, "position_fp": count(p.position),
        "position_cost_dollars": dollars(p.market_exposure), "realized_pnl_dollars": dollars(p.realized_pnl),
        "fees_paid_dollars": dollars(p.fees_paid), "position_fee_cost_dollars": dollars(p.fees_paid),
        "volume_fp": count(volume), "subaccount": 0,
    }


def _present(d: Json) -> Json:
    """`d` without its None values: the AsyncAPI types these keys as plain integers/numbers/objects, so
    an absent value is an absent key, never `null`."""
    return {k: v for k, v in d.items() if v is not None}


def ws_lifecycle_created(m: MarketInfo) -> Json:
    """`market_lifecycle_v2` msg for a newly listed market (with its tick grid, as Kalshi's example shows)."""
    meta = _present({
        "name": m.title, "title": m.title, "yes_sub_title": m.yes_sub_title, "no_sub_title": m.no_sub_title,
        "rules_primary": m.rules_primary, "rules_secondary": m.rules_secondary,
        "can_close_early": m.can_close_early, "event_ticker": m.event_ticker,
        "expected_expiration_ts": unix_s(m.expected_expiration_time) if m.expected_expiration_time else None,
        "strike_type": m.strike_type, "floor_strike": number(m.floor_strike), "cap_strike": number(m.cap_strike),
    })
    return {
        "event_type": "created", "market_ticker": m.ticker, "exchange_index": m.shard,
        "open_ts": unix_s(m.open_time), "close_ts": unix_s(m.close_time),
        "price_level_structure": m.price_level_structure, "price_ranges": m.grid.to_api(),
        "additional_metadata": meta,
    }


def ws_event_lifecycle(e: EventInfo, series: SeriesInfo | None) -> Json:
    """`event_lifecycle` msg for a newly listed event."""
    return _present({
        "event_ticker": e.event_ticker, "exchange_index": e.shard, "title": e.title,
        "subtitle": e.sub_title, "collateral_return_type": e.collateral_return_type,
        "series_ticker": e.series_ticker, "strike_date": unix_s(e.strike_date) if e.strike_date else None,
        "strike_period": "",
    })
