"""Which model family a Kalshi series belongs to (the unit of per-family switches, caps and exits).

`weather` and `btc` follow from the series ticker; `llm` is whichever other series the operator names in
KDESK_LLM_SERIES, registered once per process (`set_llm_series`, done by the service runtime) so that
signals, the executor and the resolver agree on it.
"""

from __future__ import annotations

from collections.abc import Iterable

from libs.common.stations import BY_SERIES

_llm_series: frozenset[str] = frozenset()


def set_llm_series(series: Iterable[str]) -> None:
    """The series the llm family analyses (KDESK_LLM_SERIES); weather and BTC series stay their own."""
    global _llm_series
    _llm_series = frozenset(s.strip().upper() for s in series if s.strip())


def llm_series() -> frozenset[str]:
    """The registered llm series."""
    return _llm_series


def family_of(series: str) -> str | None:
    """`weather` for daily-high series, `btc` for Bitcoin series, `llm` for KDESK_LLM_SERIES, else None."""
    if series in BY_SERIES or series.startswith("KXHIGH"):
        return "weather"
    if series.startswith("KXBTC"):
        return "btc"
    if series in _llm_series:
        return "llm"
    return None
