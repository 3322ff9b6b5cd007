"""The chaos campaign's Security figures (benchmarks/chaos/security.py): each is 0 against the real code, and
each counts when the setup is made permissive (so a 0 means something)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from benchmarks.chaos.security import live_refusals, loose_files
from services.ctl.cli import new_private_key, sim_environment
from services.ctl.private import owner_only_umask, tighten, write_private


def test_loose_files_finds_a_planted_world_readable_secret_and_a_listable_directory(tmp_path: Path) -> None:
    var = tmp_path / "var"
    (var / "sim").mkdir(parents=True, mode=0o700)
    var.chmod(0o700)
    (var / "sim").chmod(0o700)
    new_private_key(var / "sim" / "desk.key.pem")
    assert loose_files(var) == []
    planted = var / "sim" / "token.secret"
    planted.write_text("s3cret")
    planted.chmod(0o644)
    (var / "log").mkdir(mode=0o700)
    (var / "log").chmod(0o755)
    assert loose_files(var) == ["log (0755)", "sim/token.secret (0644)"]
    (var / "log").chmod(0o711)  # traverse-only: nothing can be listed or read through it
    assert loose_files(var) == ["sim/token.secret (0644)"]
    assert tighten(var) == [var / "log", planted]
    assert loose_files(var) == []


def test_the_files_kdesk_up_makes_itself_are_created_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    from libs.common.config import load_settings
    from services.ctl import runfile

    old = os.umask(0o022)  # a permissive shell: only our explicit modes and the umask kdesk up sets protect
    try:
        var = tmp_path / "var"
        sim_environment(load_settings(sim_base_port=41000), var)  # the desk key pair under var/sim
        runfile.write(var, nats_url="nats://127.0.0.1:1", database_url=None, mode="sim")
        write_private(var / "existing", b"x")
        (var / "existing").chmod(0o644)
        write_private(var / "existing", b"y")  # rewriting a loose file tightens it
        assert loose_files(var) == [], "files kdesk up writes are readable by others"
        owner_only_umask()
        (var / "log").mkdir()
        (var / "log" / "feeds.log").write_text("a line")
        assert loose_files(var) == []
    finally:
        os.umask(old)


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_every_way_into_live_trading_refuses_and_each_check_counts_when_it_does_not(
        nats_url: str, db_url: str, tmp_path: Path) -> None:
    got = await live_refusals(nats_url, db_url, tmp_path / "strict")
    assert got["live_refusal_failures"] == 0, got["details"]
    assert got["live_refusal_checks"] == 4 + 3  # executor, kdesk up, mode w/o executor, not armed, 3 phrases
    assert got["live_order_requests"] == 0
    assert got["live_exchange_requests"] > 0  # the allowed executor did reach the (fake) exchange: not vacuous

    # Permissive setups: a stale live arming in the control bucket, and the exact phrase typed.
    loose = await live_refusals(nats_url, db_url, tmp_path / "armed",
                                armed_until=datetime.now(UTC) + timedelta(hours=1), phrases=("CONFIRM LIVE",))
    failed = {d["check"] for d in loose["details"] if not d["refused"]}
    assert failed == {"executor_allowed_not_armed", "mode_live_typed:'CONFIRM LIVE'"}, loose["details"]
    assert loose["live_refusal_failures"] == 2 and loose["live_order_requests"] > 0

    # An operator's shell exporting KDESK_ALLOW_LIVE=1: the start-up refusals cannot refuse.
    exported = await live_refusals(nats_url, db_url, tmp_path / "exported", extra_env={"KDESK_ALLOW_LIVE": "1"},
                                   phrases=())
    failed = {d["check"] for d in exported["details"] if not d["refused"]}
    assert {"executor_live_without_allow_live", "kdesk_up_live_without_allow_live"} <= failed, exported["details"]
