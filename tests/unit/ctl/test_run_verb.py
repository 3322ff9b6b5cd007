"""`kdesk run <service>`: the image's command runs the service's own `__main__`, in this process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.ctl.cli import build_parser, cmd_run, runnable_services

ROOT = Path(__file__).resolve().parents[3]


def test_runnable_services_are_the_service_modules() -> None:
    """Every services/<name>/__main__.py but ctl, in the supervisor's start order."""
    assert runnable_services()[:6] == ("sim", "feeds", "signals", "executor", "resolver", "notifier")
    assert "ctl" not in runnable_services()


def test_unknown_service_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown name exits 2 and lists the known ones."""
    args = build_parser().parse_args(["run", "nope"])
    assert cmd_run(args) == 2
    assert "one of: sim, feeds" in capsys.readouterr().err


def test_arguments_after_the_name_reach_the_service() -> None:
    """`kdesk run sim --help` is the simulator's own --help (its parser sees what follows the name)."""
    out = subprocess.run([sys.executable, "-m", "services.ctl", "run", "sim", "--help"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    assert "python -m services.sim" in out.stdout and "--keys-dir" in out.stdout


def test_bad_configuration_exits_2_like_the_module(tmp_path: Path) -> None:
    """`kdesk run feeds` with a bad variable fails the way `python -m services.feeds` does: exit 2, naming it."""
    env = {"PATH": "/usr/bin:/bin", "KDESK_MODE": "nonsense", "KDESK_VAR_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "services.ctl", "run", "feeds"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, env=env, check=False)
    assert out.returncode == 2, out.stderr
    assert "KDESK_MODE" in out.stderr
