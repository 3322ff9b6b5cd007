"""Running risk usage kept by PostgreSQL itself, and the one-statement reservation `kdesk_reserve`.

Tables (models in libs/common/db/executor.py): `risk_strikes` (what event netting needs, written by the
executor as it learns market definitions), `risk_holdings` (per mode, ticker, family and event: what open
buy orders would hold if filled, plus the position), `risk_event_usage` (an event's netted worst loss per
family), `risk_family_usage` and `risk_mode_usage` (open orders, gross); and `orders.booked_count` (how
much of an order's fill_count the ledger's position holds: the rest still counts with the order). Triggers
on `orders`, `positions` and `risk_strikes` keep them exact in the transaction of every change, whichever
code path writes it (reservations, fills, cancels, amends, reconciliation, settlement). The algorithm and
the locking are explained in services/executor/risk.py; `kdesk_event_exposure` is exposure.py's
`event_exposure` as a sweep over the event's own rows. Functions and triggers exist only here (the models
hold the tables); the upgrade back-fills every total from the rows as they are.

Revision ID: 0006
Revises: 0005 (0005 is the llm family's llm_calls)
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MODES = "mode IN ('sim', 'paper', 'demo', 'live')"
OPEN = "('intent', 'pending', 'resting')"
# The mode's usage lock: every change to a mode's running usage happens under it, one transaction at a time
# (several triggers fire in one transaction — an order's and its position's in a fill — so row locks alone
# could be taken in different orders by different transactions). Held to the end of the transaction.
USAGE_LOCK = "PERFORM pg_advisory_xact_lock(hashtextextended('kdesk:risk-usage:' || {mode}, 0))"

FUNCTIONS = [
    # cost(count, price, rounding="up") of libs/common/money.py: count x price / 100, rounded toward +inf.
    """
CREATE FUNCTION kdesk_cost(p_count bigint, p_price bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_count * p_price >= 0 THEN (p_count * p_price + 99) / 100
                ELSE -((-(p_count * p_price)) / 100) END
$$""",
    # Holding.worst(): the larger loss of the two outcomes, 0 if neither loses ($1 = 100 x 1/100 contract).
    """
CREATE FUNCTION kdesk_worst(p_yes numeric, p_no numeric, p_cost numeric) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT greatest(0, p_cost - 100 * p_yes, p_cost - 100 * p_no)::bigint
$$""",
    # What one order row holds (not reduce-only): its remaining count while open, plus the fills the venue
    # reported that the position does not hold yet (fill_count - booked_count) — an order answered
    # `executed` before its fills are booked still counts — all as if filled at its limit; and the
    # counters. A market "counts" (open_buys) while such an order is open or still holds something.
    f"""
CREATE FUNCTION kdesk_order_holding(p_status text, p_reduce_only boolean, p_book_side text, p_outcome_side text,
                                    p_yes_price bigint, p_remaining bigint, p_fill_count bigint,
                                    p_booked_count bigint,
                                    OUT yes_count bigint, OUT no_count bigint, OUT cost_ticks bigint,
                                    OUT open_buys bigint, OUT open_yes_orders bigint, OUT open_no_orders bigint,
                                    OUT open_orders bigint)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN b AND p_book_side = 'bid' THEN n ELSE 0 END,
           CASE WHEN b AND p_book_side <> 'bid' THEN n ELSE 0 END,
           CASE WHEN b THEN kdesk_cost(n, CASE WHEN p_book_side = 'bid' THEN p_yes_price
                                               ELSE 10000 - p_yes_price END) ELSE 0 END,
           b::int, (o AND p_outcome_side = 'yes')::int, (o AND p_outcome_side = 'no')::int, o::int
    FROM (SELECT o, n, NOT p_reduce_only AND (o OR n > 0) AS b
          FROM (SELECT o, CASE WHEN p_reduce_only THEN 0
                               ELSE greatest(0, CASE WHEN o THEN p_remaining ELSE 0 END
                                                + p_fill_count - p_booked_count) END AS n
                FROM (SELECT p_status IN {OPEN} AS o) s1) s2) f
$$""",
    # exposure.py's event_exposure over one event's holdings (one family, or all when p_family is NULL),
    # plus an optional extra holding on p_ticker (the order being reserved, or a reprice's difference).
    # A market counts when it has an open buy order or a position (as `_usage` built its holdings), the
    # extra market always. pnl(x) = sum(100 no - cost) + sum over markets whose YES wins at x of
    # 100 (yes - no); every strike rule is "x > v" or "x >= v" edges, so one window sum over the sorted
    # candidates (each strike, +-0.0001, beyond both ends) and edges gives pnl at every candidate.
    # plpgsql, not sql: a SQL function's query is planned on every call, a plpgsql one once per connection.
    """
CREATE FUNCTION kdesk_event_exposure(p_mode text, p_event text, p_family text, p_ticker text DEFAULT NULL,
                                     p_yes bigint DEFAULT 0, p_no bigint DEFAULT 0, p_cost bigint DEFAULT 0)
RETURNS bigint LANGUAGE plpgsql STABLE AS $$
BEGIN
RETURN (WITH h AS (
    SELECT ticker, sum(y) AS y, sum(n) AS n, sum(c) AS c
    FROM (SELECT ticker, yes_count AS y, no_count AS n, cost_ticks AS c FROM risk_holdings
          WHERE mode = p_mode AND event_ticker = p_event AND (p_family IS NULL OR family = p_family)
            AND (open_buys > 0 OR position <> 0)
          UNION ALL
          SELECT p_ticker, p_yes, p_no, p_cost WHERE p_ticker IS NOT NULL) u
    GROUP BY ticker),
k AS (
    SELECT h.ticker, h.y, h.n, h.c, s.strike_type AS st, s.floor_strike AS lo, s.cap_strike AS hi,
           coalesce((s.strike_type IN ('greater', 'greater_or_equal') AND s.floor_strike IS NOT NULL)
                    OR (s.strike_type IN ('less', 'less_or_equal') AND s.cap_strike IS NOT NULL)
                    OR (s.strike_type = 'between' AND s.floor_strike IS NOT NULL AND s.cap_strike IS NOT NULL),
                    false) AS valid
    -- One primary-key probe per market: never a scan of every strike, whatever the statistics say (the
    -- LIMIT keeps the planner from flattening the LATERAL into a join over the whole table).
    FROM h CROSS JOIN LATERAL (SELECT strike_type, floor_strike, cap_strike FROM risk_strikes
                               WHERE mode = p_mode AND ticker = h.ticker LIMIT 1) s
    WHERE s.strike_type IS NOT NULL AND (s.floor_strike IS NOT NULL OR s.cap_strike IS NOT NULL)),
pts AS (SELECT lo AS p FROM k WHERE lo IS NOT NULL UNION SELECT hi FROM k WHERE hi IS NOT NULL),
cand AS (SELECT p + d AS v FROM pts, (VALUES (-0.0001), (0.0), (0.0001)) e(d)
         UNION ALL SELECT min(p) - 1 FROM pts UNION ALL SELECT max(p) + 1 FROM pts),
edges AS (
    SELECT lo AS v, 2 AS prio, 100 * (y - n) AS d FROM k WHERE st = 'greater'
    UNION ALL SELECT lo, 0, 100 * (y - n) FROM k WHERE st = 'greater_or_equal'
    UNION ALL SELECT hi, 0, -100 * (y - n) FROM k WHERE st = 'less'
    UNION ALL SELECT hi, 2, -100 * (y - n) FROM k WHERE st = 'less_or_equal'
    UNION ALL SELECT lo, 0, 100 * (y - n) FROM k WHERE st = 'between' AND lo <= hi
    UNION ALL SELECT hi, 2, -100 * (y - n) FROM k WHERE st = 'between' AND lo <= hi),
sweep AS (
    SELECT prio, sum(d) OVER (ORDER BY v, prio ROWS UNBOUNDED PRECEDING) AS run
    FROM (SELECT v, 1 AS prio, 0::numeric AS d FROM cand UNION ALL SELECT v, prio, d FROM edges) x)
SELECT (CASE
    WHEN NOT EXISTS (SELECT 1 FROM k) OR EXISTS (SELECT 1 FROM k WHERE NOT valid)
        THEN (SELECT coalesce(sum(kdesk_worst(y, n, c)), 0) FROM h)
    ELSE (SELECT coalesce(sum(kdesk_worst(y, n, c)), 0) FROM h WHERE ticker NOT IN (SELECT ticker FROM k))
         + greatest(0, -((SELECT sum(100 * n - c) + coalesce(sum(100 * (y - n))
                                                              FILTER (WHERE st IN ('less', 'less_or_equal')), 0)
                          FROM k)
                         + (SELECT min(run) FROM sweep WHERE prio = 1)))
    END)::bigint);
END $$""",
    # Lock one (event, family) exposure row (created at 0 when missing) and return its value.
    """
CREATE FUNCTION kdesk_risk_lock_event(p_mode text, p_event text, p_family text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    x bigint;
BEGIN
    LOOP
        SELECT exposure_ticks INTO x FROM risk_event_usage
        WHERE mode = p_mode AND event_ticker = p_event AND family = p_family FOR UPDATE;
        IF FOUND THEN
            RETURN x;
        END IF;
        INSERT INTO risk_event_usage (mode, event_ticker, family) VALUES (p_mode, p_event, p_family)
        ON CONFLICT DO NOTHING;
    END LOOP;
END $$""",
    # Recompute one (event, family) exposure, its row locked (by the caller, who passes the value it
    # read, or here), and move the family total by the change.
    """
CREATE FUNCTION kdesk_risk_refresh_event(p_mode text, p_event text, p_family text, p_old bigint DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    old_x bigint := coalesce(p_old, kdesk_risk_lock_event(p_mode, p_event, p_family));
    new_x bigint;
BEGIN
    -- A new statement, so a new snapshot (READ COMMITTED): every holding committed before we got the
    -- lock is seen, and a transaction changing this event after us waits for the lock, then recomputes.
    new_x := kdesk_event_exposure(p_mode, p_event, p_family);
    IF new_x <> old_x THEN
        UPDATE risk_event_usage SET exposure_ticks = new_x
        WHERE mode = p_mode AND event_ticker = p_event AND family = p_family;
        INSERT INTO risk_family_usage AS f (mode, family, exposure_ticks) VALUES (p_mode, p_family, new_x - old_x)
        ON CONFLICT (mode, family) DO UPDATE SET exposure_ticks = f.exposure_ticks + EXCLUDED.exposure_ticks;
    END IF;
END $$""",
    # Add a change of one holding: the counters, the event and the mode totals, under the mode's usage
    # lock; a holding that returns to nothing is removed.
    f"""
CREATE FUNCTION kdesk_risk_apply(p_mode text, p_ticker text, p_family text, p_event text,
                                 d_yes bigint, d_no bigint, d_cost bigint, d_buys bigint, d_open_yes bigint,
                                 d_open_no bigint, d_orders bigint, d_position bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    h risk_holdings;
    moves boolean := d_yes <> 0 OR d_no <> 0 OR d_cost <> 0 OR d_buys <> 0 OR d_position <> 0;
    old_x bigint;
BEGIN
    IF NOT moves AND d_open_yes = 0 AND d_open_no = 0 AND d_orders = 0 THEN
        RETURN;
    END IF;
    {USAGE_LOCK.format(mode="p_mode")};
    IF moves THEN
        old_x := kdesk_risk_lock_event(p_mode, p_event, p_family);
    END IF;
    INSERT INTO risk_holdings AS r (mode, ticker, family, event_ticker, yes_count, no_count, cost_ticks, open_buys,
                                    open_yes_orders, open_no_orders, position)
    VALUES (p_mode, p_ticker, p_family, p_event, d_yes, d_no, d_cost, d_buys, d_open_yes, d_open_no, d_position)
    ON CONFLICT (mode, ticker, family, event_ticker) DO UPDATE SET
        yes_count = r.yes_count + EXCLUDED.yes_count, no_count = r.no_count + EXCLUDED.no_count,
        cost_ticks = r.cost_ticks + EXCLUDED.cost_ticks, open_buys = r.open_buys + EXCLUDED.open_buys,
        open_yes_orders = r.open_yes_orders + EXCLUDED.open_yes_orders,
        open_no_orders = r.open_no_orders + EXCLUDED.open_no_orders, position = r.position + EXCLUDED.position
    RETURNING * INTO h;
    IF h.yes_count = 0 AND h.no_count = 0 AND h.cost_ticks = 0 AND h.open_buys = 0 AND h.open_yes_orders = 0
       AND h.open_no_orders = 0 AND h.position = 0 THEN
        DELETE FROM risk_holdings
        WHERE mode = p_mode AND ticker = p_ticker AND family = p_family AND event_ticker = p_event;
    END IF;
    IF moves THEN
        PERFORM kdesk_risk_refresh_event(p_mode, p_event, p_family, old_x);
    END IF;
    IF d_cost <> 0 OR d_orders <> 0 THEN
        INSERT INTO risk_mode_usage AS m (mode, open_orders, gross_ticks) VALUES (p_mode, d_orders, d_cost)
        ON CONFLICT (mode) DO UPDATE SET open_orders = m.open_orders + EXCLUDED.open_orders,
                                         gross_ticks = m.gross_ticks + EXCLUDED.gross_ticks;
    END IF;
END $$""",
    # booked_count: what the order's fills in the ledger add up to (apply_fill inserts a fill, then
    # touches its order row; a row that learns its exchange id later is caught up then).
    """
CREATE FUNCTION kdesk_orders_booked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.booked_count := (SELECT coalesce(sum(f.count), 0) FROM fills f
                         WHERE f.order_id = NEW.order_id AND f.mode = NEW.mode);
    RETURN NEW;
END $$""",
    """
CREATE FUNCTION kdesk_orders_risk() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    a record;
    b record;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        SELECT * INTO a FROM kdesk_order_holding(OLD.status, OLD.reduce_only, OLD.book_side, OLD.outcome_side,
                                                 OLD.yes_price, OLD.remaining_count, OLD.fill_count,
                                                 OLD.booked_count);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        SELECT * INTO b FROM kdesk_order_holding(NEW.status, NEW.reduce_only, NEW.book_side, NEW.outcome_side,
                                                 NEW.yes_price, NEW.remaining_count, NEW.fill_count,
                                                 NEW.booked_count);
    END IF;
    IF TG_OP = 'UPDATE' AND (OLD.mode, OLD.ticker, coalesce(OLD.family, ''), OLD.event_ticker)
                          = (NEW.mode, NEW.ticker, coalesce(NEW.family, ''), NEW.event_ticker) THEN
        PERFORM kdesk_risk_apply(NEW.mode, NEW.ticker, coalesce(NEW.family, ''), NEW.event_ticker,
                                 b.yes_count - a.yes_count, b.no_count - a.no_count, b.cost_ticks - a.cost_ticks,
                                 b.open_buys - a.open_buys, b.open_yes_orders - a.open_yes_orders,
                                 b.open_no_orders - a.open_no_orders, b.open_orders - a.open_orders, 0);
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        PERFORM kdesk_risk_apply(OLD.mode, OLD.ticker, coalesce(OLD.family, ''), OLD.event_ticker,
                                 -a.yes_count, -a.no_count, -a.cost_ticks, -a.open_buys, -a.open_yes_orders,
                                 -a.open_no_orders, -a.open_orders, 0);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM kdesk_risk_apply(NEW.mode, NEW.ticker, coalesce(NEW.family, ''), NEW.event_ticker,
                                 b.yes_count, b.no_count, b.cost_ticks, b.open_buys, b.open_yes_orders,
                                 b.open_no_orders, b.open_orders, 0);
    END IF;
    RETURN NULL;
END $$""",
    """
CREATE FUNCTION kdesk_positions_risk() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.position <> 0 THEN
        PERFORM kdesk_risk_apply(OLD.mode, OLD.ticker, coalesce(OLD.family, ''), OLD.event_ticker,
                                 -greatest(OLD.position, 0), -greatest(-OLD.position, 0), -OLD.cost_ticks,
                                 0, 0, 0, 0, -OLD.position);
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.position <> 0 THEN
        PERFORM kdesk_risk_apply(NEW.mode, NEW.ticker, coalesce(NEW.family, ''), NEW.event_ticker,
                                 greatest(NEW.position, 0), greatest(-NEW.position, 0), NEW.cost_ticks,
                                 0, 0, 0, 0, NEW.position);
    END IF;
    RETURN NULL;
END $$""",
    # A strike learned or changed: every (event, family) holding that market is recomputed.
    f"""
CREATE FUNCTION kdesk_strikes_risk() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    {USAGE_LOCK.format(mode="NEW.mode")};
    FOR r IN SELECT DISTINCT event_ticker, family FROM risk_holdings
             WHERE mode = NEW.mode AND ticker = NEW.ticker ORDER BY event_ticker, family LOOP
        PERFORM kdesk_risk_refresh_event(NEW.mode, r.event_ticker, r.family);
    END LOOP;
    RETURN NULL;
END $$""",
    # Usage in every scope with a holding change (yes, no, cost) on p_ticker included, and optionally
    # one open order left out (a reprice: the order at its old price gives way to itself at the new one).
    """
CREATE FUNCTION kdesk_risk_usage(p_mode text, p_event text, p_ticker text, p_family text,
                                 p_yes bigint, p_no bigint, p_cost bigint, p_exclude text DEFAULT NULL,
                                 OUT u_market bigint, OUT u_event bigint, OUT u_family bigint,
                                 OUT u_portfolio bigint, OUT u_open_orders bigint)
LANGUAGE plpgsql AS $$
DECLARE
    fam text := coalesce(p_family, '');
    x record;
    dy bigint := p_yes;
    dn bigint := p_no;
    dc bigint := p_cost;
    gone bigint := 0;
BEGIN
    IF p_exclude IS NOT NULL THEN
        SELECT o.ticker, o.event_ticker, coalesce(o.family, '') AS family, h.* INTO x
        FROM orders o, kdesk_order_holding(o.status, o.reduce_only, o.book_side, o.outcome_side, o.yes_price,
                                           o.remaining_count, o.fill_count, o.booked_count) h
        WHERE o.mode = p_mode AND o.client_order_id = p_exclude;
        IF FOUND THEN
            IF (x.ticker, x.event_ticker, x.family) <> (p_ticker, p_event, fam) THEN
                RAISE EXCEPTION 'kdesk_risk_usage: order % is on %/%/%, not on %/%/%', p_exclude, x.ticker,
                    x.event_ticker, x.family, p_ticker, p_event, fam;
            END IF;
            dy := dy - x.yes_count;
            dn := dn - x.no_count;
            dc := dc - x.cost_ticks;
            gone := x.open_orders;
        END IF;
    END IF;
    SELECT kdesk_worst(coalesce(sum(yes_count), 0) + dy, coalesce(sum(no_count), 0) + dn,
                       coalesce(sum(cost_ticks), 0) + dc) INTO u_market
    FROM risk_holdings WHERE mode = p_mode AND ticker = p_ticker;
    u_event := kdesk_event_exposure(p_mode, p_event, NULL, p_ticker, dy, dn, dc);
    -- The event's exposure for the family alone is the same number when no other family holds in it.
    SELECT coalesce((SELECT exposure_ticks FROM risk_family_usage WHERE mode = p_mode AND family = fam), 0)
           - coalesce((SELECT exposure_ticks FROM risk_event_usage
                       WHERE mode = p_mode AND event_ticker = p_event AND family = fam), 0)
           + CASE WHEN EXISTS (SELECT 1 FROM risk_holdings WHERE mode = p_mode AND event_ticker = p_event
                                                            AND family <> fam)
                  THEN kdesk_event_exposure(p_mode, p_event, fam, p_ticker, dy, dn, dc) ELSE u_event END,
           coalesce(m.gross_ticks, 0) + dc, coalesce(m.open_orders, 0) - gone + 1
    INTO u_family, u_portfolio, u_open_orders
    FROM (SELECT 1) one LEFT JOIN risk_mode_usage m ON m.mode = p_mode;
END $$""",
    # The reservation, in one statement: lock, guard, prior decision, usage, caps, the order row (`intent`,
    # `pending` when the caller sends it right away, or `blocked`), its outbox event and reservations.
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
    p_event_id text, p_subject text, p_message jsonb,
    OUT verdict text, OUT reason text, OUT status text, OUT u_market bigint, OUT u_event bigint,
    OUT u_family bigint, OUT u_portfolio bigint, OUT u_open_orders bigint)
LANGUAGE plpgsql AS $$
DECLARE
    busy boolean;
BEGIN
    -- The risk lock (replicas reserve one at a time), then the usage lock (no fill or cancel of the mode
    -- changes the totals while we read them; taken before the strike row, as sync_strikes takes it).
    PERFORM pg_advisory_xact_lock(hashtextextended('kdesk:risk:' || p_mode, 0));
    {USAGE_LOCK.format(mode="p_mode")};
    IF p_only_if_flat THEN
        -- The desk decided as if nothing were working or held on this leg: hold it to that.
        SELECT coalesce(sum(CASE WHEN p_outcome_side = 'yes' THEN open_yes_orders ELSE open_no_orders END), 0) > 0
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
    IF p_check THEN
        reason := CASE WHEN p_cost > p_max_order THEN 'cap_order'
                       WHEN u_market > p_max_market THEN 'cap_market'
                       WHEN u_event > p_max_event THEN 'cap_event'
                       WHEN u_family > p_max_family THEN 'cap_family'
                       WHEN u_portfolio > p_max_portfolio THEN 'cap_portfolio'
                       WHEN u_open_orders > p_max_open_orders THEN 'cap_open_orders' END;
    END IF;
    status := CASE WHEN reason IS NOT NULL THEN 'blocked' WHEN p_send THEN 'pending' ELSE 'intent' END;
    INSERT INTO orders (mode, client_order_id, signal_id, leg, attempt, family, series_ticker, event_ticker, ticker,
                        book_side, outcome_side, yes_price, initial_count, remaining_count, time_in_force,
                        post_only, reduce_only, status, reason, sent_at, exchange_index)
    VALUES (p_mode, p_coid, p_signal_id, p_leg, p_attempt, p_family, p_series, p_event, p_ticker, p_book_side,
            p_outcome_side, p_yes_price, p_count, CASE WHEN reason IS NULL THEN p_count ELSE 0 END, p_tif,
            p_post_only, p_reduce_only, status, reason,
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
    # The usage a reprice would reach, under the same locks (allows_reprice).
    f"""
CREATE FUNCTION kdesk_reprice_usage(p_mode text, p_event text, p_ticker text, p_family text,
                                    p_yes bigint, p_no bigint, p_cost bigint, p_exclude text,
                                    OUT u_market bigint, OUT u_event bigint, OUT u_family bigint,
                                    OUT u_portfolio bigint, OUT u_open_orders bigint)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('kdesk:risk:' || p_mode, 0));
    {USAGE_LOCK.format(mode="p_mode")};
    SELECT * INTO u_market, u_event, u_family, u_portfolio, u_open_orders
    FROM kdesk_risk_usage(p_mode, p_event, p_ticker, p_family, p_yes, p_no, p_cost, p_exclude);
END $$""",
]

# An order row that holds something: open, or with fills the position does not hold yet.
_HOLDS = "({r}.status IN " + OPEN + " OR {r}.fill_count <> {r}.booked_count)"
_KEPT = ("mode", "ticker", "event_ticker", "family", "status", "reduce_only", "book_side", "outcome_side",
         "yes_price", "remaining_count", "fill_count", "booked_count")  # what an order's holding depends on


def _row(r: str) -> str:
    return "(" + ", ".join(f"{r}.{c}" for c in _KEPT) + ")"


TRIGGERS = [
    """CREATE TRIGGER kdesk_orders_booked BEFORE INSERT OR UPDATE ON orders FOR EACH ROW
        WHEN (NEW.order_id IS NOT NULL) EXECUTE FUNCTION kdesk_orders_booked()""",
    f"""CREATE TRIGGER kdesk_orders_risk_insert AFTER INSERT ON orders FOR EACH ROW
        WHEN {_HOLDS.format(r="NEW")} EXECUTE FUNCTION kdesk_orders_risk()""",
    # Not `UPDATE OF columns`: booked_count is set by the BEFORE trigger, never named in the statement.
    f"""CREATE TRIGGER kdesk_orders_risk_update AFTER UPDATE ON orders FOR EACH ROW
        WHEN ({_row("OLD")} IS DISTINCT FROM {_row("NEW")}
              AND ({_HOLDS.format(r="OLD")} OR {_HOLDS.format(r="NEW")}))
        EXECUTE FUNCTION kdesk_orders_risk()""",
    f"""CREATE TRIGGER kdesk_orders_risk_delete AFTER DELETE ON orders FOR EACH ROW
        WHEN {_HOLDS.format(r="OLD")} EXECUTE FUNCTION kdesk_orders_risk()""",
    """CREATE TRIGGER kdesk_positions_risk_insert AFTER INSERT ON positions FOR EACH ROW
        WHEN (NEW.position <> 0) EXECUTE FUNCTION kdesk_positions_risk()""",
    """CREATE TRIGGER kdesk_positions_risk_update
        AFTER UPDATE OF mode, ticker, event_ticker, family, position, cost_ticks ON positions FOR EACH ROW
        WHEN (OLD.position <> 0 OR NEW.position <> 0) EXECUTE FUNCTION kdesk_positions_risk()""",
    """CREATE TRIGGER kdesk_positions_risk_delete AFTER DELETE ON positions FOR EACH ROW
        WHEN (OLD.position <> 0) EXECUTE FUNCTION kdesk_positions_risk()""",
    """CREATE TRIGGER kdesk_strikes_risk_insert AFTER INSERT ON risk_strikes FOR EACH ROW
        EXECUTE FUNCTION kdesk_strikes_risk()""",
    """CREATE TRIGGER kdesk_strikes_risk_update AFTER UPDATE ON risk_strikes FOR EACH ROW
        WHEN ((OLD.strike_type, OLD.floor_strike, OLD.cap_strike)
              IS DISTINCT FROM (NEW.strike_type, NEW.floor_strike, NEW.cap_strike))
        EXECUTE FUNCTION kdesk_strikes_risk()""",
]

# From the rows as they are: holdings, mode totals, then each (event, family) exposure and the family sums.
# No strike is known yet, so every market counts alone until the executor writes its strikes (whose
# trigger recomputes the events): larger than netted, never smaller.
BACKFILL = [
    """
UPDATE orders o SET booked_count = f.n
FROM (SELECT mode, order_id, sum(count) AS n FROM fills GROUP BY mode, order_id) f
WHERE o.mode = f.mode AND o.order_id = f.order_id""",
    f"""
INSERT INTO risk_holdings (mode, ticker, family, event_ticker, yes_count, no_count, cost_ticks, open_buys,
                           open_yes_orders, open_no_orders, position)
SELECT mode, ticker, family, event_ticker, sum(y), sum(n), sum(c), sum(b), sum(oy), sum(onn), sum(p)
FROM (SELECT o.mode, o.ticker, coalesce(o.family, '') AS family, o.event_ticker, h.yes_count AS y,
             h.no_count AS n, h.cost_ticks AS c, h.open_buys AS b, h.open_yes_orders AS oy,
             h.open_no_orders AS onn, 0 AS p
      FROM orders o, kdesk_order_holding(o.status, o.reduce_only, o.book_side, o.outcome_side, o.yes_price,
                                         o.remaining_count, o.fill_count, o.booked_count) h
      WHERE {_HOLDS.format(r="o")}
      UNION ALL
      SELECT mode, ticker, coalesce(family, ''), event_ticker, greatest(position, 0), greatest(-position, 0),
             cost_ticks, 0, 0, 0, position
      FROM positions WHERE position <> 0) x
GROUP BY mode, ticker, family, event_ticker""",
    f"""
INSERT INTO risk_mode_usage (mode, open_orders, gross_ticks)
SELECT mode, sum(n), sum(c) FROM (
    SELECT mode, (status IN {OPEN})::int AS n,
           (kdesk_order_holding(status, reduce_only, book_side, outcome_side, yes_price, remaining_count,
                                fill_count, booked_count)).cost_ticks AS c
    FROM orders WHERE {_HOLDS.format(r="orders")}
    UNION ALL SELECT mode, 0, cost_ticks FROM positions WHERE position <> 0) x
GROUP BY mode""",
    """
INSERT INTO risk_event_usage (mode, event_ticker, family, exposure_ticks)
SELECT mode, event_ticker, family, kdesk_event_exposure(mode, event_ticker, family)
FROM (SELECT DISTINCT mode, event_ticker, family FROM risk_holdings) g""",
    """
INSERT INTO risk_family_usage (mode, family, exposure_ticks)
SELECT mode, family, sum(exposure_ticks) FROM risk_event_usage GROUP BY mode, family""",
]

DROP = [
    "DROP TRIGGER IF EXISTS kdesk_strikes_risk_update ON risk_strikes",
    "DROP TRIGGER IF EXISTS kdesk_strikes_risk_insert ON risk_strikes",
    "DROP TRIGGER IF EXISTS kdesk_positions_risk_delete ON positions",
    "DROP TRIGGER IF EXISTS kdesk_positions_risk_update ON positions",
    "DROP TRIGGER IF EXISTS kdesk_positions_risk_insert ON positions",
    "DROP TRIGGER IF EXISTS kdesk_orders_risk_delete ON orders",
    "DROP TRIGGER IF EXISTS kdesk_orders_risk_update ON orders",
    "DROP TRIGGER IF EXISTS kdesk_orders_risk_insert ON orders",
    "DROP TRIGGER IF EXISTS kdesk_orders_booked ON orders",
    "DROP FUNCTION IF EXISTS kdesk_reprice_usage(text, text, text, text, bigint, bigint, bigint, text)",
    "DROP FUNCTION IF EXISTS kdesk_reserve(text, text, text, text, bigint, text, text, text, text, text, text, "
    "bigint, bigint, text, boolean, boolean, bigint, bigint, bigint, bigint, boolean, bigint, bigint, bigint, "
    "bigint, bigint, bigint, timestamptz, timestamptz, boolean, bigint, boolean, boolean, text, numeric, numeric, "
    "text, text, jsonb)",
    "DROP FUNCTION IF EXISTS kdesk_risk_usage(text, text, text, text, bigint, bigint, bigint, text)",
    "DROP FUNCTION IF EXISTS kdesk_strikes_risk()",
    "DROP FUNCTION IF EXISTS kdesk_positions_risk()",
    "DROP FUNCTION IF EXISTS kdesk_orders_risk()",
    "DROP FUNCTION IF EXISTS kdesk_orders_booked()",
    "DROP FUNCTION IF EXISTS kdesk_risk_apply(text, text, text, text, bigint, bigint, bigint, bigint, bigint, "
    "bigint, bigint, bigint)",
    "DROP FUNCTION IF EXISTS kdesk_risk_refresh_event(text, text, text, bigint)",
    "DROP FUNCTION IF EXISTS kdesk_risk_lock_event(text, text, text)",
    "DROP FUNCTION IF EXISTS kdesk_event_exposure(text, text, text, text, bigint, bigint, bigint)",
    "DROP FUNCTION IF EXISTS kdesk_order_holding(text, boolean, text, text, bigint, bigint, bigint, bigint)",
    "DROP FUNCTION IF EXISTS kdesk_worst(numeric, numeric, numeric)",
    "DROP FUNCTION IF EXISTS kdesk_cost(bigint, bigint)",
]


def _zero(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False)


def upgrade() -> None:
    # No order, fill or position may change between the back-fill and the triggers taking over.
    op.execute("LOCK TABLE orders, fills, positions IN EXCLUSIVE MODE")
    op.add_column("orders", sa.Column("booked_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False))
    op.create_table(
        "risk_strikes",
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("ticker", sa.String(), nullable=False),
        sa.Column("strike_type", sa.String(), nullable=True),
        sa.Column("floor_strike", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("cap_strike", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(_MODES, name="ck_risk_strikes_mode"),
        sa.PrimaryKeyConstraint("mode", "ticker", name="pk_risk_strikes"),
    )
    op.create_table(
        "risk_holdings",
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("ticker", sa.String(), nullable=False),
        sa.Column("family", sa.String(), nullable=False),
        sa.Column("event_ticker", sa.String(), nullable=False),
        *(_zero(c) for c in ("yes_count", "no_count", "cost_ticks", "open_buys", "open_yes_orders",
                             "open_no_orders", "position")),
        sa.CheckConstraint(_MODES, name="ck_risk_holdings_mode"),
        sa.PrimaryKeyConstraint("mode", "ticker", "family", "event_ticker", name="pk_risk_holdings"),
    )
    op.create_index("ix_risk_holdings_mode_event_ticker", "risk_holdings", ["mode", "event_ticker"])
    op.create_table(
        "risk_event_usage",
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("event_ticker", sa.String(), nullable=False),
        sa.Column("family", sa.String(), nullable=False),
        _zero("exposure_ticks"),
        sa.CheckConstraint(_MODES, name="ck_risk_event_usage_mode"),
        sa.PrimaryKeyConstraint("mode", "event_ticker", "family", name="pk_risk_event_usage"),
    )
    op.create_table(
        "risk_family_usage",
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("family", sa.String(), nullable=False),
        _zero("exposure_ticks"),
        sa.CheckConstraint(_MODES, name="ck_risk_family_usage_mode"),
        sa.PrimaryKeyConstraint("mode", "family", name="pk_risk_family_usage"),
    )
    op.create_table(
        "risk_mode_usage",
        sa.Column("mode", sa.String(length=8), nullable=False),
        _zero("open_orders"),
        _zero("gross_ticks"),
        sa.CheckConstraint(_MODES, name="ck_risk_mode_usage_mode"),
        sa.PrimaryKeyConstraint("mode", name="pk_risk_mode_usage"),
    )
    conn = op.get_bind()
    for sql in (*FUNCTIONS, *BACKFILL, *TRIGGERS):
        # As written: no bind parameters (':blocked' is a string); psycopg still reads '%' as a placeholder.
        conn.exec_driver_sql(sql.replace("%", "%%"))


def downgrade() -> None:
    for sql in DROP:
        op.execute(sql)
    for table in ("risk_mode_usage", "risk_family_usage", "risk_event_usage", "risk_holdings", "risk_strikes"):
        op.drop_table(table)
    op.drop_column("orders", "booked_count")
