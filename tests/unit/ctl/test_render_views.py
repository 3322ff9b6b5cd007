"""`kdesk forecast`, `ws-status` and `mode` rendering, `kdesk --help`, and what `kdesk up` says about readiness."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from libs.common.config import Mode
from libs.common.events import Heartbeat, InputFreshness
from services.ctl import cli, render
from services.ctl.readiness import Readiness, why_not_ready
from services.ctl.supervisor import ServiceSpec, Supervisor

FORECAST = {
    "city": "nyc", "station": "KNYC", "series_ticker": "KXHIGHNY", "tz": "America/New_York",
    "climate_date": "2026-12-03", "today": "2026-12-03", "dates": ["2026-12-03", "2026-12-04"],
    "events": ["KXHIGHNY-26DEC03"],
    "run": {"id": "wx:sim:KNYC:1", "run_time": "2026-12-03T05:57:40.544087Z", "age_s": 63.5, "deterministic": {}},
    "members": 5,
    "models": [{"model": "ecmwf_ifs025_ensemble", "members": 3, "min_f": 41.0, "mean_f": 46.2, "max_f": 49.8,
                "tmax_f": [41.0, 47.8, 49.8]},
               {"model": "ncep_gefs025", "members": 2, "min_f": 41.4, "mean_f": 45.05, "max_f": 48.7,
                "tmax_f": [41.4, 48.7]}],
    "blend": {"run_id": "wx:sim:KNYC:1", "members": 5, "mean_f": 45.8, "sd_f": 2.1, "bias_f": 0.4,
              "observed_max_f": 32.2, "computed_at": "2026-12-03T05:58:00Z", "confidence": 0.81},
    "observed": {"observed_at": "2026-12-03T05:51:00Z", "climate_date": "2026-12-03", "temp_f": 31.5,
                 "running_max_f": 32.2, "age_s": 470.4},
    "observed_max_f": 32.2,
    "brackets": [
        {"ticker": "KXHIGHNY-26DEC03-T40", "event_ticker": "KXHIGHNY-26DEC03", "status": "active",
         "strike_type": "less", "floor_strike": None, "cap_strike": "40", "model_prob": 0.0412,
         "yes_bid_ticks": 100, "yes_ask_ticks": 500, "market_prob": 0.03, "book_age_s": 1.0},
        {"ticker": "KXHIGHNY-26DEC03-B40.5", "event_ticker": "KXHIGHNY-26DEC03", "status": "active",
         "strike_type": "between", "floor_strike": "40", "cap_strike": "41", "model_prob": 0.6,
         "yes_bid_ticks": 800, "yes_ask_ticks": 1_350, "market_prob": 0.1075, "book_age_s": 1.0},
        {"ticker": "KXHIGHNY-26DEC03-T41", "event_ticker": "KXHIGHNY-26DEC03", "status": "active",
         "strike_type": "greater", "floor_strike": "41", "cap_strike": None, "model_prob": None,
         "yes_bid_ticks": None, "yes_ask_ticks": 9_000, "market_prob": None, "book_age_s": None}],
    "model_prob_sum": 0.6412,
}


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= render.WIDTH, "\n".join(lines)
    return lines


def test_forecast_shows_members_by_model_brackets_beside_the_market_and_the_observed_max(
        capsys: pytest.CaptureFixture[str]) -> None:
    render.forecast("sim", FORECAST)
    lines = _lines(capsys)
    out = "\n".join(lines)
    assert "mode SIM" in lines[0] and "forecast nyc (KNYC) · 2026-12-03" in lines[0]
    assert "run 2026-12-03 05:57 UTC (64 s old) · 5 member(s) for this day" in out
    assert "observed max so far 32.2°F · last report 31.5°F at 05:51 UTC (8 min old)" in out
    ecmwf = next(line for line in lines if "ecmwf_ifs025_ensemble" in line)
    assert all(x in ecmwf for x in (" 3 ", "41.0", "46.2", "49.8"))
    assert "mean 45.8°F · sd 2.1°F · station bias +0.4°F · confidence 0.81" in out
    low = next(line for line in lines if "T40" in line)
    assert all(x in low for x in ("< 40°", "0.04", "1.00¢", "5.00¢", "0.03", "+0.01"))
    mid = next(line for line in lines if "B40.5" in line)
    assert all(x in mid for x in ("40–41°", "0.60", "8.00¢", "13.50¢", "0.11", "+0.49"))
    high = next(line for line in lines if "T41" in line)
    assert "> 41°" in high and high.count("—") == 4  # no model value, no bid, no mid, no difference
    assert "3 bracket(s); model probabilities sum to 0.641" in out


def test_forecast_without_run_observation_or_markets_says_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    empty = FORECAST | {"run": None, "members": 0, "models": [], "blend": None, "brackets": [], "events": [],
                        "observed": FORECAST["observed"] | {"climate_date": "2026-12-02"}, "observed_max_f": None,
                        "model_prob_sum": None}
    render.forecast("paper", empty)
    out = "\n".join(_lines(capsys))
    assert "ensemble: no run received yet" in out
    assert "observed: none for this day yet (the last report is for 2026-12-02)" in out
    assert "no ensemble members for 2026-12-03" in out
    assert "no markets for 2026-12-03; dates known: 2026-12-03, 2026-12-04" in out


def test_strikes_read_as_kalshi_defines_them() -> None:
    assert render.strike("less", None, "40") == "< 40°" and render.strike("greater", "47", None) == "> 47°"
    assert render.strike("between", "44", "45") == "44–45°" and render.strike("between", 44.5, 45.5) == "44.5–45.5°"
    assert render.strike("greater_or_equal", "50", None) == "≥ 50°" and render.strike("custom", None, None) == "custom"


WS = {"instance": "host-1", "as_of": "2026-12-03T06:00:00Z", "connections": [
    {"name": "kalshi", "kind": "kalshi", "url": "ws://127.0.0.1:45695/trade-api/ws/v2", "state": "connected",
     "connects": 3, "reconnects": 2, "failures_in_a_row": 0, "messages": 12_345, "last_message_age_s": 0.4},
    {"name": "coinbase", "kind": "spot", "url": "wss://ws-feed.exchange.coinbase.com", "state": "reconnecting",
     "connects": 1, "reconnects": 0, "failures_in_a_row": 4, "messages": 80, "last_message_age_s": 2520.0},
    {"name": "kraken", "kind": "spot", "url": "wss://ws.kraken.com/v2", "state": "connecting", "connects": 0,
     "reconnects": 0, "failures_in_a_row": 0, "messages": 0, "last_message_age_s": None}]}


def test_ws_status_lists_each_connection_with_state_age_and_reconnects(capsys: pytest.CaptureFixture[str]) -> None:
    render.ws_status("live", WS)
    lines = _lines(capsys)
    assert "mode LIVE" in lines[0] and "3 connection(s) of feeds/host-1" in lines[0]
    kalshi = next(line for line in lines if "kalshi" in line and "connected" in line)
    assert all(x in kalshi for x in ("0 s ago", " 2 ", "12,345"))
    coinbase = next(line for line in lines if "coinbase" in line and "reconnecting" in line)
    assert all(x in coinbase for x in ("42 min ago", "4×", " 80 "))
    assert "never" in next(line for line in lines if "kraken" in line and "connecting" in line)
    assert any("coinbase" in line and "wss://ws-feed.exchange.coinbase.com" in line for line in lines)
    assert any(line.startswith("failing:") for line in lines)


MODE = {"desk_mode": "sim", "control_mode": None, "live_armed_until": None, "live_armed": False,
        "executor": {"allow_live": False, "blocked": None, "paused": False}}


def test_mode_shows_the_desk_the_control_bucket_and_the_executor(capsys: pytest.CaptureFixture[str]) -> None:
    render.mode_view("sim", MODE)
    out = "\n".join(_lines(capsys))
    assert "desk mode     SIM" in out and "not set: orders allowed in this mode" in out
    assert "live          not armed" in out and "trading · live not allowed (KDESK_ALLOW_LIVE)" in out
    armed = MODE | {"control_mode": "live", "live_armed_until": "2026-12-03T14:00:00+00:00", "live_armed": True,
                    "executor": {"allow_live": True, "blocked": "mode_changed", "paused": False},
                    "changed": "LIVE armed: live orders allowed until 2026-12-03 14:00 UTC"}
    render.mode_view("sim", armed)
    out = " ".join(line.strip() for line in _lines(capsys))
    assert "LIVE: this SIM desk places no new orders (mode_changed)" in out and "KDESK_MODE=live" in out
    assert "armed until 2026-12-03 14:00 UTC" in out and "blocked: mode_changed · live allowed" in out
    assert out.endswith("LIVE armed: live orders allowed until 2026-12-03 14:00 UTC")
    render.mode_view("sim", MODE | {"live_armed_until": "2026-12-01T00:00:00+00:00", "executor": None})
    out = "\n".join(_lines(capsys))
    assert "not armed (expired 2026-12-01 00:00 UTC)" in out and "executor      not answering" in out


def test_help_lists_every_command_on_one_line_within_80_columns(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    lines = _lines(capsys)
    sub = next(a for a in parser._actions if a.dest == "command")
    names = list(sub.choices)  # type: ignore[union-attr]
    assert {"forecast", "ws-status", "mode", "status", "up", "chat"} <= set(names)
    for name in names:
        [line] = [line for line in lines if line.startswith(f"    {name} ")]
        assert len(line.split(maxsplit=1)[1]) > 20, f"{name}: no useful help"
        nxt = lines[lines.index(line) + 1]
        assert not (nxt.startswith(" " * cli.HELP_AT) and nxt.strip()), f"{name}: help wraps: {nxt!r}"
    for name in ("forecast", "ws-status", "mode", "status", "positions", "pnl", "signals", "orderbook", "alerts",
                 "pause", "resume", "flatten", "balance", "orders", "fills", "accuracy"):
        assert "--json" in parser._subparsers._group_actions[0].choices[name].format_help()  # type: ignore[union-attr]


def test_the_first_status_block_says_where_the_logs_are_and_how_to_reach_the_desk(tmp_path: Path) -> None:
    lines = cli.how_to_use(tmp_path / "var", log_dir=tmp_path / "var" / "log", chat=True)
    text = "\n".join(lines)
    assert f"{tmp_path / 'var' / 'log'}/<service>.log" in text
    assert f"with KDESK_VAR_DIR={tmp_path / 'var'}" in text  # not the default var: the other terminal needs it
    assert " status`" in text and " --help` lists every command" in text and " chat` talks to the desk's bot" in text
    assert all(len("[kdesk] " + line) <= 80 or "/" in line for line in lines)
    assert "chat" not in "\n".join(cli.how_to_use(Path("var"), log_dir=Path("var/log"), chat=False))


def _beat(service: str, started_at: datetime, *, stale: tuple[str, ...] = ()) -> Heartbeat:
    inputs = {name: InputFreshness(age_s=None, max_age_s=30, stale=True) for name in stale}
    return Heartbeat(ts_event=datetime.now(UTC), mode=Mode.SIM, service=service, instance="i", started_at=started_at,
                     status="degraded" if stale else "ok", inputs=inputs)


async def test_a_service_turns_ready_after_two_passing_heartbeats_of_its_own_process() -> None:
    said: list[str] = []
    sup = Supervisor([ServiceSpec("feeds", (sys.executable, "-c", "import time; time.sleep(30)")),
                      ServiceSpec("resolver", (sys.executable, "-c", "import time; time.sleep(30)"))], say=said.append)
    await sup.start()
    try:
        r = Readiness(sup, say=said.append, health_interval_s=5)
        feeds = sup.child("feeds")
        assert feeds is not None and sup.shown_state(feeds) == "starting"
        r.on_beat(_beat("feeds", feeds.spawned_at - timedelta(minutes=5)))  # the last beat of an earlier process
        r.on_beat(_beat("feeds", feeds.spawned_at + timedelta(seconds=1)))
        assert sup.shown_state(feeds) == "starting"  # one pass proves little: inputs may not be declared yet
        r.on_beat(_beat("feeds", feeds.spawned_at + timedelta(seconds=1), stale=("kalshi_ws", "ensemble_nyc")))
        assert sup.shown_state(feeds) == "degraded"
        assert said[-1].startswith("[status]") and said[-1].endswith("stale: ensemble_nyc, kalshi_ws")
        for _ in range(2):
            r.on_beat(_beat("feeds", feeds.spawned_at + timedelta(seconds=1)))
        assert sup.shown_state(feeds) == "ready" and "ready" in said[-1] and "desk ready" not in " ".join(said)
        resolver = sup.child("resolver")
        assert resolver is not None
        for _ in range(2):
            r.on_beat(_beat("resolver", resolver.spawned_at))
        assert said[-1].startswith("[kdesk] desk ready: every service passed its health check")
        r.on_beat(_beat("resolver", resolver.spawned_at, stale=("exchange",)))
        assert said[-1] == "[kdesk] desk not ready: resolver is degraded (stale: exchange)"
        assert all(len(line) <= 80 for line in said if line.startswith("[status]"))
    finally:
        await sup.stop()


def test_why_not_ready_fits_its_width_and_counts_what_it_leaves_out() -> None:
    hb = _beat("feeds", datetime.now(UTC), stale=tuple(f"ensemble_city{i}" for i in range(9)))
    text = why_not_ready(hb, width=60)
    assert len(text) <= 60 and text.startswith("stale: ensemble_city0, ") and text.endswith(" +6")


def test_confirmation_prompt_reads_one_line_or_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    r, w = os.pipe()
    os.write(w, b"CONFIRM LIVE\n")
    with os.fdopen(r) as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        assert cli._typed_within("? ", 1.0) == "CONFIRM LIVE"
        assert cli._typed_within("? ", 0.05) is None  # nothing more typed
    os.close(w)
