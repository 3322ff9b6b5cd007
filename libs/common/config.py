"""Desk configuration: one pydantic-settings class read from the environment.

Every variable is `KDESK_*` except the Kalshi credentials, which keep the names the design
gives them (`KALSHI_DEMO_KEY_ID`, ...). A bad value fails at start with a `ConfigError` that
names the variable; secret values are never echoed. The secrets (the Telegram token, the database
URL, Kalshi key ids) may come from files instead: `<VARIABLE>_FILE` names one (compose secrets).
"""

from __future__ import annotations

import os
import socket
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from libs.common.freshness import FreshnessLimits
from libs.common.strategies import DEFAULT_ALLOCATION, parse_allocation, parse_series

ENV_PREFIX = "KDESK_"


class ConfigError(ValueError):
    """The environment holds a value the desk cannot run with; the message names the variable."""


class Mode(StrEnum):
    """Where market data comes from and where orders go (DESIGN §2)."""

    SIM = "sim"
    PAPER = "paper"
    DEMO = "demo"
    LIVE = "live"


class Profile(StrEnum):
    """Risk preset; each value can be overridden by its own variable."""

    CONSERVATIVE = "conservative"
    BALANCED = "balanced"
    AGGRESSIVE = "aggressive"


KalshiEnv = Literal["demo", "prod", "sim"]

# Caps are in US dollars here (what an operator types) and in $0.0001 ticks inside the desk.
PROFILE_PRESETS: dict[Profile, dict[str, Any]] = {
    Profile.CONSERVATIVE: {
        "kelly_fraction": 0.10, "min_edge": 0.03, "taker_min_edge": 0.06, "confidence_floor": 0.60,
        "max_order_usd": "10", "max_market_usd": "25", "max_event_usd": "50", "max_family_usd": "200",
        "max_portfolio_usd": "500", "max_open_orders": 20, "daily_loss_limit_usd": "50",
    },
    Profile.BALANCED: {
        "kelly_fraction": 0.25, "min_edge": 0.02, "taker_min_edge": 0.04, "confidence_floor": 0.50,
        "max_order_usd": "25", "max_market_usd": "100", "max_event_usd": "200", "max_family_usd": "1000",
        "max_portfolio_usd": "2000", "max_open_orders": 50, "daily_loss_limit_usd": "200",
    },
    Profile.AGGRESSIVE: {
        "kelly_fraction": 0.50, "min_edge": 0.01, "taker_min_edge": 0.025, "confidence_floor": 0.40,
        "max_order_usd": "100", "max_market_usd": "500", "max_event_usd": "1000", "max_family_usd": "5000",
        "max_portfolio_usd": "10000", "max_open_orders": 200, "daily_loss_limit_usd": "1000",
    },
}
_USD_FIELDS = ("llm_daily_budget_usd", "max_order_usd", "max_market_usd", "max_event_usd", "max_family_usd",
               "max_portfolio_usd",
               "daily_loss_limit_usd", "fixed_order_usd", "reconcile_tolerance_usd", "paper_balance_usd",
               "mm_kill_loss_usd")
_SECRET_FIELDS = {"llm_api_key", "kalshi_demo_key_id", "kalshi_prod_key_id", "kalshi_sim_key_id", "database_url",
                  "telegram_bot_token", "dashboard_token", "dashboard_operator_token"}


# Secrets that may instead come from a file named by `<VARIABLE>_FILE` (compose secrets under /run/secrets),
# so a token or key id never has to sit in the environment.
_FILE_FIELDS = ("llm_api_key", "telegram_bot_token", "database_url", "kalshi_demo_key_id", "kalshi_prod_key_id",
                "kalshi_sim_key_id", "dashboard_token", "dashboard_operator_token")


def read_secret_files(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Values of the `_FILE_FIELDS` whose `<VARIABLE>_FILE` is set: the file's text, stripped; empty = unset."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for field in _FILE_FIELDS:
        var = _var(field) + "_FILE"
        path = env.get(var)
        if not path:
            continue
        if env.get(_var(field)):
            raise ConfigError(f"set {_var(field)} or {var}, not both")
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"{var}: cannot read {path}: {e.strerror or e}") from None
        except UnicodeDecodeError:  # a binary file (a key file named by mistake): say so rather than a traceback
            raise ConfigError(f"{var}: {path} is not UTF-8 text") from None
        if value:
            # The Kalshi fields are read by their alias (the variable's own name), the others by field name.
            out[_var(field) if field.startswith("kalshi_") else field] = value
    return out


class _SecretFileSource(PydanticBaseSettingsSource):
    """Settings source for `<VARIABLE>_FILE` secrets; it ranks below the environment itself."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        """Unused: `__call__` reads every file at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return read_secret_files()


def usd_to_ticks(value: str | int | Decimal) -> int:
    """Convert an operator-entered dollar amount ("200", "12.50") to $0.0001 ticks, exactly."""
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation as e:
        raise ValueError(f"not a dollar amount: {value!r}") from e
    if not d.is_finite() or d < 0:
        raise ValueError(f"must be a non-negative dollar amount, got {value!r}")
    if d.adjusted() >= 15:  # "1e999999": Decimal overflows below, and int() of "1e999990" takes a minute
        raise ValueError(f"{str(value)[:40]!r} is beyond any dollar amount the desk takes (at most 15 digits)")
    ticks = d * 10_000
    if ticks != ticks.to_integral_value():
        raise ValueError(f"more precise than $0.0001: {value!r}")
    return int(ticks)


class RiskLimits:
    """The resolved risk numbers (profile preset + overrides), money in $0.0001 ticks."""

    __slots__ = ("confidence_floor", "daily_loss_limit", "kelly_fraction", "max_event", "max_family",
                 "max_market", "max_open_orders", "max_order", "max_portfolio", "min_edge", "taker_min_edge")

    def __init__(self, values: dict[str, Any]) -> None:
        self.kelly_fraction: float = float(values["kelly_fraction"])
        self.min_edge: float = float(values["min_edge"])
        self.taker_min_edge: float = float(values["taker_min_edge"])
        self.confidence_floor: float = float(values["confidence_floor"])
        self.max_order: int = usd_to_ticks(values["max_order_usd"])
        self.max_market: int = usd_to_ticks(values["max_market_usd"])
        self.max_event: int = usd_to_ticks(values["max_event_usd"])
        self.max_family: int = usd_to_ticks(values["max_family_usd"])
        self.max_portfolio: int = usd_to_ticks(values["max_portfolio_usd"])
        self.max_open_orders: int = int(values["max_open_orders"])
        self.daily_loss_limit: int = usd_to_ticks(values["daily_loss_limit_usd"])

    def as_dict(self) -> dict[str, Any]:
        """Plain data for status replies and logs."""
        return {k: getattr(self, k) for k in self.__slots__}


_EXIT_KEYS = {"stop_loss": float, "take_profit": float, "max_hold_s": float, "edge_reversal": float}


def parse_exits(text: str) -> dict[str, dict[str, float]]:
    """`family:key=value,key=value;family:...` -> {family: {key: value}} (prices as fractions of $1)."""
    rules: dict[str, dict[str, float]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        family, sep, body = part.partition(":")
        if not sep or not family.strip():
            raise ValueError(f"expected 'family:key=value,...', got {part!r}")
        items: dict[str, float] = {}
        for kv in filter(None, (x.strip() for x in body.split(","))):
            key, eq, value = kv.partition("=")
            key = key.strip()
            if not eq or key not in _EXIT_KEYS:
                raise ValueError(f"unknown exit rule {kv!r} (known: {', '.join(sorted(_EXIT_KEYS))})")
            try:
                items[key] = float(value)
            except ValueError:
                raise ValueError(f"exit rule {key} needs a number, got {value!r}") from None
            if items[key] < 0 or (key in ("stop_loss", "take_profit") and items[key] > 1):
                raise ValueError(f"exit rule {key}={value} is out of range")
        rules[family.strip().lower()] = items
    return rules


class KalshiCredentials:
    """A key id and the path of its PEM private key for one Kalshi environment."""

    __slots__ = ("env", "key_id", "private_key_path")

    def __init__(self, env: KalshiEnv, key_id: SecretStr, private_key_path: Path) -> None:
        self.env = env
        self.key_id = key_id
        self.private_key_path = private_key_path

    def __repr__(self) -> str:
        return f"KalshiCredentials(env={self.env!r}, key_id=***, private_key_path={str(self.private_key_path)!r})"


def _var(field: str) -> str:
    if field.startswith("kalshi_"):
        return field.upper()
    return ENV_PREFIX + field.upper()


class Settings(BaseSettings):
    """Everything a kdesk process reads from its environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", case_sensitive=False,
                                      validate_default=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then `*_FILE` secrets (KDESK_TELEGRAM_BOT_TOKEN_FILE, ...)."""
        return init_settings, env_settings, dotenv_settings, _SecretFileSource(settings_cls), file_secret_settings

    mode: Mode = Mode.SIM
    profile: Profile = Profile.BALANCED
    nats_url: str | None = None
    # JetStream replicas of every stream and KV bucket `provision` creates: 1 on one server, 3 on a three-node
    # cluster (an acknowledged message then survives the loss of a node).
    stream_replicas: int = Field(default=1, ge=1, le=5)
    database_url: SecretStr | None = None
    allow_live: bool = False
    # The container hostname under compose, so `kdesk health <svc> --instance $HOSTNAME` finds its own replica.
    instance: str = Field(default_factory=socket.gethostname, min_length=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console", "auto"] = "auto"
    health_interval_s: float = Field(default=5.0, gt=0, le=300)
    var_dir: Path = Path("var")
    telegram_bot_token: SecretStr | None = None
    # Notifier (Telegram). Numeric user ids, comma-separated; empty = nobody (deny by default).
    telegram_operators: str = ""  # may control the desk
    telegram_viewers: str = ""  # may only look
    telegram_api_url: str | None = None  # a Bot API server root; None = api.telegram.org (sim: the fake)
    digest_every_s: float = Field(default=3600.0, ge=0)  # 0 = no digests
    alert_cooldown_s: float = Field(default=900.0, ge=0)  # one message per dedupe key per this long
    alert_daily_cap: int = Field(default=100, ge=1)  # messages per alert family per UTC day (critical exempt)
    notifier_max_pending: int = Field(default=5000, ge=10)  # messages waiting for Telegram, at most
    notifier_max_wait_s: float = Field(default=86_400.0, gt=0)  # a message older than this is dropped, counted
    live_arm_hours: float = Field(default=8.0, gt=0, le=24 * 7)  # `/mode live` + CONFIRM LIVE arms for this long
    # Web dashboard (services/dashboard). Loopback unless configured; any other address needs the login token
    # (the dashboard refuses to start without it). Pause and resume need the operator token (none: no controls).
    dashboard_host: str = Field(default="127.0.0.1", min_length=1)
    dashboard_port: int = Field(default=8765, ge=1, le=65535)
    dashboard_token: SecretStr | None = None
    dashboard_operator_token: SecretStr | None = None
    dashboard_refresh_s: float = Field(default=2.0, ge=0.2, le=60)  # how often an open page asks for new data

    # Risk overrides; None means "take the profile's preset".
    kelly_fraction: float | None = Field(default=None, gt=0, le=1)
    min_edge: float | None = Field(default=None, ge=0, lt=1)
    taker_min_edge: float | None = Field(default=None, ge=0, lt=1)
    confidence_floor: float | None = Field(default=None, ge=0, le=1)
    max_order_usd: str | None = None
    max_market_usd: str | None = None
    max_event_usd: str | None = None
    max_family_usd: str | None = None
    max_portfolio_usd: str | None = None
    max_open_orders: int | None = Field(default=None, ge=0)
    daily_loss_limit_usd: str | None = None

    # Freshness (libs/common/freshness.py): the oldest input, by its source's own timestamp, that signals,
    # the executor and the paper broker act on; older ones are refused with a reason (stale_book, ...).
    max_book_age_s: float = Field(default=30.0, gt=0, le=3600)
    max_spot_age_s: float = Field(default=10.0, gt=0, le=3600)
    max_forecast_age_s: float = Field(default=3 * 3600.0, gt=0, le=7 * 86400)
    max_obs_age_s: float = Field(default=2 * 3600.0, gt=0, le=86400)
    clock_skew_s: float = Field(default=5.0, ge=0, le=60)

    # Executor (DESIGN §6). Sizing: `kelly` (profile fraction x confidence) or `fixed` (KDESK_FIXED_ORDER_USD).
    sizing: Literal["kelly", "fixed"] = "kelly"
    fixed_order_usd: str = "5"
    # Reconciliation: what to do with a resting order on the account the desk did not place.
    cancel_unknown_orders: bool = False
    reconcile_interval_s: float = Field(default=120.0, ge=5, le=3600)
    # Ledger vs exchange differences up to this are repaired silently; beyond it the desk pauses.
    reconcile_tolerance_usd: str = "0.01"
    # Kalshi contract check (libs/common/kalshi/contract.py) at start and every interval; a mismatch pauses
    # trading. None = on in demo and live, off in sim and paper.
    contract_check: bool | None = None
    contract_check_interval_s: float = Field(default=4 * 3600.0, ge=60, le=7 * 86400)
    # Repricing of resting orders: older than this, or deeper in the queue than this many contracts, is
    # repriced (amend, else cancel/replace), at most `reprice_per_minute` times a minute across the desk.
    reprice_after_s: float = Field(default=60.0, ge=1)
    reprice_queue_contracts: int = Field(default=500, ge=0)
    reprice_per_minute: int = Field(default=20, ge=0)
    # Exits per family, e.g. "weather:stop_loss=0.25,take_profit=0.9;btc:max_hold_s=1800,edge_reversal=1".
    # Empty: hold to settlement.
    exits: str = ""
    paper_balance_usd: str = "1000"

    # Strategies (libs/common/strategies.py). Capital: each strategy's fraction of the portfolio cap; a strategy
    # not named gets nothing. Markets: the maker quotes KDESK_MM_SERIES, quick flip trades the signals of
    # KDESK_QUICK_FLIP_SERIES, directional the rest.
    allocation: str = DEFAULT_ALLOCATION
    mm_series: str = ""
    mm_half_spread: float = Field(default=0.02, gt=0, lt=0.5)  # dollars either side of the reservation price
    mm_uncertainty_spread: float = Field(default=0.03, ge=0, lt=0.5)  # added at confidence 0, none at 1
    mm_risk_aversion: float = Field(default=0.004, ge=0, le=1)  # Avellaneda-Stoikov gamma, per contract
    mm_quote_contracts: int = Field(default=10, ge=1, le=10_000)  # whole contracts per quote
    mm_max_inventory: int = Field(default=50, ge=1)  # contracts held in one market, either side
    mm_max_event_inventory: int = Field(default=100, ge=1)  # contracts held across one event's markets
    mm_refresh: float = Field(default=0.01, gt=0, lt=1)  # dollars a quote's target moves before it is updated
    mm_quote_per_minute: int = Field(default=120, ge=1)  # creates, amends and cancels, across the maker
    mm_pull_before_close_s: float = Field(default=900.0, ge=0)
    mm_kill_loss_usd: str = "25"  # the maker's P&L falling this much within the window pulls every quote
    mm_kill_window_s: float = Field(default=300.0, gt=0)
    mm_kill_cooldown_s: float = Field(default=900.0, ge=0)
    quick_flip_series: str = ""
    quick_flip_target: float = Field(default=0.5, gt=0, le=1)  # of the way from the entry to fair value
    quick_flip_time_limit_s: float = Field(default=600.0, gt=0)

    # The llm family (services/signals/llm.py): off unless KDESK_LLM_SERIES names series. An OpenAI-compatible
    # chat-completions provider (xAI by default; in sim the simulator's fake); the key never reaches a log.
    llm_series: str = ""
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str = "grok-4"
    llm_fallback_model: str | None = None
    llm_prices: str = ""  # "model=IN/OUT,..." in $ per million tokens, over the built-in table
    llm_structured_output: bool = True
    llm_timeout_s: float = Field(default=60.0, gt=0, le=900)
    llm_max_completion_tokens: int = Field(default=800, ge=50, le=32_000)
    llm_daily_budget_usd: str = "5"  # a UTC day's spend across replicas; `kdesk llm --budget` changes it live
    llm_cooldown_s: float = Field(default=1800.0, ge=0)  # between analyses of one market
    llm_max_per_market_day: int = Field(default=4, ge=1)  # analyses of one market per UTC day
    llm_min_volume: int = Field(default=0, ge=0)  # contracts traded in the market's life
    llm_max_spread: float = Field(default=0.15, gt=0, le=1)  # dollars between best YES bid and ask
    llm_min_hours_to_close: float = Field(default=1.0, ge=0)
    llm_max_hours_to_close: float = Field(default=24 * 30.0, gt=0)
    llm_calibration_min: int = Field(default=30, ge=5)  # resolved llm forecasts before calibration applies

    # The simulator's block of ports (see libs/common/simnet.py); `kdesk up` sets it in sim mode.
    sim_host: str = "127.0.0.1"
    sim_base_port: int | None = Field(default=None, ge=1024, le=65529)

    # Feeds: which Kalshi series to follow, and the outside data sources (defaults: the real ones;
    # in sim mode: the simulator's fakes).
    feeds_series: str = "KXHIGHNY,KXHIGHCHI,KXBTCD,KXBTC"
    coinbase_ws_url: str | None = None
    kraken_ws_url: str | None = None
    bitstamp_ws_url: str | None = None
    binance_ws_url: str | None = None  # Binance is off unless set (USDT, geo-blocked in the US)
    weather_api_url: str | None = None  # one root for Open-Meteo and NWS fakes in sim; None = real hosts
    nws_user_agent: str = "kdesk (operator@example.invalid)"

    # Where sim mode finds the simulated exchange (`kdesk up` sets these when it starts the simulator).
    kalshi_rest_url: str | None = None
    kalshi_ws_url: str | None = None
    kalshi_sim_key_id: SecretStr | None = Field(default=None, validation_alias=AliasChoices("KALSHI_SIM_KEY_ID"))
    kalshi_sim_private_key_path: Path | None = Field(
        default=None, validation_alias=AliasChoices("KALSHI_SIM_PRIVATE_KEY_PATH"))

    kalshi_demo_key_id: SecretStr | None = Field(default=None, validation_alias=AliasChoices("KALSHI_DEMO_KEY_ID"))
    kalshi_demo_private_key_path: Path | None = Field(
        default=None, validation_alias=AliasChoices("KALSHI_DEMO_PRIVATE_KEY_PATH"))
    kalshi_prod_key_id: SecretStr | None = Field(default=None, validation_alias=AliasChoices("KALSHI_PROD_KEY_ID"))
    kalshi_prod_private_key_path: Path | None = Field(
        default=None, validation_alias=AliasChoices("KALSHI_PROD_PRIVATE_KEY_PATH"))

    @field_validator(*_USD_FIELDS)
    @classmethod
    def _dollars(cls, v: str | None) -> str | None:
        if v is not None:
            usd_to_ticks(v)
        return v

    @field_validator("telegram_operators", "telegram_viewers")
    @classmethod
    def _user_ids(cls, v: str) -> str:
        for part in v.replace(" ", "").split(","):
            if part and not (part.isascii() and part.isdigit()):  # "²".isdigit() is True, and int() refuses it
                raise ValueError(f"{part!r} is not a numeric Telegram user id (ask @userinfobot for yours)")
        return v

    @field_validator("dashboard_token", "dashboard_operator_token")
    @classmethod
    def _dashboard_token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (e.g. `python -c 'import secrets; "
                             "print(secrets.token_urlsafe())'`)")
        return v

    @model_validator(mode="after")
    def _dashboard_tokens_differ(self) -> Settings:
        if (self.dashboard_token is not None and self.dashboard_operator_token is not None
                and self.dashboard_token.get_secret_value() == self.dashboard_operator_token.get_secret_value()):
            raise ValueError("KDESK_DASHBOARD_OPERATOR_TOKEN must differ from KDESK_DASHBOARD_TOKEN (viewers would "
                             "get the operator's controls)")
        return self

    @field_validator("exits")
    @classmethod
    def _exits(cls, v: str) -> str:
        parse_exits(v)
        return v

    @field_validator("allocation")
    @classmethod
    def _allocation(cls, v: str) -> str:
        parse_allocation(v)
        return v

    @model_validator(mode="after")
    def _strategies_have_capital(self) -> Settings:
        alloc = parse_allocation(self.allocation)
        mm, flip = parse_series(self.mm_series), parse_series(self.quick_flip_series)
        if mm & flip:
            raise ValueError(f"{', '.join(sorted(mm & flip))} is in both KDESK_MM_SERIES and KDESK_QUICK_FLIP_SERIES "
                             "(a market belongs to one strategy)")
        for name, series in (("market_making", mm), ("quick_flip", flip)):
            if series and alloc.get(name, 0.0) <= 0:  # type: ignore[call-overload]
                raise ValueError(f"{_var('quick_flip' if name == 'quick_flip' else 'mm')}_SERIES names series but "
                                 f"KDESK_ALLOCATION gives {name} no capital (e.g. KDESK_ALLOCATION="
                                 f"directional=0.4,market_making=0.3,quick_flip=0.3)")
        return self

    @field_validator("nats_url")
    @classmethod
    def _nats_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("nats://", "tls://", "ws://", "wss://")):
            raise ValueError("must start with nats://, tls://, ws:// or wss://")
        return v

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith(("postgresql", "postgres://")):
            raise ValueError("must be a PostgreSQL URL (postgresql://user:password@host:port/db)")
        return v

    @field_validator("kalshi_rest_url", "kalshi_ws_url", "coinbase_ws_url", "kraken_ws_url", "bitstamp_ws_url",
                     "binance_ws_url", "weather_api_url", "telegram_api_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://", "ws://", "wss://")):
            raise ValueError("must be an http(s):// or ws(s):// URL")
        return v

    @field_validator("kalshi_demo_private_key_path", "kalshi_prod_private_key_path", "kalshi_sim_private_key_path")
    @classmethod
    def _key_file(cls, v: Path | None) -> Path | None:
        try:
            exists = v is None or v.is_file()
        except OSError:  # a name the file system refuses (too long, say): not a key file either
            exists = False
        if not exists:
            raise ValueError(f"no such file: {str(v)[:200]}")
        return v

    @model_validator(mode="after")
    def _mode_needs(self) -> Settings:
        if self.mode is Mode.LIVE and not self.allow_live:
            raise ValueError("KDESK_MODE=live requires KDESK_ALLOW_LIVE=1 (and the operator must still arm it)")
        for env in ("demo", "prod", "sim"):
            key, path = getattr(self, f"kalshi_{env}_key_id"), getattr(self, f"kalshi_{env}_private_key_path")
            if (key is None) != (path is None):
                missing = _var(f"kalshi_{env}_private_key_path") if path is None else _var(f"kalshi_{env}_key_id")
                raise ValueError(f"{missing} must be set together with its pair")
        needed = {Mode.DEMO: "demo", Mode.LIVE: "prod"}.get(self.mode)
        if needed and getattr(self, f"kalshi_{needed}_key_id") is None:
            raise ValueError(f"KDESK_MODE={self.mode.value} needs {_var(f'kalshi_{needed}_key_id')} and "
                             f"{_var(f'kalshi_{needed}_private_key_path')}")
        return self

    @property
    def risk(self) -> RiskLimits:
        """The profile preset with every explicitly set override applied."""
        values = dict(PROFILE_PRESETS[self.profile])
        for name in values:
            override = getattr(self, name)
            if override is not None:
                values[name] = override
        return RiskLimits(values)

    @property
    def contract_check_on(self) -> bool:
        """Whether the executor checks the Kalshi contract (KDESK_CONTRACT_CHECK; default: demo and live)."""
        if self.contract_check is not None:
            return self.contract_check
        return self.mode in (Mode.DEMO, Mode.LIVE)

    @property
    def freshness(self) -> FreshnessLimits:
        """The input age limits (KDESK_MAX_*_AGE_S, KDESK_CLOCK_SKEW_S)."""
        return FreshnessLimits(book_s=self.max_book_age_s, spot_s=self.max_spot_age_s,
                               forecast_s=self.max_forecast_age_s, obs_s=self.max_obs_age_s, skew_s=self.clock_skew_s)

    def weather_root(self) -> str | None:
        """One root for Open-Meteo and NWS: explicit, else the simulator's fake in sim mode, else None (real hosts)."""
        if self.weather_api_url:
            return self.weather_api_url
        if self.mode is Mode.SIM and self.sim_base_port:
            from libs.common.simnet import SimEndpoints

            return SimEndpoints(self.sim_host, self.sim_base_port).weather_url
        return None

    def llm_endpoint(self) -> tuple[str, str | None]:
        """(base URL, API key) of the llm family's provider: explicit, else the simulator's fake in sim mode
        (with its known key), else xAI; the key is None when none is configured."""
        key = self.llm_api_key.get_secret_value() if self.llm_api_key is not None else None
        if self.llm_base_url:
            return self.llm_base_url, key
        if self.mode is Mode.SIM and self.sim_base_port:
            from libs.common.simnet import SIM_LLM_KEY, SimEndpoints

            return SimEndpoints(self.sim_host, self.sim_base_port).llm_url, key or SIM_LLM_KEY
        return "https://api.x.ai/v1", key

    def telegram_users(self) -> tuple[frozenset[int], frozenset[int]]:
        """(operators, viewers) as user ids; someone in both lists is an operator."""
        def ids(text: str) -> frozenset[int]:
            return frozenset(int(x) for x in text.replace(" ", "").split(",") if x)
        ops = ids(self.telegram_operators)
        return ops, ids(self.telegram_viewers) - ops

    def series_list(self) -> list[str]:
        """Every series feeds follows: KDESK_FEEDS_SERIES, then the llm family's KDESK_LLM_SERIES."""
        out = [t.strip().upper() for t in self.feeds_series.split(",") if t.strip()]
        return out + [t for t in self.llm_series_list() if t not in out]

    def llm_series_list(self) -> list[str]:
        """KDESK_LLM_SERIES as a list of upper-case series tickers (empty: the llm family is off)."""
        return [t.strip().upper() for t in self.llm_series.split(",") if t.strip()]

    def kalshi_env(self) -> KalshiEnv:
        """Which Kalshi environment this mode talks to (paper reads prod data and trades nowhere)."""
        return {Mode.SIM: "sim", Mode.PAPER: "prod", Mode.DEMO: "demo", Mode.LIVE: "prod"}[self.mode]

    def kalshi_credentials(self, env: KalshiEnv) -> KalshiCredentials | None:
        """Credentials for exactly `env`; a demo key is never returned for prod or vice versa."""
        key, path = getattr(self, f"kalshi_{env}_key_id"), getattr(self, f"kalshi_{env}_private_key_path")
        if key is None or path is None:
            return None
        return KalshiCredentials(env, key, path)

    def database_url_value(self) -> str | None:
        """The database URL (secret: never log it)."""
        return self.database_url.get_secret_value() if self.database_url else None

    def require_database_url(self, why: str) -> str:
        """The database URL of a service that cannot run without one, or `ConfigError` saying `why` it needs it."""
        url = self.database_url_value()
        if not url:
            raise ConfigError(f"KDESK_DATABASE_URL is not set: {why}")
        return url


def _describe(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if p != "__root__"]
    field = loc[0] if loc else ""
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if not field:
        return msg
    name = _var(field)
    if field in _SECRET_FIELDS:
        return f"{name}: {msg}"
    return f"{name}: {msg} (got {err.get('input')!r})"


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (plus `overrides`), or raise `ConfigError` naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        problems = "; ".join(_describe(err) for err in e.errors(include_url=False))
        raise ConfigError(f"invalid configuration: {problems}") from None
