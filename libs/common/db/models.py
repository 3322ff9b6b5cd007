"""Every kdesk table, imported in one place so `Base.metadata` is complete (migrations, drift test)."""

from __future__ import annotations

from libs.common.db.base import MODES, Base
from libs.common.db.executor import BalanceSnapshot, Fill, Order, OrderEvent, Position, RiskReservation
from libs.common.db.feeds import (
    CryptoSpotBar,
    Event,
    Market,
    MarketSnapshot,
    Series,
    WeatherEnsembleMember,
    WeatherForecastRun,
    WeatherObservation,
)
from libs.common.db.notifier import AlertEvent, CommandAudit, OutboxMessage
from libs.common.db.resolver import ClimateReport, MarketResolution, PredictionAccuracy
from libs.common.db.signals import LlmCall, ModelParam, Signal, WeatherBracketProb

__all__ = [
    "MODES",
    "AlertEvent",
    "BalanceSnapshot",
    "Base",
    "ClimateReport",
    "CommandAudit",
    "CryptoSpotBar",
    "Event",
    "Fill",
    "LlmCall",
    "Market",
    "MarketResolution",
    "MarketSnapshot",
    "ModelParam",
    "Order",
    "OrderEvent",
    "OutboxMessage",
    "Position",
    "PredictionAccuracy",
    "RiskReservation",
    "Series",
    "Signal",
    "WeatherBracketProb",
    "WeatherEnsembleMember",
    "WeatherForecastRun",
    "WeatherObservation",
]
