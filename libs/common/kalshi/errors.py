"""Typed errors of the Kalshi client, each with a message an operator can act on."""

from __future__ import annotations


class KalshiError(Exception):
    """Base of every Kalshi client error; `code` is Kalshi's `error.code` when there was one."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 details: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details


class AuthError(KalshiError):
    """401/403: the key, the signature or the clock is wrong, or the key lacks the scope."""


class RateLimited(KalshiError):
    """429 after the client's own retries ran out."""


class NotFound(KalshiError):
    """404: unknown market, event, series or order."""


class OrderRejected(KalshiError):
    """The exchange refused an order operation (`code` says why: invalid_price, available_balance_too_low, ...)."""


class OrderAlreadyExists(OrderRejected):
    """409 `order_already_exists`: an order with this client_order_id was already placed."""


class TradingPaused(OrderRejected):
    """409 `trading_is_paused`: the market or exchange is halted; retrying in a loop is pointless."""


class MarketInactive(OrderRejected):
    """`MARKET_INACTIVE`: the market is past its close (or not open yet)."""


class ServerError(KalshiError):
    """5xx after retries."""


class TransportError(KalshiError):
    """The network failed (connection refused, reset, timeout) after retries."""


class MalformedResponse(KalshiError):
    """The exchange answered with JSON we cannot interpret (missing or invalid required fields)."""


class ConfigurationError(KalshiError):
    """The client was set up wrongly (no credentials for an authenticated call, unreadable key)."""


def is_post_only_cross(e: KalshiError) -> bool:
    """A post-only order (or an amend of one) refused because it would have taken liquidity.

    Kalshi answers `invalid_order` (`invalid order` in batch results) with details `post only cross`;
    the code alone covers many other refusals, so both fields decide — never the message text.
    """
    code, details = (e.code or "").replace(" ", "_"), (e.details or "").strip().lower()
    return code == "invalid_order" and details == "post only cross"
