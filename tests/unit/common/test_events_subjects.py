"""Event envelope and subject builders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from libs.common import subjects
from libs.common.config import Mode
from libs.common.events import BookUpdate, Heartbeat, MarketDefinition, Signal, decode_event
from tests.kit.factories import book_update, market_definition, signal_event

BTC = "KXBTCD-26AUG2517-T78499.99"


def test_ticker_with_dot_is_encoded_in_subjects_and_exact_in_payload() -> None:
    assert subjects.md_book("KXBTCD", BTC) == "md.book.kxbtcd.kxbtcd-26aug2517-t78499_99"
    assert subjects.ord_("KXBTCD-26AUG2517", BTC) == "ord.kxbtcd-26aug2517.kxbtcd-26aug2517-t78499_99"
    assert subjects.sig("btc", "KXBTCD", BTC).count(".") == 3  # the dot never splits a token
    ev = book_update(BTC, ((4_200, 1_300),), ((5_600, 1_700),))
    back = decode_event(ev.to_json())
    assert isinstance(back, BookUpdate) and back.ticker == BTC and back.yes_bids == ((4_200, 1_300),)


@pytest.mark.parametrize("bad", ["", "a b", "md.*", "x>", "tick\u00e9r"])
def test_subject_tokens_reject_wildcards_and_spaces(bad: str) -> None:
    with pytest.raises(subjects.SubjectError):
        subjects.token(bad)


def test_every_builder_has_a_home_stream() -> None:
    built = [subjects.md_market("KXHIGHNY", "T"), subjects.md_book("S", "T"), subjects.md_trade("S", "T"),
             subjects.md_spot_btc("coinbase"), subjects.md_wx_forecast("nyc"), subjects.md_wx_obs("KNYC"),
             subjects.sig("weather", "S", "T"), subjects.ord_("E", "T"), subjects.res_market("T"),
             subjects.res_accuracy(), subjects.ops_alert("reconcile"), subjects.DEADLETTER]

    def matches(pattern: str, subject: str) -> bool:
        p, s = pattern.split("."), subject.split(".")
        if p[-1] == ">":
            return s[: len(p) - 1] == p[:-1] and len(s) >= len(p)
        return p == s

    for subject in built:
        homes = [st.name for st in subjects.STREAMS for pat in st.subjects if matches(pat, subject)]
        assert len(homes) == 1, (subject, homes)
    # heartbeats and commands stay on core NATS
    for core in (subjects.ops_health("feeds", "a"), subjects.cmd("executor", "pause")):
        assert not any(matches(p, core) for st in subjects.STREAMS for p in st.subjects)


def test_events_are_frozen_and_reject_unknown_fields() -> None:
    ev = signal_event()
    with pytest.raises(ValidationError):
        ev.p_model = 0.9  # type: ignore[misc]
    data = ev.model_dump(mode="json") | {"surprise": 1}
    with pytest.raises(ValidationError):
        Signal.model_validate(data)


def test_timestamps_must_be_timezone_aware() -> None:
    with pytest.raises(ValidationError):
        signal_event(ts_event=datetime(2026, 11, 22, 12, 0))


def test_decode_dispatches_on_type_and_keeps_decimals_exact() -> None:
    now = datetime.now(UTC)
    m = market_definition(BTC, ts_event=now, mode=Mode.PAPER, strike_type="greater",
                          floor_strike=Decimal("78499.99"), fee_multiplier=Decimal("0.5"))
    back = decode_event(m.to_json())
    assert isinstance(back, MarketDefinition)
    assert back.floor_strike == Decimal("78499.99") and back.fee_multiplier == Decimal("0.5")
    hb = Heartbeat(ts_event=now, mode=Mode.SIM, service="feeds", instance="i", status="ok", started_at=now)
    assert isinstance(decode_event(hb.to_json()), Heartbeat)
    with pytest.raises(ValidationError):
        decode_event(b'{"type": "nope"}')


def test_signal_probabilities_are_bounded() -> None:
    with pytest.raises(ValidationError):
        signal_event(p_model=1.2)
    assert signal_event(valid_until=datetime.now(UTC) + timedelta(seconds=1)).action == "buy_yes"
