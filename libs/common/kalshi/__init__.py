"""The Kalshi client: signed REST (V2 orders), WebSocket books and feeds, typed models in integer money."""

from libs.common.kalshi.book import LocalBook
from libs.common.kalshi.errors import (
    AuthError,
    KalshiError,
    MalformedResponse,
    MarketInactive,
    NotFound,
    OrderAlreadyExists,
    OrderRejected,
    RateLimited,
    ServerError,
    TradingPaused,
    TransportError,
)
from libs.common.kalshi.rest import AUTO_ROUTE, DEMO, PROD, Environment, KalshiRest, OrderRef, sim_environment
from libs.common.kalshi.signing import Signer, load_private_key
from libs.common.kalshi.ws import KalshiWS

__all__ = [
    "AUTO_ROUTE", "DEMO", "PROD", "AuthError", "Environment", "KalshiError", "KalshiRest", "KalshiWS", "LocalBook",
    "MalformedResponse", "MarketInactive", "NotFound", "OrderAlreadyExists", "OrderRef", "OrderRejected",
    "RateLimited",
    "ServerError", "Signer", "TradingPaused", "TransportError", "load_private_key", "sim_environment",
]
