"""What the notifier says: command answers, alerts and digests as Telegram HTML, each with the mode.

Rendering only — every number comes from a `cmd.<service>.*` answer (integer money), formatted with
`libs.common.display` so it reads as in the CLI. Tables are `rich` tables rendered to plain text
inside `<pre>` (monospace on every Telegram client), narrow enough for a phone.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from libs.common.display import MODE_LABEL, age, contracts, flip_note, maker_note, num, price, usd, usd_per_contract
from libs.common.events import Alert, Heartbeat
from libs.common.money import ONE_DOLLAR, leg_price, outcome_price

PHONE_WIDTH = 52  # what a phone shows of a <pre> line without wrapping, about
SEVERITY_MARK = {"critical": "🔴", "warning": "🟠", "info": "🔵"}


def esc(text: Any) -> str:
    return html.escape(str(text), quote=False)


def head(mode: str, what: str) -> str:
    """The first line of every message: the mode, loud when live."""
    label = MODE_LABEL.get(mode, mode.upper())
    return f"<b>{'⚠️ ' if mode == 'live' else ''}[{label}]</b> {esc(what)}"


def pre(cols: Sequence[tuple[str, str]], rows: Iterable[Sequence[str]], *, width: int = PHONE_WIDTH) -> str:
    """A monospace table: (name, "l" | "r") columns."""
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), show_edge=False)
    for name, just in cols:
        # Numbers never wrap (a folded "129.03" reads as two numbers); long text is cut with an ellipsis.
        t.add_column(name, justify="right" if just == "r" else "left", no_wrap=True, overflow="ellipsis")
    n = 0
    for r in rows:
        t.add_row(*r)
        n += 1
    if not n:
        return "<i>none</i>"
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, highlight=False, emoji=False, markup=False).print(t)
    return f"<pre>{esc(buf.getvalue().rstrip())}</pre>"


def lines(mode: str, title: str, *body: str) -> str:
    return "\n".join([head(mode, title), *[b for b in body if b]])


# --- status ------------------------------------------------------------------------------------

def status(mode: str, ex: dict[str, Any] | None, pnl: dict[str, Any] | None, beats: Sequence[Heartbeat],
           silent: Sequence[str], errors: dict[str, str]) -> str:
    out: list[str] = []
    if ex is None:
        out.append(f"executor: <b>not answering</b> ({esc(errors.get('executor', ''))})")
    else:
        if ex.get("paused"):
            out.append(f"trading: <b>PAUSED</b> {esc(ex.get('pause_reason') or '')}".rstrip())
        elif ex.get("blocked"):
            out.append(f"trading: <b>blocked</b> ({esc(ex['blocked'])})")
        else:
            out.append("trading: <b>on</b>")
        out.append(f"open orders: {ex.get('open_orders', 0)} · sent since start: {ex.get('orders_sent', 0)}")
        contract = ex.get("contract")
        if contract is not None and not contract.get("ok"):
            out.append("Kalshi API: <b>contract mismatch</b>: " + esc("; ".join(contract.get("problems") or [])[:300]))
        book_age = ex.get("freshest_book_age_s")
        out.append(f"books: {ex.get('fresh_books', 0)} fresh · newest "
                   f"{'—' if book_age is None else age(book_age)} old")
    if pnl is not None:
        out.append(pnl_line(pnl))
    now = datetime.now(UTC)
    rows = []
    for b in sorted(beats, key=lambda b: (b.service, b.instance)):
        stale = [f"{k} {age(v.age_s)} old" for k, v in sorted(b.inputs.items()) if v.stale]
        rows.append((f"{b.service}/{b.instance}"[:22], b.status, age((now - b.ts_event).total_seconds()),
                     ", ".join(stale) or (b.detail[:40] if b.status != "ok" else "")))
    rows += [(name, "SILENT", "—", "no heartbeat") for name in silent]
    out.append(pre((("service", "l"), ("state", "l"), ("beat", "r"), ("stale", "l")), rows, width=60))
    if ex is not None and ex.get("decisions"):
        top = sorted(ex["decisions"].items(), key=lambda kv: -kv[1])[:6]
        out.append("decisions: " + ", ".join(f"{esc(k)} {v}" for k, v in top))
    return lines(mode, "status", *out)


# --- executor views ----------------------------------------------------------------------------

def _event_of(ticker: str) -> tuple[str, str]:
    """`KXHIGHNY-26NOV23-B52.5` → (`KXHIGHNY-26NOV23`, `B52.5`): tables stay narrow enough for a phone."""
    event, _, market = ticker.rpartition("-")
    return (event, market) if event else (ticker, ticker)


def _grouped(rows: Sequence[dict[str, Any]], cols: Sequence[tuple[str, str]],
             cells: Callable[[dict[str, Any], str], Sequence[str]]) -> str:
    """One small table per event, titled with the event ticker; rows name only their market."""
    by_event: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for r in rows:
        event, market = _event_of(r["ticker"])
        by_event.setdefault(event, []).append((market, r))
    if not by_event:
        return "<i>none</i>"
    return "\n".join(f"<b>{esc(event)}</b>\n" + pre(cols, [cells(r, m) for m, r in items])
                     for event, items in sorted(by_event.items()))


def positions(mode: str, rows: Sequence[dict[str, Any]]) -> str:
    body = _grouped(sorted(rows, key=lambda r: r["ticker"]),
                    (("market", "l"), ("side", "l"), ("qty", "r"), ("cost", "r"), ("unreal.", "r")),
                    lambda p, m: (m, "YES" if p["position"] > 0 else "NO", contracts(abs(p["position"])),
                                  usd(p["cost_ticks"]), usd(p.get("unrealized_pnl_ticks"), sign=True)))
    unreal = sum(r.get("unrealized_pnl_ticks") or 0 for r in rows)
    total = f"total cost {usd(sum(r['cost_ticks'] for r in rows))} · unrealized {usd(unreal, sign=True)}" \
        if rows else ""
    return lines(mode, f"{len(rows)} open position(s)", body, total)


def orders(mode: str, rows: Sequence[dict[str, Any]]) -> str:
    return lines(mode, f"{len(rows)} open order(s)", _grouped(
        rows, (("market", "l"), ("buy", "l"), ("price", "r"), ("filled", "r"), ("status", "l")),
        lambda o, m: (m, o["outcome_side"].upper(), price(leg_price(o["book_side"], o["yes_price"])),
                      f"{contracts(o['fill_count'])}/{contracts(o['initial_count'])}", o["status"])))


def fills(mode: str, rows: Sequence[dict[str, Any]]) -> str:
    return lines(mode, f"last {len(rows)} fill(s)", _grouped(
        rows, (("time", "l"), ("market", "l"), ("buy", "l"), ("price", "r"), ("qty", "r"), ("fee", "r")),
        lambda f, m: (str(f["filled_at"])[11:16], m, f["outcome_side"].upper(),
                      price(outcome_price(f["outcome_side"], f["yes_price"])),
                      contracts(f["count"]), usd(f["fee_ticks"]))))


def pnl_line(p: dict[str, Any]) -> str:
    """Today's P&L (equity now vs the day's first snapshot), realized and unrealized."""
    return (f"today P&amp;L <b>{usd(p.get('today_pnl_ticks'), sign=True)}</b> · realized "
            f"{usd(p.get('realized_ticks'), sign=True)} · unrealized {usd(p.get('unrealized_ticks'), sign=True)}")


def balance(mode: str, data: dict[str, Any]) -> str:
    return lines(mode, f"balance {usd(data['balance_ticks'])} available")


def pnl(mode: str, data: dict[str, Any]) -> str:
    days = data.get("days") or []
    table = pre((("day", "l"), ("P&L", "r"), ("fees", "r"), ("fills", "r")),
                [(str(d["date"])[5:], usd(d.get("pnl_ticks"), sign=True), usd(d.get("fees_ticks")),
                  str(d.get("fills", 0))) for d in days])
    fams = data.get("by_family") or {}
    fam = pre((("family", "l"), ("real.", "r"), ("unreal.", "r"), ("fees", "r")),
              [(f, usd(v.get("realized_ticks"), sign=True), usd(v.get("unrealized_ticks"), sign=True),
                usd(v.get("fees_ticks"))) for f, v in sorted(fams.items())]) if fams else ""
    summary = f"{pnl_line(data)} · fees {usd(data.get('fees_ticks'))}"
    return lines(mode, f"P&L, last {len(days)} day(s)", summary, table, fam)


STRATEGY_ROWS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("alloc.", lambda s: num(s.get("allocation"), ".0%")),
    ("cap. used", lambda s: usd(s.get("capital_used_ticks"))),
    ("cap", lambda s: usd(s.get("capital_cap_ticks"))),
    ("P&L", lambda s: usd(s.get("pnl_ticks"), sign=True)),
    ("fees", lambda s: usd(s.get("fees_ticks"))),
    ("fill", lambda s: num(s.get("fill_rate"), ".1%")),
    ("inv. ct", lambda s: contracts(s.get("inventory"))),
    ("open", lambda s: str(s.get("open_orders", 0))),
    ("adv./ct", lambda s: usd_per_contract(s.get("adverse_selection_ticks"))),
)


def strategies(mode: str, data: dict[str, Any]) -> str:
    """/strategies: one column a strategy (a row of nine figures does not fit a phone), then the maker and
    quick flip in a line each."""
    rows = data.get("strategies") or {}
    # Two-line headers keep three strategies within a phone's width.
    cols = [("", "l"), *((name.replace("_", "\n", 1), "r") for name in rows)]
    table = pre(cols, [(label, *(cell(s) for s in rows.values())) for label, cell in STRATEGY_ROWS]) if rows else ""
    notes = [maker_note(rows.get("market_making") or {}), flip_note(rows.get("quick_flip") or {})]
    return lines(mode, f"{len(rows)} strateg{'y' if len(rows) == 1 else 'ies'}", table,
                 "<i>P&amp;L: realized after fees + unrealized at the bid</i>" if rows else "no strategies reported",
                 *(f"<b>{esc(n)}</b>" if "KILL SWITCH" in n else esc(n) for n in notes if n))


def control(mode: str, verb: str, data: dict[str, Any]) -> str:
    if verb == "flatten":
        return lines(mode, f"flattened: {data.get('canceled', 0)} order(s) canceled, exit orders for "
                     f"{len(data.get('exit_orders') or [])} position(s)")
    if verb == "pause":
        return lines(mode, "PAUSED: no new orders; resting orders canceled")
    return lines(mode, "trading resumed")


# --- signals and accuracy ----------------------------------------------------------------------

def signals(mode: str, rows: Sequence[dict[str, Any]]) -> str:
    def what(r: dict[str, Any]) -> str:
        status, reason = r.get("order_status"), r.get("reason")
        if status is None:
            return "no order" + (f" ({reason})" if reason else "")
        return f"declined: {reason}" if status == "blocked" else status
    return lines(mode, f"last {len(rows)} signal(s)", _grouped(
        rows, (("market", "l"), ("model", "r"), ("mkt", "r"), ("what happened", "l")),
        lambda r, m: (m, num(r.get("model_prob"), ".2f"), num(r.get("market_prob"), ".2f"), what(r))))


def accuracy(mode: str, data: dict[str, Any]) -> str:
    fams = data.get("families") or {}
    if not fams:
        return lines(mode, f"accuracy over {data.get('days', 0):g} days", "no resolved predictions in this window yet")
    return lines(mode, f"accuracy over {data.get('days', 0):g} days", pre(
        (("family", "l"), ("n", "r"), ("Brier", "r"), ("market", "r"), ("skill", "r"), ("P&L", "r")),
        [(f, str(s["n"]), num(s.get("brier"), ".3f"), num(s.get("brier_market"), ".3f"),
          num(s.get("brier_skill"), "+.2f"), usd(s.get("pnl_ticks"), sign=True)) for f, s in fams.items()]))


# --- alerts and digests ------------------------------------------------------------------------

def alert(a: Alert) -> str:
    mark = SEVERITY_MARK.get(a.severity, "")
    detail = f"\n{esc(a.detail[:1500])}" if a.detail else ""
    return (f"{head(a.mode.value, '')}{mark} <b>{esc(a.title[:300])}</b>{detail}\n"
            f"<i>{esc(a.family)} · {a.ts_event.strftime('%H:%M:%S')} UTC</i>")


def digest(mode: str, d: dict[str, Any]) -> str:
    out = [f"every {age(d['window_s'])}:"]
    sig = d.get("decisions") or {}
    if sig:
        out.append("decisions: " + ", ".join(f"{esc(k)} {v}" for k, v in sorted(sig.items(), key=lambda kv: -kv[1])))
    out.append(f"orders sent {d.get('orders_sent', 0)} · fills {d.get('fills', 0)}")
    if d.get("pnl") is not None:
        out.append(pnl_line(d["pnl"]))
    for f, s in (d.get("accuracy") or {}).items():
        out.append(f"{esc(f)}: {s['n']} scored · Brier {num(s.get('brier'), '.3f')} vs market "
                   f"{num(s.get('brier_market'), '.3f')}")
    sup = d.get("suppressed") or {}
    if sup:
        out.append(f"{sum(sup.values())} more alert(s) suppressed: "
                   + ", ".join(f"{esc(f)} {n}" for f, n in sorted(sup.items())))
    if d.get("expired"):
        out.append(f"{d['expired']} message(s) dropped after waiting too long for Telegram")
    return lines(mode, "digest", *out)


def refusal() -> str:
    return "Not authorized. This bot answers its operators only."


__all__ = ["accuracy", "alert", "balance", "control", "digest", "esc", "fills", "head", "lines", "orders",
           "pnl", "positions", "pre", "refusal", "signals", "status", "strategies"]


def _cost(ticks: int | None) -> str:
    """LLM money: calls cost fractions of a cent, so four decimals."""
    return "—" if ticks is None else f"${ticks / ONE_DOLLAR:,.4f}"


def llm(mode: str, data: dict[str, Any]) -> str:
    """/llm: the day's spend against the budget, then the last analyses."""
    state = "SPENT — analysis stopped until 00:00 UTC" if data["budget_spent"] else "open"
    calls = data.get("calls_today") or {}
    return lines(mode, f"llm family, {data['day']} (UTC)",
                 f"budget {_cost(data['spent_ticks'])} of {_cost(data['budget_ticks'])} · {esc(state)}",
                 "calls today: " + esc(", ".join(f"{n} {k}" for k, n in sorted(calls.items())) or "none"),
                 f"model {esc(data['model'])}" + (f" · backing off {data['provider_backoff_s']:.0f} s"
                                                   if data.get("provider_backoff_s") else ""),
                 pre((("market", "l"), ("outcome", "l"), ("p", "r"), ("cost", "r")),
                     [(x["ticker"].split("-", 1)[-1], x["outcome"][:14], num(x.get("p_model"), ".2f"),
                       _cost(x.get("cost_ticks"))) for x in data.get("decisions") or []]))
