"""Strategies (#17): every order, fill and position carries its strategy; capital per strategy and who holds each
market are kept running, and `kdesk_reserve` checks both.

`orders.strategy`, `fills.strategy` (its order's) and `positions.strategy` (default `directional`). Tables (models in
libs/common/db/executor.py): `risk_strategy_usage` (per mode and strategy: the capital in use — the cost of
the strategy's orders that are not reduce-only, as `risk_holdings` counts them, plus its open positions'
cost) and `risk_strategy_markets` (the same per market, with the buy orders that hold something and the
position: a market is held by the strategies with a row, so "is it another strategy's?" is one index probe).
Triggers of their own on `orders` and `positions` keep both exact under the mode's usage lock (0006's
lock and lock order; a strategy change of a row moves its holding). `kdesk_reserve` gets the order's
strategy and the strategy's cap (`cap_strategy`, after cap_portfolio) and refuses an order on a market
another strategy holds or works (`market_owned`, right after cap_order); reduce-only orders skip both.
`kdesk_reprice_usage` also returns the strategy's capital. The upgrade back-fills both tables from the rows;
the downgrade restores 0006's two functions.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from libs.common.db.base import in_check

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_v6 = importlib.import_module("libs.common.db.migrations.versions.0006_risk_usage")
USAGE_LOCK: str = _v6.USAGE_LOCK
OPEN: str = _v6.OPEN
# The strategies as of this revision (libs/common/strategies.py); a new one needs a migration of its own.
STRATEGIES = ("directional", "market_making", "quick_flip")

_MODES = "mode IN ('sim', 'paper', 'demo', 'live')"
_ORDER_HOLDING = ("kdesk_order_holding({r}.status, {r}.reduce_only, {r}.book_side, {r}.outcome_side, {r}.yes_price, "
                  "{r}.remaining_count, {r}.fill_count, {r}.booked_count)")
# An order row that holds something: open, or with fills the position does not hold yet (as in 0006).
_HOLDS = "({r}.status IN " + OPEN + " OR {r}.fill_count <> {r}.booked_count)"
_KEPT = ("mode", "ticker", "strategy", "status", "reduce_only", "book_side", "outcome_side", "yes_price",
         "remaining_count", "fill_count", "booked_count")  # what an order's strategy holding depends on
_POS_KEPT = ("mode", "ticker", "strategy", "position", "cost_ticks")


def _row(r: str, cols: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"{r}.{c}" for c in cols) + ")"


RESERVE_V6 = ("kdesk_reserve(text, text, text, text, bigint, text, text, text, text, text, text, bigint, bigint, "
              "text, boolean, boolean, bigint, bigint, bigint, bigint, boolean, bigint, bigint, bigint, bigint, "
              "bigint, bigint, timestamptz, timestamptz, boolean, bigint, boolean, boolean, text, numeric, numeric, "
              "text, text, jsonb)")
RESERVE_V7 = RESERVE_V6[:-1] + ", text, bigint)"
REPRICE_V6 = "kdesk_reprice_usage(text, text, text, text, bigint, bigint, bigint, text)"
REPRICE_V7 = REPRICE_V6[:-1] + ", text)"

FUNCTIONS = [
    """
CREATE FUNCTION kdesk_fills_strategy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.strategy := coalesce((SELECT o.strategy FROM orders o WHERE o.mode = NEW.mode AND o.order_id = NEW.order_id),
                             NEW.strategy);
    RETURN NEW;
END $$""",
    """
CREATE FUNCTION kdesk_orders_fills_strategy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE fills SET strategy = NEW.strategy
    WHERE mode = NEW.mode AND order_id = NEW.order_id AND strategy <> NEW.strategy;
    RETURN NULL;
END $$""",
    # Add a change of one strategy's holding on one market, under the mode's usage lock (as kdesk_risk_apply);
    # a market row that returns to nothing is removed.
    f"""
CREATE FUNCTION kdesk_strategy_apply(p_mode text, p_ticker text, p_strategy text, d_cost bigint, d_buys bigint,
                                     d_position bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m risk_strategy_markets;
BEGIN
    IF d_cost = 0 AND d_buys = 0 AND d_position = 0 THEN
        RETURN;
    END IF;
    {USAGE_LOCK.format(mode="p_mode")};
    INSERT INTO risk_strategy_markets AS r (mode, ticker, strategy, capital_ticks, open_buys, position)
    VALUES (p_mode, p_ticker, p_strategy, d_cost, d_buys, d_position)
    ON CONFLICT (mode, ticker, strategy) DO UPDATE SET
        capital_ticks = r.capital_ticks + EXCLUDED.capital_ticks, open_buys = r.open_buys + EXCLUDED.open_buys,
        position = r.position + EXCLUDED.position
    RETURNING * INTO m;
    IF m.capital_ticks = 0 AND m.open_buys = 0 AND m.position = 0 THEN
        DELETE FROM risk_strategy_markets WHERE mode = p_mode AND ticker = p_ticker AND strategy = p_strategy;
    END IF;
    IF d_cost <> 0 THEN
        INSERT INTO risk_strategy_usage AS u (mode, strategy, capital_ticks) VALUES (p_mode, p_strategy, d_cost)
        ON CONFLICT (mode, strategy) DO UPDATE SET capital_ticks = u.capital_ticks + EXCLUDED.capital_ticks;
    END IF;
END $$""",
    f"""
CREATE FUNCTION kdesk_orders_strategy() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    a record;
    b record;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        SELECT h.cost_ticks, h.open_buys INTO a FROM {_ORDER_HOLDING.format(r="OLD")} h;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        SELECT h.cost_ticks, h.open_buys INTO b FROM {_ORDER_HOLDING.format(r="NEW")} h;
    END IF;
    IF TG_OP = 'UPDATE' AND (OLD.mode, OLD.ticker, OLD.strategy) = (NEW.mode, NEW.ticker, NEW.strategy) THEN
        PERFORM kdesk_strategy_apply(NEW.mode, NEW.ticker, NEW.strategy, b.cost_ticks - a.cost_ticks,
                                     b.open_buys - a.open_buys, 0);
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        PERFORM kdesk_strategy_apply(OLD.mode, OLD.ticker, OLD.strategy, -a.cost_ticks, -a.open_buys, 0);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM kdesk_strategy_apply(NEW.mode, NEW.ticker, NEW.strategy, b.cost_ticks, b.open_buys, 0);
    END IF;
    RETURN NULL;
END $$""",
    """
CREATE FUNCTION kdesk_positions_strategy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.position <> 0 THEN
        PERFORM kdesk_strategy_apply(OLD.mode, OLD.ticker, OLD.strategy, -OLD.cost_ticks, 0, -OLD.position);
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.position <> 0 THEN
        PERFORM kdesk_strategy_apply(NEW.mode, NEW.ticker, NEW.strategy, NEW.cost_ticks, 0, NEW.position);
    END IF;
    RETURN NULL;
END $$""",
    # 0006's reservation with the strategy: its capital (u_strategy, the order included as if filled) against
    # p_max_strategy (NULL: no cap), and the market held or worked by another strategy (`market_owned`).
    f"""
CREATE FUNCTION kdesk_reserve(
    p_mode text, p_coid text, p_signal_id text, p_leg text, p_attempt bigint, p_family text, p_series text,
    p_event text, p_ticker text, p_book_side text, p_outcome_side text, p_yes_price bigint, p_count bigint,
    p_tif text, p_post_only boolean, p_reduce_only boolean,
    p_yes bigint, p_no bigint, p_cost bigint, p_amount bigint, p_check boolean,
    p_max_order bigint, p_max_market bigint, p_max_event bigint, p_max_family bigint, p_max_portfolio bigint,
    p_max_open_orders bigint, p_now timestamptz, p_expires timestamptz,
    p_send boolean, p_exchange_index bigint, p_only_if_flat boolean,
    p_learn_strike boolean, p_strike_type text, p_floor numeric, p_cap numeric,
    p_event_id text, p_subject text, p_message jsonb, p_strategy text, p_max_strategy bigint,
    OUT verdict text, OUT reason text, OUT status text, OUT u_market bigint, OUT u_event bigint,
    OUT u_family bigint, OUT u_portfolio bigint, OUT u_open_orders bigint, OUT u_strategy bigint)
LANGUAGE plpgsql AS $$
DECLARE
    busy boolean;
    owned boolean := false;
BEGIN
    -- The risk lock (replicas reserve one at a time), then the usage lock (no fill or cancel of the mode
    -- changes the totals while we read them; taken before the strike row, as sync_strikes takes it).
    PERFORM pg_advisory_xact_lock(hashtextextended('kdesk:risk:' || p_mode, 0));
    {USAGE_LOCK.format(mode="p_mode")};
    IF p_only_if_flat THEN
        -- The desk decided as if nothing were working or held on this leg, and nothing working on the other
        -- one (two replicas deciding opposite legs of one book update a moment apart): hold it to that.
        SELECT coalesce(sum(open_yes_orders + open_no_orders), 0) > 0
               OR coalesce(sum(position), 0) * (CASE WHEN p_outcome_side = 'yes' THEN 1 ELSE -1 END) > 0
        INTO busy FROM risk_holdings WHERE mode = p_mode AND ticker = p_ticker;
        IF busy THEN
            verdict := 'busy';
            RETURN;
        END IF;
    END IF;
    SELECT o.status INTO status FROM orders o WHERE o.mode = p_mode AND o.client_order_id = p_coid;
    IF FOUND THEN
        verdict := 'existing';
        RETURN;
    END IF;
    IF p_learn_strike THEN
        INSERT INTO risk_strikes AS s (mode, ticker, strike_type, floor_strike, cap_strike)
        VALUES (p_mode, p_ticker, p_strike_type, p_floor, p_cap)
        ON CONFLICT (mode, ticker) DO UPDATE SET strike_type = EXCLUDED.strike_type,
            floor_strike = EXCLUDED.floor_strike, cap_strike = EXCLUDED.cap_strike, updated_at = now()
        WHERE (s.strike_type, s.floor_strike, s.cap_strike)
              IS DISTINCT FROM (EXCLUDED.strike_type, EXCLUDED.floor_strike, EXCLUDED.cap_strike);
    END IF;
    SELECT * INTO u_market, u_event, u_family, u_portfolio, u_open_orders
    FROM kdesk_risk_usage(p_mode, p_event, p_ticker, p_family, p_yes, p_no, p_cost);
    u_strategy := coalesce((SELECT capital_ticks FROM risk_strategy_usage
                            WHERE mode = p_mode AND strategy = p_strategy), 0) + p_cost;
    IF p_check THEN
        -- At most two other strategies' rows under this market's key prefix: one probe, whatever the book.
        owned := EXISTS (SELECT 1 FROM risk_strategy_markets
                         WHERE mode = p_mode AND ticker = p_ticker AND strategy <> p_strategy
                           AND (open_buys > 0 OR capital_ticks <> 0 OR position <> 0));
        reason := CASE WHEN p_cost > p_max_order THEN 'cap_order'
                       WHEN owned THEN 'market_owned'
                       WHEN u_market > p_max_market THEN 'cap_market'
                       WHEN u_event > p_max_event THEN 'cap_event'
                       WHEN u_family > p_max_family THEN 'cap_family'
                       WHEN u_portfolio > p_max_portfolio THEN 'cap_portfolio'
                       WHEN u_strategy > p_max_strategy THEN 'cap_strategy'
                       WHEN u_open_orders > p_max_open_orders THEN 'cap_open_orders' END;
    END IF;
    status := CASE WHEN reason IS NOT NULL THEN 'blocked' WHEN p_send THEN 'pending' ELSE 'intent' END;
    INSERT INTO orders (mode, client_order_id, signal_id, leg, attempt, family, strategy, series_ticker,
                        event_ticker, ticker, book_side, outcome_side, yes_price, initial_count, remaining_count,
                        time_in_force, post_only, reduce_only, status, reason, sent_at, exchange_index)
    VALUES (p_mode, p_coid, p_signal_id, p_leg, p_attempt, p_family, p_strategy, p_series, p_event, p_ticker,
            p_book_side, p_outcome_side, p_yes_price, p_count, CASE WHEN reason IS NULL THEN p_count ELSE 0 END,
            p_tif, p_post_only, p_reduce_only, status, reason,
            CASE WHEN status = 'pending' THEN p_now END, CASE WHEN status = 'pending' THEN p_exchange_index END)
    ON CONFLICT (mode, client_order_id) DO NOTHING;
    IF NOT FOUND THEN  -- a decline was recorded for this id meanwhile (those are written outside the lock)
        SELECT o.status INTO status FROM orders o WHERE o.mode = p_mode AND o.client_order_id = p_coid;
        verdict := 'existing';
        reason := NULL;
        RETURN;
    END IF;
    IF reason IS NULL THEN
        INSERT INTO order_events (event_id, mode, client_order_id, ticker, kind, yes_price, count, fill_count,
                                  remaining_count, ts_event, subject, message)
        VALUES (p_event_id, p_mode, p_coid, p_ticker, 'intent', p_yes_price, p_count, 0, p_count, p_now,
                p_subject, p_message)
        ON CONFLICT (mode, event_id) DO NOTHING;
        INSERT INTO risk_reservations (mode, scope_kind, scope_key, client_order_id, amount_ticks, expires_at)
        VALUES (p_mode, 'order', p_ticker, p_coid, p_amount, p_expires),
               (p_mode, 'market', p_ticker, p_coid, p_amount, p_expires),
               (p_mode, 'event', p_event, p_coid, p_amount, p_expires),
               (p_mode, 'family', coalesce(p_family, ''), p_coid, p_amount, p_expires),
               (p_mode, 'portfolio', '', p_coid, p_amount, p_expires)
        ON CONFLICT (mode, client_order_id, scope_kind, scope_key) DO NOTHING;
        verdict := 'ok';
    ELSE  -- a decision not to trade: recorded, not announced on ord.*
        INSERT INTO order_events (event_id, mode, client_order_id, ticker, kind, yes_price, count, reason, ts_event)
        VALUES ('ord:' || p_coid || ':blocked', p_mode, p_coid, p_ticker, 'blocked', p_yes_price, p_count, reason,
                p_now)
        ON CONFLICT (mode, event_id) DO NOTHING;
        verdict := 'blocked';
    END IF;
END $$""",
    # The usage a reprice would reach, under the same locks (allows_reprice), with p_strategy's capital: the
    # excluded order's own cost leaves it when the order is that strategy's.
    f"""
CREATE FUNCTION kdesk_reprice_usage(p_mode text, p_event text, p_ticker text, p_family text,
                                    p_yes bigint, p_no bigint, p_cost bigint, p_exclude text, p_strategy text,
                                    OUT u_market bigint, OUT u_event bigint, OUT u_family bigint,
                                    OUT u_portfolio bigint, OUT u_open_orders bigint, OUT u_strategy bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('kdesk:risk:' || p_mode, 0));
    {USAGE_LOCK.format(mode="p_mode")};
    SELECT * INTO u_market, u_event, u_family, u_portfolio, u_open_orders
    FROM kdesk_risk_usage(p_mode, p_event, p_ticker, p_family, p_yes, p_no, p_cost, p_exclude);
    u_strategy := coalesce((SELECT capital_ticks FROM risk_strategy_usage
                            WHERE mode = p_mode AND strategy = p_strategy), 0) + p_cost
                  - coalesce((SELECT h.cost_ticks FROM orders o, {_ORDER_HOLDING.format(r="o")} h
                              WHERE o.mode = p_mode AND o.client_order_id = p_exclude
                                AND o.strategy = p_strategy), 0);
END $$""",
]

TRIGGERS = [
    f"""CREATE TRIGGER kdesk_orders_strategy_insert AFTER INSERT ON orders FOR EACH ROW
        WHEN {_HOLDS.format(r="NEW")} EXECUTE FUNCTION kdesk_orders_strategy()""",
    f"""CREATE TRIGGER kdesk_orders_strategy_update AFTER UPDATE ON orders FOR EACH ROW
        WHEN ({_row("OLD", _KEPT)} IS DISTINCT FROM {_row("NEW", _KEPT)}
              AND ({_HOLDS.format(r="OLD")} OR {_HOLDS.format(r="NEW")}))
        EXECUTE FUNCTION kdesk_orders_strategy()""",
    f"""CREATE TRIGGER kdesk_orders_strategy_delete AFTER DELETE ON orders FOR EACH ROW
        WHEN {_HOLDS.format(r="OLD")} EXECUTE FUNCTION kdesk_orders_strategy()""",
    """CREATE TRIGGER kdesk_positions_strategy_insert AFTER INSERT ON positions FOR EACH ROW
        WHEN (NEW.position <> 0) EXECUTE FUNCTION kdesk_positions_strategy()""",
    f"""CREATE TRIGGER kdesk_positions_strategy_update
        AFTER UPDATE OF {", ".join(_POS_KEPT)} ON positions FOR EACH ROW
        WHEN ((OLD.position <> 0 OR NEW.position <> 0)
              AND {_row("OLD", _POS_KEPT)} IS DISTINCT FROM {_row("NEW", _POS_KEPT)})
        EXECUTE FUNCTION kdesk_positions_strategy()""",
    """CREATE TRIGGER kdesk_positions_strategy_delete AFTER DELETE ON positions FOR EACH ROW
        WHEN (OLD.position <> 0) EXECUTE FUNCTION kdesk_positions_strategy()""",
    # A fill is its order's strategy's: stamped as it is stored, or when its order learns its exchange id
    # (a fill frame can arrive before the create's answer) — every path that writes either row.
    """CREATE TRIGGER kdesk_fills_strategy BEFORE INSERT ON fills FOR EACH ROW
        EXECUTE FUNCTION kdesk_fills_strategy()""",
    """CREATE TRIGGER kdesk_orders_fills_strategy_insert AFTER INSERT ON orders
        FOR EACH ROW WHEN (NEW.order_id IS NOT NULL) EXECUTE FUNCTION kdesk_orders_fills_strategy()""",
    """CREATE TRIGGER kdesk_orders_fills_strategy_update AFTER UPDATE OF order_id, strategy ON orders
        FOR EACH ROW WHEN (NEW.order_id IS NOT NULL
                           AND (OLD.order_id, OLD.strategy) IS DISTINCT FROM (NEW.order_id, NEW.strategy))
        EXECUTE FUNCTION kdesk_orders_fills_strategy()""",
]

# From the rows as they are (every one `directional` at this point, the columns' default).
_HELD = f"""
    SELECT o.mode, o.ticker, o.strategy, h.cost_ticks AS c, h.open_buys AS b, 0 AS p
    FROM orders o, {_ORDER_HOLDING.format(r="o")} h WHERE {_HOLDS.format(r="o")}
    UNION ALL
    SELECT mode, ticker, strategy, cost_ticks, 0, position FROM positions WHERE position <> 0"""
BACKFILL = [
    f"""
INSERT INTO risk_strategy_markets (mode, ticker, strategy, capital_ticks, open_buys, position)
SELECT mode, ticker, strategy, sum(c), sum(b), sum(p) FROM ({_HELD}) x
GROUP BY mode, ticker, strategy HAVING sum(c) <> 0 OR sum(b) <> 0 OR sum(p) <> 0""",
    f"""
INSERT INTO risk_strategy_usage (mode, strategy, capital_ticks)
SELECT mode, strategy, sum(c) FROM ({_HELD}) x GROUP BY mode, strategy""",
]

DROP = [
    "DROP TRIGGER IF EXISTS kdesk_orders_fills_strategy_update ON orders",
    "DROP TRIGGER IF EXISTS kdesk_orders_fills_strategy_insert ON orders",
    "DROP TRIGGER IF EXISTS kdesk_fills_strategy ON fills",
    "DROP FUNCTION IF EXISTS kdesk_orders_fills_strategy()",
    "DROP FUNCTION IF EXISTS kdesk_fills_strategy()",
    "DROP TRIGGER IF EXISTS kdesk_positions_strategy_delete ON positions",
    "DROP TRIGGER IF EXISTS kdesk_positions_strategy_update ON positions",
    "DROP TRIGGER IF EXISTS kdesk_positions_strategy_insert ON positions",
    "DROP TRIGGER IF EXISTS kdesk_orders_strategy_delete ON orders",
    "DROP TRIGGER IF EXISTS kdesk_orders_strategy_update ON orders",
    "DROP TRIGGER IF EXISTS kdesk_orders_strategy_insert ON orders",
    f"DROP FUNCTION IF EXISTS {REPRICE_V7}",
    f"DROP FUNCTION IF EXISTS {RESERVE_V7}",
    "DROP FUNCTION IF EXISTS kdesk_positions_strategy()",
    "DROP FUNCTION IF EXISTS kdesk_orders_strategy()",
    "DROP FUNCTION IF EXISTS kdesk_strategy_apply(text, text, text, bigint, bigint, bigint)",
]


def _zero(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False)


def _strategy_column() -> sa.Column:
    return sa.Column("strategy", sa.String(), server_default=sa.text("'directional'"), nullable=False)


def _run(sql: str) -> None:
    # As written: no bind parameters; psycopg still reads '%' as a placeholder.
    op.get_bind().exec_driver_sql(sql.replace("%", "%%"))


def upgrade() -> None:
    # No order or position may change between the back-fill and the triggers taking over.
    op.execute("LOCK TABLE orders, positions, fills IN EXCLUSIVE MODE")
    for table in ("orders", "positions", "fills"):
        op.add_column(table, _strategy_column())
        op.create_check_constraint(op.f(f"ck_{table}_strategy"), table, in_check("strategy", STRATEGIES, "strategy")
                                   .sqltext)
    op.create_table(
        "risk_strategy_usage",
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("strategy", sa.String(), nullable=False),
        _zero("capital_ticks"),
        sa.CheckConstraint(_MODES, name=op.f("ck_risk_strategy_usage_mode")),
        sa.PrimaryKeyConstraint("mode", "strategy", name=op.f("pk_risk_strategy_usage")),
    )
    op.create_table(
        "risk_strategy_markets",
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("ticker", sa.String(), nullable=False),
        sa.Column("strategy", sa.String(), nullable=False),
        *(_zero(c) for c in ("capital_ticks", "open_buys", "position")),
        sa.CheckConstraint(_MODES, name=op.f("ck_risk_strategy_markets_mode")),
        sa.PrimaryKeyConstraint("mode", "ticker", "strategy", name=op.f("pk_risk_strategy_markets")),
    )
    op.execute(f"DROP FUNCTION {REPRICE_V6}")
    op.execute(f"DROP FUNCTION {RESERVE_V6}")
    for sql in (*FUNCTIONS, *BACKFILL, *TRIGGERS):
        _run(sql)


def _v6_function(name: str) -> str:
    (sql,) = (f for f in _v6.FUNCTIONS if f.lstrip().startswith(f"CREATE FUNCTION {name}("))
    return sql


def downgrade() -> None:
    for sql in DROP:
        op.execute(sql)
    _run(_v6_function("kdesk_reserve"))
    _run(_v6_function("kdesk_reprice_usage"))
    op.drop_table("risk_strategy_markets")
    op.drop_table("risk_strategy_usage")
    for table in ("fills", "positions", "orders"):
        op.drop_constraint(op.f(f"ck_{table}_strategy"), table, type_="check")
        op.drop_column(table, "strategy")
