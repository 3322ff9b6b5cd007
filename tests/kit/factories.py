"""Event factories: every test builds bus events the same way."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from libs.common.config import Mode
from libs.common.events import Alert, Signal, utcnow


def signal_event(ticker: str = "KXHIGHNY-26NOV22-B63.5", **overrides: Any) -> Signal:
    """A plausible weather signal; override any field."""
    now = utcnow()
    fields: dict[str, Any] = dict(
        ts_event=now, mode=Mode.SIM, family="weather", series_ticker=ticker.split("-")[0],
        event_ticker="-".join(ticker.split("-")[:2]), ticker=ticker, model="wx_ens", model_version="1",
        p_model=0.62, p_market=0.55, action="buy_yes", limit_price=5_600, edge_maker=600, edge_taker=250,
        confidence=0.8, valid_until=now + timedelta(minutes=5),
    )
    fields.update(overrides)
    return Signal(**fields)


def alert_event(**overrides: Any) -> Alert:
    """An operational alert."""
    fields: dict[str, Any] = dict(ts_event=utcnow(), mode=Mode.SIM, family="test", severity="info",
                                  dedupe_key="k", title="t")
    fields.update(overrides)
    return Alert(**fields)


def ensemble_members(facts: dict[str, Any], *, seed: int = 3, per_model: int = 50) -> tuple[Any, ...]:
    """150 ensemble members (3 models) scattered around a sim weather event's true mean and spread."""
    import random

    from libs.common.events import WxMember

    rng = random.Random(seed)
    return tuple(WxMember(model=model, member=k, target_date=facts["date"],
                          tmax_f=rng.gauss(facts["mean_f"], facts["spread_f"]))
                 for model in ("ncep_gefs025", "ecmwf_ifs025_ensemble", "gem_global_ensemble")
                 for k in range(per_model))
