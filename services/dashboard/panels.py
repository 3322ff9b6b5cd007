"""What each panel shows, from the services' answers: pure functions, no I/O.

Money and counts are formatted with `libs.common.display` (dollars, cents, contracts: as in the CLI and on
Telegram); the exact integers travel beside them as `*_ticks` / `*_count` for the page's `data-*`
attributes, so a reader (or a test) can check what is shown against the answer. Nothing is computed here
but grouping and sums of what the executor already said (the totals line of the positions, as the CLI's).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from libs.common.display import MODE_LABEL, age, contracts, num, price, usd
from libs.common.events import Alert, Heartbeat
from libs.common.health import judge
from libs.common.logs import redact_text
from libs.common.money import leg_price, outcome_price

SIDE = {"buy_yes": "YES", "buy_no": "NO"}


def _parse_ts(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        ts = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def clock(value: Any, *, with_date: bool = False) -> str:
    """A timestamp as UTC `HH:MM:SS` (or `MM-DD HH:MM:SS`); — when unknown."""
    ts = _parse_ts(value)
    if ts is None:
        return "—"
    return ts.astimezone(UTC).strftime("%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def event_of(ticker: str) -> tuple[str, str]:
    """`KXHIGHNY-26NOV23-B52.5` → (`KXHIGHNY-26NOV23`, `B52.5`)."""
    event, _, market = ticker.rpartition("-")
    return (event, market) if event else (ticker, ticker)


# --- the banner ----------------------------------------------------------------------------------

def banner(mode: str, status: dict[str, Any] | None, status_error: str | None, switch: dict[str, Any] | None,
           ) -> dict[str, Any]:
    """The mode (loud when live), trading on / paused / blocked, bankroll and today's P&L, the control switches."""
    out: dict[str, Any] = {"mode": mode, "label": MODE_LABEL.get(mode, mode.upper()), "live": mode == "live"}
    if status is None:
        out.update(state="unknown", trading=f"executor not answering ({status_error or 'no answer yet'})",
                   bankroll="—", today="—", today_ticks=None, bankroll_ticks=None)
    else:
        if status.get("paused"):
            state, text = "paused", "PAUSED" + (f": {status['pause_reason']}" if status.get("pause_reason") else "")
        elif status.get("blocked"):
            state, text = "blocked", f"blocked: {status['blocked']}"
        else:
            state, text = "on", "trading"
        out.update(state=state, trading=text, bankroll=usd(status.get("bankroll_ticks")),
                   bankroll_ticks=status.get("bankroll_ticks"), today=usd(status.get("today_pnl_ticks"), sign=True),
                   today_ticks=status.get("today_pnl_ticks"), open_orders=status.get("open_orders"),
                   orders_sent=status.get("orders_sent"), stale=bool(status.get("waiting_for_fresh_data")))
    if switch is not None:
        control_mode = switch.get("control_mode")
        out["control_mode"] = control_mode
        out["mode_note"] = (None if control_mode in (None, mode) else
                            f"control mode is {control_mode.upper()}: this {mode.upper()} desk places no new orders")
        until = switch.get("live_armed_until")
        out["live_armed"] = (f"LIVE armed until {str(until)[:16].replace('T', ' ')} UTC"
                             if switch.get("live_armed") else None)
    return out


# --- health --------------------------------------------------------------------------------------

def health(beats: Sequence[Heartbeat], silent: Sequence[str], ws: dict[str, Any] | None,
           now: datetime) -> dict[str, Any]:
    """Per service instance: its state as `kdesk health` judges it, heartbeat age, each input (feed) with its
    age; the silent services; each WebSocket of feeds."""
    rows = []
    for b in beats:
        ok, _ = judge(b, now)
        inputs = [{"name": k, "age": age(v.age_s), "limit": age(v.max_age_s), "stale": v.stale}
                  for k, v in sorted(b.inputs.items())]
        rows.append({"service": b.service, "instance": b.instance, "status": b.status, "healthy": ok,
                     "state": "healthy" if ok else b.status if b.status != "ok" else "stale",
                     "beat": age(max(0.0, (now - b.ts_event).total_seconds())), "inputs": inputs,
                     "detail": redact_text(b.detail)[:160]})
    conns = []
    for c in (ws or {}).get("connections") or []:
        conns.append({"name": c["name"], "state": c["state"], "kind": c.get("kind", ""),
                      "last": "never" if c.get("last_message_age_s") is None else f"{age(c['last_message_age_s'])} ago",
                      "reconnects": c.get("reconnects", 0), "messages": f"{c.get('messages', 0):,}",
                      "ok": c["state"] in ("connected", "polling")})
    return {"rows": rows, "silent": list(silent), "connections": conns,
            "healthy": sum(r["healthy"] for r in rows), "total": len(rows) + len(silent)}


# --- P&L -----------------------------------------------------------------------------------------

def pnl(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """The `pnl` answer as shown: the summary line, P&L per UTC day, by family (all in dollars)."""
    if data is None:
        return None

    def money(key: str, *, sign: bool = True, src: dict[str, Any] = data) -> dict[str, Any]:
        return {"text": usd(src.get(key), sign=sign), "ticks": src.get(key)}

    days = [{"date": d["date"], "start": usd(d.get("start_equity_ticks")), "end": usd(d.get("end_equity_ticks")),
             "pnl": money("pnl_ticks", src=d), "realized": money("realized_ticks", src=d),
             "fees": money("fees_ticks", sign=False, src=d), "fills": d.get("fills", 0)}
            for d in reversed(data.get("days") or [])]
    families = [{"family": f, "positions": row.get("positions", 0), "realized": money("realized_ticks", src=row),
                 "unrealized": money("unrealized_ticks", src=row), "fees": money("fees_ticks", sign=False, src=row)}
                for f, row in (data.get("by_family") or {}).items()]
    return {"today": money("today_pnl_ticks"), "realized": money("realized_ticks"),
            "unrealized": money("unrealized_ticks"), "fees": money("fees_ticks", sign=False),
            "as_of": clock(data.get("as_of"), with_date=True), "window_days": data.get("window_days"),
            "days": days, "families": families, "points": len(data.get("equity") or [])}


# --- positions, orders, fills --------------------------------------------------------------------

def positions(rows: Sequence[dict[str, Any]] | None) -> dict[str, Any] | None:
    """Open positions grouped by event (the event's markets under it), with the executor's marks, and a total."""
    if rows is None:
        return None
    events: dict[str, list[dict[str, Any]]] = {}
    for p in sorted(rows, key=lambda r: (r.get("event_ticker") or event_of(r["ticker"])[0], r["ticker"])):
        event = p.get("event_ticker") or event_of(p["ticker"])[0]
        events.setdefault(event, []).append({
            "ticker": p["ticker"], "market": p["ticker"].removeprefix(event + "-"), "family": p.get("family") or "",
            "side": "YES" if p["position"] > 0 else "NO", "position": p["position"],
            "contracts": contracts(abs(p["position"])), "cost": usd(p["cost_ticks"]), "cost_ticks": p["cost_ticks"],
            "mark": price(p.get("mark_ticks")), "mark_ticks": p.get("mark_ticks"),
            "unrealized": usd(p.get("unrealized_pnl_ticks"), sign=True),
            "unrealized_ticks": p.get("unrealized_pnl_ticks"),
            "realized": usd(p.get("realized_pnl_ticks"), sign=True), "realized_ticks": p.get("realized_pnl_ticks")})
    unreal = [r.get("unrealized_pnl_ticks") for r in rows]
    cost = sum(r["cost_ticks"] for r in rows)
    realized = sum(r.get("realized_pnl_ticks") or 0 for r in rows)
    unrealized = sum(u for u in unreal if u is not None)
    return {"events": [{"event": e, "rows": r} for e, r in events.items()], "count": len(rows),
            "total": {"cost": usd(cost), "cost_ticks": cost, "unrealized": usd(unrealized, sign=True),
                      "unrealized_ticks": unrealized, "realized": usd(realized, sign=True), "realized_ticks": realized}}


def orders(rows: Sequence[dict[str, Any]] | None, now: datetime) -> list[dict[str, Any]] | None:
    """Working (open) orders: market, leg, limit price, filled of initial, status, age."""
    if rows is None:
        return None
    out = []
    for o in rows:
        created = _parse_ts(o.get("created_at"))
        out.append({"client_order_id": o["client_order_id"], "ticker": o["ticker"],
                    "side": o["outcome_side"].upper(), "price": price(leg_price(o["book_side"], o["yes_price"])),
                    "filled": f"{contracts(o['fill_count'])}/{contracts(o['initial_count'])}", "status": o["status"],
                    "age": age((now - created).total_seconds()) if created else "—", "reason": o.get("reason") or ""})
    return out


def fills(rows: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Recent fills, newest first: time, market, leg, price, contracts, fee, maker or taker."""
    if rows is None:
        return None
    return [{"fill_id": f["fill_id"], "time": clock(f["filled_at"], with_date=True), "ticker": f["ticker"],
             "side": f["outcome_side"].upper(), "price": price(outcome_price(f["outcome_side"], f["yes_price"])),
             "contracts": contracts(f["count"]), "count": f["count"], "fee": usd(f["fee_ticks"]),
             "fee_ticks": f["fee_ticks"], "liquidity": "taker" if f["is_taker"] else "maker"} for f in rows]


# --- signals, accuracy, alerts -------------------------------------------------------------------

def what_happened(status: str | None, reason: str | None) -> tuple[str, str]:
    """(text, kind) of a signal's fate: sent, declined with its reason, or not decided yet."""
    if status is None:
        return ("no order" + (f" ({reason})" if reason else ""), "none") if reason else ("not decided yet", "none")
    if status == "blocked":
        return f"declined: {reason or 'no reason given'}", "declined"
    return status + (f" ({reason})" if reason else ""), "sent"


def signals(rows: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """The newest signals: market, family, action, model and market probability, edge, what became of it."""
    if rows is None:
        return None
    out = []
    for r in rows:
        text, kind = what_happened(r.get("order_status"), r.get("reason"))
        out.append({"signal_id": r["signal_id"], "time": clock(r.get("ts") or r.get("created_at")),
                    "ticker": r["ticker"], "family": r.get("family") or "",
                    "side": SIDE.get(r.get("action") or "", r.get("action") or ""),
                    "model": num(r.get("model_prob"), ".2f"), "market": num(r.get("market_prob"), ".2f"),
                    "edge": price(r.get("edge_maker_ticks")), "what": text, "kind": kind})
    return out


def _llm_cost(ticks: int | None) -> str:
    """LLM money: calls cost fractions of a cent, so four decimals."""
    return "—" if ticks is None else f"${ticks / 10_000:,.4f}"


def llm(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """The llm family's day (`cmd.signals.llm`): spend against the budget, and every recent call with its
    prompt, answer, tokens and cost."""
    if data is None:
        return None
    calls = []
    for c in data.get("recent_calls") or []:
        parsed = c.get("parsed") or {}
        calls.append({"time": clock(c.get("ts")), "ticker": c["ticker"], "stage": c["stage"], "model": c["model"],
                      "status": c["status"], "error": c.get("error") or "", "cost": _llm_cost(c.get("cost_ticks")),
                      "p": num(parsed.get("probability"), ".2f") if parsed else "—",
                      "latency": "—" if c.get("latency_ms") is None else f"{c['latency_ms']:.0f} ms",
                      "tokens": f"{c.get('prompt_tokens') or 0:,} / {c.get('completion_tokens') or 0:,}",
                      "prompt": c.get("prompt") or "", "response": c.get("response") or ""})
    return {"spent": _llm_cost(data.get("spent_ticks")), "budget": _llm_cost(data.get("budget_ticks")),
            "left": _llm_cost(data.get("remaining_ticks")), "spent_out": bool(data.get("budget_spent")),
            "model": data.get("model") or "", "calls": data.get("calls_today") or {},
            "backoff_s": data.get("provider_backoff_s") or 0,
            "calibration_n": (data.get("calibration") or {}).get("n", 0),
            "recent": calls}


def accuracy(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """Scores per family over the window: n, Brier (model and market), skill, log loss, hit rate, P&L."""
    if data is None:
        return None
    fams = []
    for f, s in (data.get("families") or {}).items():
        fams.append({"family": f, "n": s["n"], "brier": num(s.get("brier")), "market": num(s.get("brier_market")),
                     "skill": num(s.get("brier_skill"), "+.3f"), "log_loss": num(s.get("log_loss"), ".3f"),
                     "hit": num(s.get("hit_rate"), ".0%") if s.get("hit_rate") is not None else "—",
                     "pnl": usd(s.get("pnl_ticks"), sign=True)})
    return {"days": data.get("days"), "families": fams}


def alerts(rows: Iterable[Alert]) -> list[dict[str, Any]]:
    """The last alerts, newest first (free text redacted, shortened)."""
    return [{"time": a.ts_event.astimezone(UTC).strftime("%m-%d %H:%M:%S"), "severity": a.severity,
             "family": a.family, "title": redact_text(a.title)[:200], "detail": redact_text(a.detail)[:300]}
            for a in rows]


__all__ = ["accuracy", "alerts", "banner", "clock", "event_of", "fills", "health", "orders", "pnl", "positions",
           "signals", "what_happened"]
