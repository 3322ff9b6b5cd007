"""Where the simulator's fake outside world listens, so `services.sim` and its clients agree without talking.

`kdesk up` reserves a block of consecutive free ports and passes the first as KDESK_SIM_BASE_PORT to
every process: the simulator listens on them, the feeds and executor connect to them.
"""

from __future__ import annotations

from dataclasses import dataclass

from libs.common.embedded import free_port

PORTS_NEEDED = 8
SIM_LLM_KEY = "sk-sim-kdesk-0f3c9a7e5b1d4c2a8e6f"  # the fake LLM provider's only key (not a secret)


@dataclass(frozen=True)
class SimEndpoints:
    """URLs of the simulated Kalshi exchange, crypto venues, weather services and Telegram Bot API."""

    host: str
    base_port: int

    @property
    def exchange_port(self) -> int:
        """Kalshi REST + WS."""
        return self.base_port

    @property
    def kalshi_rest_url(self) -> str:
        """Kalshi REST root."""
        return f"http://{self.host}:{self.base_port}/trade-api/v2"

    @property
    def kalshi_ws_url(self) -> str:
        """Kalshi WebSocket."""
        return f"ws://{self.host}:{self.base_port}/trade-api/ws/v2"

    def venue_port(self, venue: str) -> int:
        """Port of one fake crypto venue."""
        return self.base_port + 1 + ("coinbase", "kraken", "bitstamp", "binance").index(venue)

    def venue_url(self, venue: str) -> str:
        """WebSocket URL of one fake crypto venue."""
        return f"ws://{self.host}:{self.venue_port(venue)}"

    @property
    def weather_port(self) -> int:
        """Fake Open-Meteo + NWS."""
        return self.base_port + 5

    @property
    def weather_url(self) -> str:
        """Root URL of the fake weather services."""
        return f"http://{self.host}:{self.weather_port}"

    @property
    def telegram_port(self) -> int:
        """Fake Telegram Bot API (services/sim/telegram.py)."""
        return self.base_port + 6

    @property
    def llm_port(self) -> int:
        """Fake OpenAI-compatible chat completions (services/sim/llm.py)."""
        return self.base_port + 7

    @property
    def llm_url(self) -> str:
        """Base URL of the fake LLM provider, for the `openai` SDK."""
        return f"http://{self.host}:{self.llm_port}/v1"

    @property
    def telegram_url(self) -> str:
        """Root URL of the fake Bot API, for `TelegramAPIServer.from_base`."""
        return f"http://{self.host}:{self.telegram_port}"


def reserve_block(host: str = "127.0.0.1", n: int = PORTS_NEEDED, attempts: int = 50) -> int:
    """A base port such that base..base+n-1 are all free right now."""
    import socket

    for _ in range(attempts):
        base = free_port(host)
        if base + n > 65535:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind((host, p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {n} free ports on {host}")
