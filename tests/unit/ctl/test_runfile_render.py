"""The run file a second terminal finds the desk by, and the CLI's money formatting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from services.ctl import render, runfile


def test_the_run_file_holds_no_secret_and_a_dead_owner_is_ignored(tmp_path: Path) -> None:
    runfile.write(tmp_path, nats_url="nats://127.0.0.1:4333", database_url="postgresql://kd:hunter2@db/kdesk",
                  mode="paper")
    text = (tmp_path / runfile.NAME).read_text()
    assert "hunter2" not in text and json.loads(text)["database_url"] is None
    info = runfile.read(tmp_path)
    assert info is not None and (info.mode, info.nats_url) == ("paper", "nats://127.0.0.1:4333")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    data = json.loads(text) | {"pid": int(dead.stdout)}
    (tmp_path / runfile.NAME).write_text(json.dumps(data))
    assert runfile.read(tmp_path) is None  # its kdesk up is gone
    runfile.remove(tmp_path)
    assert (tmp_path / runfile.NAME).exists()  # only its owner removes it; the next `kdesk up` replaces it
    runfile.write(tmp_path, nats_url="nats://127.0.0.1:4333", database_url=None, mode="sim")
    runfile.remove(tmp_path)
    assert not (tmp_path / runfile.NAME).exists()
    (tmp_path / runfile.NAME).write_text("{not json")
    assert runfile.read(tmp_path) is None


def test_money_reads_as_dollars_cents_and_contracts() -> None:
    assert render.usd(123_456_789) == "$12,345.68" and render.usd(-2_500, sign=True) == "-0.25"
    assert render.price(3_100) == "31.00¢" and render.price(1_234) == "12.34¢"
    assert render.contracts(2_500) == "25" and render.contracts(2_878) == "28.78" and render.contracts(-100) == "-1"
    assert render.usd(None) == render.contracts(None) == "—"
