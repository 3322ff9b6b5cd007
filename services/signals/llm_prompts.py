"""The llm family's prompts: Forecaster → Critic → Trader, versioned in one place.

Change a template, change `PROMPT_VERSION`: every `llm_calls` row records the version its prompt came from,
so a calibration or an accuracy figure can be split by it. Each prompt carries the market's identity as a
`Market: <TICKER>` line and, where the model should weigh the price, a `Yes price: 0.42` line (the fake
provider in services/sim/llm.py reads both; a real model just reads them as facts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

PROMPT_VERSION = "llm-v1"

SYSTEM = ("You are a careful forecaster for binary prediction markets. You estimate the probability that a "
          "market resolves YES from its title, its rules and what is known today. You answer with one JSON "
          "object and nothing else.")


@dataclass(frozen=True, slots=True)
class MarketBrief:
    """What the prompts tell the model about one market."""

    ticker: str
    title: str
    rules: str
    close_time: datetime | None
    yes_bid: float | None  # dollars
    yes_ask: float | None
    recent_trades: tuple[tuple[float, float], ...] = ()  # (YES price in dollars, contracts), newest last
    desk_model_p: float | None = None  # the desk's own model where it has one (weather, BTC)

    def facts(self, now: datetime) -> str:
        close = (f"{self.close_time:%Y-%m-%d %H:%M} UTC ({(self.close_time - now).total_seconds() / 3600:.1f} h "
                 "from now)") if self.close_time else "unknown"
        book = (f"best YES bid {self.yes_bid:.2f}, best YES ask {self.yes_ask:.2f}"
                if self.yes_bid is not None and self.yes_ask is not None else "no two-sided book")
        trades = ", ".join(f"{p:.2f} x {n:g}" for p, n in self.recent_trades[-5:]) or "none seen"
        lines = [f"Market: {self.ticker}", f"Title: {self.title}", f"Rules: {self.rules or '(none given)'}",
                 f"Closes: {close}", f"Order book: {book}", f"Recent trades (price x contracts): {trades}"]
        if self.desk_model_p is not None:
            lines.append(f"Our own model's probability: {self.desk_model_p:.3f}")
        return "\n".join(lines)

    @property
    def mid(self) -> float | None:
        if self.yes_bid is None or self.yes_ask is None:
            return None
        return round((self.yes_bid + self.yes_ask) / 2, 2)


def forecaster(brief: MarketBrief, now: datetime) -> list[dict[str, str]]:
    """Stage 1: an independent estimate, before the price is shown as a reference."""
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": (
                f"{brief.facts(now)}\n\nEstimate the probability that this market resolves YES. Think about base "
                "rates and what would have to happen. Answer as JSON: "
                '{"probability": <0..1>, "reasoning": "<two or three sentences>"}')}]


def critic(brief: MarketBrief, now: datetime, forecast: dict[str, Any]) -> list[dict[str, str]]:
    """Stage 2: challenge the forecast (overconfidence, misread rules, ignored base rates)."""
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": (
                f"{brief.facts(now)}\n\nA forecaster said:\n{json.dumps(forecast)}\n\nChallenge it: is it "
                "overconfident, does it misread the rules or the deadline, does it ignore base rates? Give your own "
                'probability. Answer as JSON: {"probability": <0..1>, "reasoning": "<two or three sentences>"}')}]


def trader(brief: MarketBrief, now: datetime, forecast: dict[str, Any],
           critique: dict[str, Any]) -> list[dict[str, str]]:
    """Stage 3: the decision, against the price."""
    price = f"\nYes price: {brief.mid:.2f}" if brief.mid is not None else ""
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": (
                f"{brief.facts(now)}{price}\n\nForecaster:\n{json.dumps(forecast)}\nCritic:\n{json.dumps(critique)}"
                "\n\nWeigh both and decide. buy_yes if YES is cheap against your probability, buy_no if it is dear, "
                "hold otherwise. Answer as JSON: {\"probability\": <0..1>, \"confidence\": <0..1>, "
                '"action": "buy_yes" | "buy_no" | "hold", "reasoning": "<two or three sentences>"}')}]
