"""NATS subjects, streams and the control bucket of DESIGN §4 — the only place subjects are spelled.

Per-mode namespaces: every subject on the wire starts with the desk's mode (`sim.md.book.…`,
`paper.sig.…`), every stream's name starts with it (`SIM_MD_BOOKS`) and every mode has its own
control bucket (`control_sim`). The functions below spell the *logical* subject; the bus (and only
the bus) puts it into its mode's namespace with `scoped`. So a paper desk cannot replay, consume or
even hear what a sim desk published on the same NATS server: there is no subject, stream or bucket
they share. Switching modes on the same `./var` needs no cleanup; the other mode's data just sits in
its own streams until their limits age it out.

Tokens are lower-case. Kalshi tickers may contain `.` (`KXBTCD-26AUG2517-T78499.99`), which NATS
would read as a token separator, so a ticker goes into a subject with `.` replaced by `_`; the
exact ticker always travels in the payload.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN_OK = re.compile(r"^[a-z0-9_\-]+$")


class SubjectError(ValueError):
    """A value cannot be used as a subject token."""


def token(value: str) -> str:
    """Encode one subject token: lower-case, `.` → `_`; reject wildcards, spaces and empties."""
    t = value.strip().lower().replace(".", "_")
    if not t or not _TOKEN_OK.match(t):
        raise SubjectError(f"cannot use {value!r} as a NATS subject token (letters, digits, '-', '_', '.' only)")
    return t


def ticker_token(ticker: str) -> str:
    """Subject token for a Kalshi ticker (lossy: keep the exact ticker in the payload)."""
    return token(ticker)


def series_of(ticker: str) -> str:
    """The series prefix of a Kalshi market or event ticker (`KXHIGHNY-26OCT04-B63.5` → `KXHIGHNY`)."""
    return ticker.split("-", 1)[0]


# --- market data -------------------------------------------------------------------------------

def md_market(series: str, ticker: str) -> str:
    """Market definition and lifecycle."""
    return f"md.market.{token(series)}.{ticker_token(ticker)}"


def md_book(series: str, ticker: str) -> str:
    """Order book update."""
    return f"md.book.{token(series)}.{ticker_token(ticker)}"


def md_trade(series: str, ticker: str) -> str:
    """Public trade."""
    return f"md.trade.{token(series)}.{ticker_token(ticker)}"


def md_spot_btc(venue: str) -> str:
    """BTC spot tick from one venue."""
    return f"md.spot.btc.{token(venue)}"


def md_wx_forecast(city: str) -> str:
    """Ensemble forecast run for a city."""
    return f"md.wx.forecast.{token(city)}"


def md_wx_obs(station: str) -> str:
    """Observation and running climate-day max for a station."""
    return f"md.wx.obs.{token(station)}"


# --- signals, orders, resolutions --------------------------------------------------------------

def sig(family: str, series: str, ticker: str) -> str:
    """Trading signal for one market."""
    return f"sig.{token(family)}.{token(series)}.{ticker_token(ticker)}"


def ord_(event_ticker: str, ticker: str) -> str:
    """Order lifecycle event or fill for one market of an event."""
    return f"ord.{ticker_token(event_ticker)}.{ticker_token(ticker)}"


def res_market(ticker: str) -> str:
    """Market resolution."""
    return f"res.market.{ticker_token(ticker)}"


def res_accuracy() -> str:
    """Accuracy/calibration update."""
    return "res.accuracy"


def res_param(family: str, name: str, scope: str) -> str:
    """A fitted model parameter (last value per subject is current)."""
    return f"res.param.{token(family)}.{token(name)}.{ticker_token(scope)}"


# --- operations --------------------------------------------------------------------------------

def ops_alert(family: str) -> str:
    """Operational alert of one family (`divergence`, `reconcile`, `deadletter`, ...)."""
    return f"ops.alert.{token(family)}"


DEADLETTER = "ops.alert.deadletter"


def ops_health(service: str, instance: str) -> str:
    """Heartbeat of one service instance (core NATS only)."""
    return f"ops.health.{token(service)}.{token(instance)}"


def ops_health_all(service: str | None = None) -> str:
    """Wildcard over heartbeats of one service, or of all services."""
    return f"ops.health.{token(service)}.*" if service else "ops.health.*.*"


def cmd(service: str, verb: str) -> str:
    """Request/reply command addressed to the service that owns the data."""
    return f"cmd.{token(service)}.{token(verb)}"


# --- streams and KV ----------------------------------------------------------------------------

@dataclass(frozen=True)
class StreamSpec:
    """One JetStream stream of the design; provisioned idempotently by the bus."""

    name: str
    subjects: tuple[str, ...]
    max_age_s: float = 0.0  # 0 = keep until other limits
    max_msgs_per_subject: int = -1
    duplicate_window_s: float = 120.0
    description: str = ""
    extra: dict[str, object] = field(default_factory=dict)


_DAY = 86_400.0
STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("MD_MARKETS", ("md.market.>",), max_msgs_per_subject=1,
               description="market definitions and lifecycle, last per market"),
    StreamSpec("MD_BOOKS", ("md.book.>",), max_msgs_per_subject=1, duplicate_window_s=10,
               description="order book updates, last per market (hot path is core NATS)"),
    StreamSpec("MD_TRADES", ("md.trade.>",), max_age_s=2 * _DAY, description="public trades"),
    StreamSpec("MD_SPOT", ("md.spot.>",), max_age_s=6 * 3600, duplicate_window_s=10,
               description="crypto spot ticks"),
    StreamSpec("MD_WX", ("md.wx.>",), max_age_s=14 * _DAY, description="weather forecasts and observations"),
    StreamSpec("SIGNALS", ("sig.>",), max_age_s=30 * _DAY, description="trading signals, deduped by id"),
    StreamSpec("ORDERS", ("ord.>",), max_age_s=90 * _DAY, description="order lifecycle events and fills"),
    StreamSpec("RESOLUTIONS", ("res.>",), max_age_s=365 * _DAY, description="resolutions and accuracy"),
    StreamSpec("OPS", ("ops.alert.>",), max_age_s=30 * _DAY, description="operational alerts and dead letters"),
)

CONTROL_BUCKET = "control"


def scoped(mode: str, subject: str) -> str:
    """The wire subject of a logical subject in one mode's namespace (`md.book.>` → `sim.md.book.>`)."""
    return f"{token(mode)}.{subject}"


def stream_name(mode: str, name: str) -> str:
    """The physical name of one of the design's streams in one mode (`MD_BOOKS` → `SIM_MD_BOOKS`)."""
    return f"{token(mode).upper()}_{name}"


def control_bucket(mode: str) -> str:
    """The `control` KV bucket of one mode (`control_sim`): pausing a paper desk never pauses a live one."""
    return f"{CONTROL_BUCKET}_{token(mode)}"


class ControlKey:
    """Keys of the `control` KV bucket (KV keys allow `.`; these are fixed names)."""

    PAUSED = "paused"
    MODE = "mode"
    LIVE_ARMED_UNTIL = "live_armed_until"

    LLM_BUDGET_USD = "llm.budget_usd"  # the llm family's daily budget, raised or lowered at runtime

    @staticmethod
    def family_enabled(family: str) -> str:
        """Per-family trading switch."""
        return f"family.{token(family)}.enabled"
