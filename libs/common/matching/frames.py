"""Kalshi private WebSocket messages (`fill`, `user_order`; kalshi_api.md §4) for engine objects.

One rendering for the simulated exchange and the paper broker, so both speak the same protocol the
executor parses with `libs.common.kalshi.models.WsFill` / `WsUserOrder`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from libs.common.matching.types import Fill, Order
from libs.common.money import ONE_DOLLAR, format_count, format_dollars

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_USER_NS = uuid.UUID("0f6c1d3e-8a4b-4e5f-9c2d-7b1a3e5f7d90")


def user_uuid(user_id: str) -> str:
    """The user id as Kalshi writes it: a UUID (kept when it is one, else derived stably from the name)."""
    try:
        return str(uuid.UUID(user_id))
    except ValueError:
        return str(uuid.uuid5(_USER_NS, user_id))


def ts_ms(dt: datetime) -> int:
    """Unix milliseconds, exactly."""
    return (dt - _EPOCH) // _MS


def rfc3339(dt: datetime | None) -> str | None:
    """A UTC time as RFC3339 with a `Z` (microseconds only when there are some)."""
    if dt is None:
        return None
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if dt.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def fill_msg(f: Fill, *, exchange_index: int = 0) -> dict[str, Any]:
    """`fill` msg; unlike REST fills it still carries `client_order_id`."""
    ms = ts_ms(f.created_time)
    return {
        "trade_id": f.trade_id, "order_id": f.order_id, "market_ticker": f.ticker, "exchange_index": exchange_index,
        "is_taker": f.is_taker, "side": f.outcome_side, "yes_price_dollars": format_dollars(f.yes_price),
        "no_price_dollars": format_dollars(ONE_DOLLAR - f.yes_price), "count_fp": format_count(f.count),
        "fee_cost": format_dollars(f.fee), "action": "buy", "ts_ms": ms, "ts": ms // 1000,
        "client_order_id": f.client_order_id or "", "post_position_fp": format_count(f.post_position),
        "purchased_side": f.outcome_side, "outcome_side": f.outcome_side, "book_side": f.book_side, "subaccount": 0,
    }


def user_order_msg(o: Order) -> dict[str, Any]:
    """`user_order` msg: the order's full state after any change.

    `order_group_id` and the expiration keys are typed string/integer (not nullable) in the AsyncAPI,
    so they are left out when the order has none.
    """
    exp = o.expiration_time
    out: dict[str, Any] = {
        "order_id": o.order_id, "user_id": user_uuid(o.user_id), "ticker": o.ticker, "status": o.status,
        "side": o.outcome_side, "is_yes": o.outcome_side == "yes", "outcome_side": o.outcome_side,
        "book_side": o.book_side, "yes_price_dollars": format_dollars(o.price),
        "fill_count_fp": format_count(o.fill_count), "remaining_count_fp": format_count(o.remaining_count),
        "initial_count_fp": format_count(o.initial_count),
        "taker_fill_cost_dollars": format_dollars(o.taker_fill_cost),
        "maker_fill_cost_dollars": format_dollars(o.maker_fill_cost),
        "taker_fees_dollars": format_dollars(o.taker_fees), "maker_fees_dollars": format_dollars(o.maker_fees),
        "client_order_id": o.client_order_id or "",
        "self_trade_prevention_type": o.self_trade_prevention_type,
        "created_ts_ms": ts_ms(o.created_time), "last_updated_ts_ms": ts_ms(o.last_update_time),
        "created_time": rfc3339(o.created_time), "last_update_time": rfc3339(o.last_update_time),
        "subaccount_number": o.subaccount,
    }
    if o.order_group_id is not None:
        out["order_group_id"] = o.order_group_id
    if exp is not None:
        out["expiration_ts_ms"] = ts_ms(exp)
        out["expiration_time"] = rfc3339(exp)
    return out
