"""What the CLI prints: command answers (integer money) as tables in dollars and contracts, with the mode.

Rendering only — every number comes from a `cmd.<service>.*` answer. `rich` makes the tables; output
fits 80 columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from libs.common.display import age, contracts, flip_note, maker_note, num, price, usd, usd_per_contract
from libs.common.money import ONE_DOLLAR, leg_price, outcome_price

WIDTH = 80


def console() -> Console:
    return Console(width=WIDTH, highlight=False, soft_wrap=False)


def _table(*cols: tuple[str, str], title: str | None = None) -> Table:
    """A table with (name, "l" | "r") columns; long cells fold rather than vanish at 80 columns."""
    t = Table(title=title, title_justify="left")
    for name, just in cols:
        t.add_column(name, justify="right" if just == "r" else "left", overflow="fold")
    return t


def banner(mode: str, what: str) -> str:
    return f"[bold]kdesk[/bold] · mode [bold {'red' if mode == 'live' else 'cyan'}]{mode.upper()}[/] · {what}"


def status(mode: str, ex: dict[str, Any] | None, res: dict[str, Any] | None, errors: dict[str, str]) -> None:
    out = console()
    out.print(banner(mode, "status"))
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="dim")
    t.add_column()
    if ex is None:
        t.add_row("executor", f"[red]not answering[/]: {errors.get('executor', '')}")
    else:
        t.add_row("trading", "[red]PAUSED[/] " + (ex.get("pause_reason") or "") if ex["paused"]
                  else ("[yellow]blocked[/] " + ex["blocked"] if ex.get("blocked") else "[green]on[/]"))
        t.add_row("bankroll", usd(ex.get("bankroll_ticks")))
        t.add_row("today P&L", usd(ex.get("today_pnl_ticks"), sign=True) + " [dim](equity since 00:00 UTC)[/]")
        t.add_row("orders", f"{ex['open_orders']} open · {ex['orders_sent']} sent since start")
        book_age = ex.get("freshest_book_age_s")
        newest = "—" if book_age is None else f"{book_age:.1f} s"
        t.add_row("books", f"{ex.get('fresh_books', 0)} fresh · newest {newest} old"
                  + (" · [yellow]waiting for fresh data[/]" if ex.get("waiting_for_fresh_data") else ""))
        failing = {k: v for k, v in (ex.get("jobs") or {}).items() if v.get("failing_in_a_row")}
        t.add_row("jobs", ", ".join(f"[red]{k}[/] ({v['last_error']})" for k, v in failing.items()) or "all ok")
        ob = ex.get("outbox") or {}
        t.add_row("ord.* outbox", f"{ob.get('unpublished', 0)} unpublished"
                  + (f" · [red]{ob['last_error']}[/]" if ob.get("failing_in_a_row") else ""))
        if (contract := ex.get("contract")) is not None:
            t.add_row("Kalshi API", f"[green]contract ok[/] · {contract.get('market')}" if contract.get("ok")
                      else "[red]CONTRACT MISMATCH[/]: " + "; ".join(contract.get("problems") or [])[:200])
    if res is None:
        t.add_row("resolver", f"[yellow]not answering[/]: {errors.get('resolver', '')}")
    else:
        c = res.get("counts") or {}
        t.add_row("resolver", f"{c.get('new', 0)} resolved · {c.get('scored', 0)} scored since start")
    out.print(t)
    if ex is not None and ex.get("decisions"):
        d = Table(title="decisions since start", title_justify="left")
        d.add_column("reason")
        d.add_column("count", justify="right")
        for k, v in sorted(ex["decisions"].items(), key=lambda kv: -kv[1]):
            d.add_row(k, str(v))
        out.print(d)


def positions(mode: str, rows: Sequence[dict[str, Any]]) -> None:
    """Open positions grouped by event: contracts, cost, the mark (best bid of the leg), unrealized and
    realized P&L, fees; a total line."""
    out = console()
    out.print(banner(mode, f"{len(rows)} open position(s)"))
    t = _table(("market", "l"), ("side", "l"), ("contracts", "r"), ("cost", "r"), ("mark", "r"), ("unreal.", "r"),
               ("real.", "r"))
    event = None
    for p in sorted(rows, key=lambda r: (r["event_ticker"], r["ticker"])):
        if p["event_ticker"] != event:
            event = p["event_ticker"]
            t.add_row(f"[bold]{event}[/]", "", "", "", "", "", "")
        t.add_row("  " + p["ticker"].removeprefix(event + "-"), "YES" if p["position"] > 0 else "NO",
                  contracts(abs(p["position"])), usd(p["cost_ticks"]), price(p.get("mark_ticks")),
                  usd(p.get("unrealized_pnl_ticks"), sign=True), usd(p["realized_pnl_ticks"], sign=True))
    if rows:
        unreal = [r.get("unrealized_pnl_ticks") for r in rows]
        t.add_row("[bold]total[/]", "", "", usd(sum(r["cost_ticks"] for r in rows)), "",
                  usd(sum(u for u in unreal if u is not None), sign=True),
                  usd(sum(r["realized_pnl_ticks"] for r in rows), sign=True))
    out.print(t)


def orders(mode: str, rows: Sequence[dict[str, Any]]) -> None:
    out = console()
    out.print(banner(mode, f"{len(rows)} order(s)"))
    t = _table(("market", "l"), ("buy", "l"), ("price", "r"), ("filled", "r"),
                      ("status", "l"), ("reason", "l"))
    for o in rows:
        t.add_row(o["ticker"], o["outcome_side"].upper(), price(leg_price(o["book_side"], o["yes_price"])),
                  f"{contracts(o['fill_count'])}/{contracts(o['initial_count'])}", o["status"], o.get("reason") or "")
    out.print(t)


def fills(mode: str, rows: Sequence[dict[str, Any]]) -> None:
    out = console()
    out.print(banner(mode, f"{len(rows)} fill(s)"))
    t = _table(("time (UTC)", "l"), ("market", "l"), ("buy", "l"), ("price", "r"),
                      ("contracts", "r"), ("fee", "r"), ("", "l"))
    for f in rows:
        t.add_row(str(f["filled_at"])[5:19].replace("T", " "), f["ticker"], f["outcome_side"].upper(),
                  price(outcome_price(f["outcome_side"], f["yes_price"])), contracts(f["count"]), usd(f["fee_ticks"]),
                  "taker" if f["is_taker"] else "maker")
    out.print(t)


def balance(mode: str, data: dict[str, Any]) -> None:
    console().print(banner(mode, f"balance {usd(data['balance_ticks'])} available"))


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[int], width: int = 60) -> str:
    """`values` as one line of block characters, at most `width` wide (evenly picked, first and last kept);
    a flat series is a flat line at the bottom."""
    n = len(values)
    if n > width >= 2:
        values = [values[i * (n - 1) // (width - 1)] for i in range(width)]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    top = len(SPARKS) - 1
    return "".join(SPARKS[0 if hi == lo else (v - lo) * top // (hi - lo)] for v in values)


def pnl(mode: str, data: dict[str, Any]) -> None:
    """The `pnl` answer: a summary line, the equity curve as a sparkline, P&L per UTC day, by family."""
    out = console()
    out.print(banner(mode, f"P&L over {data['window_days']} day(s) (UTC)"))
    out.print(f"today {usd(data.get('today_pnl_ticks'), sign=True)} · realized {usd(data['realized_ticks'], sign=True)}"
              f" · unrealized {usd(data['unrealized_ticks'], sign=True)} · fees {usd(data['fees_ticks'])}")
    out.print("[dim](all time; realized is after fees; deposits and withdrawals move equity too)[/]")
    curve = [p["equity_ticks"] for p in data.get("equity") or []]
    if curve:
        out.print(f"equity {sparkline(curve, WIDTH - 8)}")
        out.print(f"       low {usd(min(curve))} · high {usd(max(curve))} · last {usd(curve[-1])}"
                  + (f" at {data['as_of'][11:16]} UTC" if data.get("as_of") else ""))
    else:
        out.print("equity: no balance snapshots in this window yet")
    t = _table(("day (UTC)", "l"), ("start", "r"), ("end", "r"), ("P&L", "r"), ("realized", "r"), ("fees", "r"),
               ("fills", "r"), title="per day")
    for d in data["days"]:
        t.add_row(d["date"], usd(d["start_equity_ticks"]), usd(d["end_equity_ticks"]), usd(d["pnl_ticks"], sign=True),
                  usd(d["realized_ticks"], sign=True), usd(d["fees_ticks"]), str(d["fills"]))
    out.print(t)
    fams = data.get("by_family") or {}
    if not fams:
        out.print("no positions yet")
        return
    f = _table(("family", "l"), ("open", "r"), ("realized", "r"), ("unrealized", "r"), ("fees", "r"),
               title="by family (all time)")
    for name, row in fams.items():
        f.add_row(name, str(row["positions"]), usd(row["realized_ticks"], sign=True),
                  usd(row["unrealized_ticks"], sign=True), usd(row["fees_ticks"]))
    out.print(f)


STRATEGY_ROWS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("allocation", lambda s: num(s.get("allocation"), ".0%")),
    ("capital used", lambda s: usd(s.get("capital_used_ticks"))),
    ("capital cap", lambda s: usd(s.get("capital_cap_ticks"))),
    ("P&L", lambda s: usd(s.get("pnl_ticks"), sign=True)),
    ("  realized", lambda s: usd(s.get("realized_ticks"), sign=True)),
    ("  unrealized", lambda s: usd(s.get("unrealized_ticks"), sign=True)),
    ("fees", lambda s: usd(s.get("fees_ticks"))),
    ("fill rate", lambda s: num(s.get("fill_rate"), ".1%")),
    ("inventory (ct)", lambda s: contracts(s.get("inventory"))),
    ("open orders", lambda s: str(s.get("open_orders", 0))),
    ("adverse $/ct", lambda s: usd_per_contract(s.get("adverse_selection_ticks"))),
)


def strategies(mode: str, data: dict[str, Any]) -> None:
    """`kdesk strategies`: capital, P&L, fees, fill rate, inventory and adverse selection, one column a strategy
    (nine figures a strategy do not fit 80 columns as a row); then a line each for the maker and quick flip."""
    out = console()
    rows = data.get("strategies") or {}
    out.print(banner(mode, f"{len(rows)} strateg{'y' if len(rows) == 1 else 'ies'}"))
    if not rows:
        out.print("the executor reports no strategies")
        return
    t = _table(("", "l"), *((name, "r") for name in rows))
    for label, cell in STRATEGY_ROWS:
        t.add_row(f"[dim]{escape(label)}[/]" if label.startswith(" ") else escape(label),
                  *(cell(s) for s in rows.values()))
    out.print(t)
    out.print("[dim](P&L: realized after fees + unrealized at the bid · fill rate: filled / ordered)[/]")
    for note in (maker_note(rows.get("market_making") or {}), flip_note(rows.get("quick_flip") or {})):
        if note:
            out.print(f"[red]{escape(note)}[/]" if "KILL SWITCH" in note else escape(note))


def accuracy(mode: str, data: dict[str, Any]) -> None:
    out = console()
    fams = data.get("families") or {}
    out.print(banner(mode, f"accuracy over {data['days']:g} days"))
    if not fams:
        out.print("no resolved predictions in this window yet")
        return
    t = Table()
    for col in ("family", "n", "Brier", "market", "skill", "log loss", "hit", "P&L"):
        t.add_column(col, justify="left" if col == "family" else "right")
    for f, s in fams.items():
        t.add_row(f, str(s["n"]), num(s["brier"]), num(s["brier_market"]), num(s["brier_skill"], "+.3f"),
                  num(s["log_loss"], ".3f"), num(s["hit_rate"], ".0%") if s["hit_rate"] is not None else "—",
                  usd(s["pnl_ticks"], sign=True))
    out.print(t)
    for f, s in fams.items():
        calibration(out, f, s["bins"])


def calibration(out: Console, family: str, bins: Sequence[dict[str, Any]]) -> None:
    """Forecast vs observed per bin, with bars: a calibrated model's two bars match."""
    t = Table(title=f"{family}: calibration", title_justify="left")
    for col in ("forecast", "n", "mean p", "observed", ""):
        t.add_column(col, justify="left" if col in ("forecast", "") else "right")
    for b in bins:
        if not b["count"]:
            continue
        obs = b["observed"] or 0.0
        bar = "█" * round(obs * 20)
        t.add_row(f"{b['lo']:.0%}–{b['hi']:.0%}", str(b["count"]), num(b["mean_p"], ".2f"), num(obs, ".2f"), bar)
    out.print(t)


def orderbook(mode: str, book: Any, *, depth: int = 10) -> None:
    """YES bids beside NO bids, best first (Kalshi books hold bids only: a NO bid at q is a YES ask at $1 − q)."""
    from datetime import UTC, datetime

    out = console()
    book_age = (datetime.now(UTC) - book.ts_event).total_seconds()
    out.print(banner(mode, f"{book.ticker} · book {book_age:.1f} s old · seq {book.seq}"))
    t = Table()
    for col in ("YES bid", "contracts", "NO bid", "contracts "):
        t.add_column(col, justify="right")
    yes, no = list(reversed(book.yes_bids))[:depth], list(reversed(book.no_bids))[:depth]
    for i in range(max(len(yes), len(no))):
        y = yes[i] if i < len(yes) else None
        n = no[i] if i < len(no) else None
        t.add_row(price(y[0]) if y else "", contracts(y[1]) if y else "", price(n[0]) if n else "",
                  contracts(n[1]) if n else "")
    out.print(t)
    if yes and no:
        out.print(f"YES {price(yes[0][0])} bid / {price(ONE_DOLLAR - no[0][0])} ask")


def alerts(mode: str, rows: Sequence[Any]) -> None:
    out = console()
    out.print(banner(mode, f"last {len(rows)} alert(s)"))
    t = Table()
    for col in ("time (UTC)", "sev", "family", "what"):
        t.add_column(col, overflow="fold")
    colour = {"critical": "red", "warning": "yellow"}
    for a in rows:
        sev = f"[{colour.get(a.severity, 'dim')}]{a.severity}[/]"
        what = a.title + (f" — {a.detail}" if a.detail else "")
        t.add_row(a.ts_event.strftime("%m-%d %H:%M:%S"), sev, a.family, what)
    out.print(t)


def health(beats: Sequence[Any], silent: Sequence[str]) -> None:
    """Per service instance: status, heartbeat age, and each input that is stale (with its age)."""
    from datetime import UTC, datetime

    out = console()
    t = Table(title="services", title_justify="left")
    for col in ("service", "state", "beat", "stale inputs / detail"):
        t.add_column(col, overflow="fold")
    colour = {"ok": "green", "degraded": "yellow", "down": "red"}
    now = datetime.now(UTC)
    for b in sorted(beats, key=lambda b: (b.service, b.instance)):
        stale = [f"{k} {'never' if v.age_s is None else age(v.age_s)} old" for k, v in sorted(b.inputs.items())
                 if v.stale]
        note = ", ".join(stale) or (b.detail[:60] if b.status != "ok" else "")
        t.add_row(f"{b.service}/{b.instance}", f"[{colour.get(b.status, 'dim')}]{b.status}[/]",
                  age((now - b.ts_event).total_seconds()), note)
    for name in silent:
        t.add_row(name, "[red]silent[/]", "—", "no heartbeat: not running, or cannot reach NATS")
    out.print(t)


def signals(mode: str, rows: Sequence[dict[str, Any]]) -> None:
    out = console()
    out.print(banner(mode, f"last {len(rows)} signal(s)"))
    t = _table(("time", "l"), ("market", "l"), ("buy", "l"), ("model", "r"),
                      ("market", "r"), ("edge", "r"), ("what happened", "l"))
    for r in rows:
        side = {"buy_yes": "YES", "buy_no": "NO"}.get(r["action"] or "", r["action"] or "")
        status, reason = r["order_status"], r["reason"]
        what = "not decided yet" if status is None else f"declined: {reason}" if status == "blocked" \
            else status + (f" ({reason})" if reason else "")
        t.add_row(str(r["created_at"])[11:19], r["ticker"], side, num(r["model_prob"], ".2f"),
                  num(r["market_prob"], ".2f"), price(r["edge_maker_ticks"]), what)
    out.print(t)


def control(mode: str, data: dict[str, Any]) -> None:
    """The answer to pause / resume / flatten in one line."""
    if "canceled" in data:
        exits = len(data["exit_orders"])
        what = f"flattened: {data['canceled']} order(s) canceled, exit orders for {exits} position(s)"
    else:
        what = "PAUSED: no new orders, resting ones canceled" if data.get("paused") else "trading resumed"
    console().print(banner(mode, what))


def strike(strike_type: str | None, floor: Any, cap: Any) -> str:
    """A bracket's range in °F from Kalshi's strike fields (`greater`: above the floor; `less`: below the cap)."""
    def deg(x: Any) -> str:
        return f"{float(x):g}°"

    return {"less": lambda: f"< {deg(cap)}", "less_or_equal": lambda: f"≤ {deg(cap)}",
            "greater": lambda: f"> {deg(floor)}", "greater_or_equal": lambda: f"≥ {deg(floor)}",
            "between": lambda: f"{float(floor):g}–{deg(cap)}"}.get(strike_type or "", lambda: strike_type or "?")()


def forecast(mode: str, data: dict[str, Any]) -> None:
    """The `forecast` answer: the run and the observed max, members' maxima by model, the brackets beside the
    market (model probability, YES bid / ask, mid)."""
    out = console()
    out.print(banner(mode, f"forecast {data['city']} ({data['station']}) · {data['climate_date']}"))
    run = data.get("run")
    if run is None:
        out.print("ensemble: no run received yet")
    else:
        out.print(f"run {str(run['run_time'])[:16].replace('T', ' ')} UTC ({age(run['age_s'])} old) · "
                  f"{data['members']} member(s) for this day")
    obs, top = data.get("observed"), data.get("observed_max_f")
    if top is not None:
        last = f"{obs['temp_f']:g}°F " if obs.get("temp_f") is not None else ""
        out.print(f"observed max so far {top:g}°F · last report {last}at {str(obs['observed_at'])[11:16]} UTC "
                  f"({age(obs['age_s'])} old)")
    elif obs is not None and obs["climate_date"] != data["climate_date"]:
        out.print(f"observed: none for this day yet (the last report is for {obs['climate_date']})")
    else:
        out.print("observed: no report for this day yet")
    if data["models"]:
        t = _table(("model", "l"), ("members", "r"), ("min °F", "r"), ("mean °F", "r"), ("max °F", "r"),
                   title="ensemble members' daily max")
        for m in data["models"]:
            t.add_row(m["model"], str(m["members"]), f"{m['min_f']:.1f}", f"{m['mean_f']:.1f}", f"{m['max_f']:.1f}")
        out.print(t)
    else:
        out.print(f"no ensemble members for {data['climate_date']}")
    blend = data.get("blend")
    if blend:
        out.print(f"model: mean {num(blend['mean_f'], '.1f')}°F · sd {num(blend['sd_f'], '.1f')}°F · "
                  f"station bias {num(blend['bias_f'], '+.1f')}°F · confidence {num(blend['confidence'], '.2f')}")
    brackets = data["brackets"]
    if not brackets:
        out.print(f"no markets for {data['climate_date']}; dates known: {', '.join(data['dates']) or 'none'}")
        return
    t = _table(("bracket", "l"), ("market", "l"), ("model", "r"), ("YES bid", "r"), ("YES ask", "r"),
               ("mid", "r"), ("model−mid", "r"), title=" · ".join(data["events"]))
    for b in brackets:
        mp, mid = b["model_prob"], b["market_prob"]
        diff = num(mp - mid, "+.2f") if mp is not None and mid is not None else "—"
        t.add_row(strike(b["strike_type"], b["floor_strike"], b["cap_strike"]),
                  b["ticker"].removeprefix(b["event_ticker"] + "-"), num(mp, ".2f"), price(b["yes_bid_ticks"]),
                  price(b["yes_ask_ticks"]), num(mid, ".2f"), diff)
    out.print(t)
    if data.get("model_prob_sum") is not None:
        out.print(f"[dim]{len(brackets)} bracket(s); model probabilities sum to {data['model_prob_sum']:.3f}[/]")


def ws_status(mode: str, data: dict[str, Any]) -> None:
    """The `ws_status` answer: one row per connection of the feeds instance that answered, then their URLs."""
    out = console()
    conns = data["connections"]
    out.print(banner(mode, f"{len(conns)} connection(s) of feeds/{data['instance']}"))
    colour = {"connected": "green", "polling": "cyan", "reconnecting": "yellow", "connecting": "yellow"}
    t = _table(("venue", "l"), ("state", "l"), ("last message", "r"), ("reconnects", "r"),
               ("failing", "r"), ("messages", "r"))
    for c in conns:
        t.add_row(c["name"], f"[{colour.get(c['state'], 'red')}]{c['state']}[/]",
                  "never" if c["last_message_age_s"] is None else f"{age(c['last_message_age_s'])} ago",
                  str(c["reconnects"]), f"{c['failures_in_a_row']}×" if c.get("failures_in_a_row") else "",
                  f"{c['messages']:,}")
    out.print(t)
    for c in conns:
        out.print(f"[dim]{c['name']:<9} {c['kind']:<6} {c['url']}[/]", overflow="fold")
    if any(c.get("failures_in_a_row") for c in conns):
        out.print("[dim]failing: connection attempts failed in a row (the next waits longer, up to 30 s)[/]")


def mode_view(mode: str, data: dict[str, Any]) -> None:
    """`kdesk mode`: the desk's mode, the control bucket's mode and live arming, the executor's view."""
    out = console()
    out.print(banner(mode, "mode"))
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="dim")
    t.add_column(overflow="fold")
    t.add_row("desk mode", f"{data['desk_mode'].upper()} (KDESK_MODE of the running desk)")
    control = data.get("control_mode")
    if control is None:
        t.add_row("control mode", "not set: orders allowed in this mode")
    elif control == data["desk_mode"]:
        t.add_row("control mode", f"{control.upper()}: orders allowed in this mode")
    else:
        t.add_row("control mode", f"[yellow]{control.upper()}[/]: this {data['desk_mode'].upper()} desk places no new "
                  f"orders (mode_changed); restart it with KDESK_MODE={control} to trade there")
    until = data.get("live_armed_until")
    t.add_row("live", f"[red]armed[/] until {until[:16].replace('T', ' ')} UTC" if data.get("live_armed")
              else "not armed" + (f" (expired {until[:16].replace('T', ' ')} UTC)" if until else ""))
    ex = data.get("executor")
    if ex is None:
        t.add_row("executor", "[yellow]not answering[/]")
    else:
        t.add_row("executor", ("[yellow]blocked[/]: " + ex["blocked"] if ex.get("blocked") else "[green]trading[/]")
                  + f" · live {'allowed' if ex.get('allow_live') else 'not allowed'} (KDESK_ALLOW_LIVE)")
    out.print(t)
    if data.get("changed"):
        out.print(data["changed"])


__all__ = [
    "accuracy",
    "alerts",
    "balance",
    "banner",
    "contracts",
    "control",
    "fills",
    "forecast",
    "health",
    "mode_view",
    "orderbook",
    "orders",
    "pnl",
    "positions",
    "price",
    "signals",
    "sparkline",
    "status",
    "strategies",
    "strike",
    "usd",
    "ws_status",
]


def _cost(ticks: int | None) -> str:
    """LLM money: calls cost fractions of a cent, so four decimals."""
    return "—" if ticks is None else f"${ticks / ONE_DOLLAR:,.4f}"


def llm(mode: str, data: dict[str, Any]) -> None:
    """`kdesk llm`: the llm family's day — spend against the budget, the provider, the last decisions."""
    out = console()
    out.print(banner(mode, f"llm family · {data['day']} (UTC)"))
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="dim")
    t.add_column(overflow="fold")
    state = "[red]SPENT: analysis stopped until 00:00 UTC[/]" if data["budget_spent"] else "[green]open[/]"
    t.add_row("budget", f"{_cost(data['spent_ticks'])} spent of {_cost(data['budget_ticks'])} · "
              f"{_cost(data['remaining_ticks'])} left · {state}")
    calls = data.get("calls_today") or {}
    t.add_row("calls today", ", ".join(f"{n} {k}" for k, n in sorted(calls.items())) or "none")
    model = data["model"] + (f" (fallback {data['fallback_model']})" if data.get("fallback_model") else "")
    backoff = data.get("provider_backoff_s") or 0
    t.add_row("provider", model + (f" · [yellow]backing off {backoff:.0f} s[/]" if backoff else ""))
    cal = data.get("calibration") or {}
    t.add_row("calibration", f"Platt on {cal['n']} resolved forecasts (a {cal['a']}, b {cal['b']})" if cal.get("n")
              else "none yet (raw probabilities are used)")
    skipped = data.get("skipped") or {}
    t.add_row("skipped", ", ".join(f"{k} {n}" for k, n in skipped.items()) or "none")
    out.print(t)
    d = _table(("UTC", "l"), ("market", "l"), ("outcome", "l"), ("raw", "r"), ("p", "r"), ("action", "l"),
               ("cost", "r"), title="last analyses (p: calibrated, what was traded on)")
    for x in data.get("decisions") or []:
        d.add_row(x["ts"][11:16], x["ticker"], x["outcome"], num(x.get("p_raw"), ".2f"), num(x.get("p_model"), ".2f"),
                  x.get("action") or "", _cost(x.get("cost_ticks")))
    out.print(d)
    if not data.get("decisions"):
        out.print("[dim]no analyses by this instance yet[/]")
