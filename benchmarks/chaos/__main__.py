"""`python -m benchmarks.chaos` (`make chaos`): the fault campaign, then the fuzz campaign; prints the report and
writes it to benchmarks/results/reliability.json.

Environment: KDESK_CHAOS_S (seconds of faults, default 300), KDESK_CHAOS_SEED (18), KDESK_CHAOS_FUZZ_CASES (cases
per fuzz target; default benchmarks/fuzz.py's, 0 skips it), KDESK_CHAOS_DIR (where the run's servers, data and
logs go; default a new temporary directory, kept when an invariant fails), KDESK_CHAOS_OUT (the report's path),
KDESK_CHAOS_GAP_S (mean seconds between two faults of one cheap kind, 2.6), KDESK_CHAOS_HEAVY_GAP_S (the same for
process kills, 14), KDESK_CHAOS_SERVER_GAP_S / _WAVE_S / _STORM_S (NATS and PostgreSQL restarts: one every 1.4 s of
each in the first 10 s of every 20 s), KDESK_CHAOS_CLUSTER (0: no three-node cluster drill beside the window),
KDESK_CHAOS_FORK (0: start services with exec, not the zygote).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "results" / "reliability.json"
# Each must be 0 (issue 18); `ok` is true when all are.
INVARIANTS = ("duplicate_orders", "unknown_orders", "lost_fills", "phantom_fills", "ledger_diffs", "cap_breaches",
              "double_decisions", "crashes_not_restarted", "lost_messages", "undelivered_alerts", "secret_leaks",
              "unauthorized_commands", "live_refusal_failures", "loose_files", "fuzz_crashes")


def chaos(duration_s: float, seed: int, fuzz_cases: int, root: Path, *, security: bool = True) -> dict[str, Any]:
    """The whole report: the fault campaign under `root`, then the fuzz campaign. `security`: also the live-path
    refusals and the file modes of `kdesk up` (benchmarks/chaos/security.py; they have tests of their own)."""
    from benchmarks import fuzz
    from benchmarks.chaos.campaign import Campaign

    report: dict[str, Any] = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"), "run_dir": str(root)}
    report.update(asyncio.run(Campaign(root, duration_s=duration_s, seed=seed, security=security).run()))
    if fuzz_cases > 0:
        f = asyncio.run(fuzz.campaign_in_children(fuzz_cases, seed))
        report.update({"fuzz_cases": f["fuzz_cases"], "fuzz_crashes": f["fuzz_crashes"],
                       "fuzz_seconds": f["fuzz_seconds"],
                       "fuzz_crashes_by_target": {k: v["crashes"] for k, v in f["fuzz_by_target"].items()
                                                  if v["crashes"]}})
    else:
        report.update({"fuzz_cases": 0, "fuzz_crashes": 0})
    failed = [k for k in INVARIANTS if report.get(k)]
    report["invariants_failed"] = failed
    report["ok"] = not failed
    return report


def main() -> int:
    """Run with the environment's settings; exit 1 when an invariant is not 0."""
    from benchmarks import fuzz
    from libs.common.logs import configure_logging

    configure_logging("chaos", "WARNING", "console")
    env = os.environ
    duration = float(env.get("KDESK_CHAOS_S", "300"))
    seed = int(env.get("KDESK_CHAOS_SEED", "18"))
    cases = int(env.get("KDESK_CHAOS_FUZZ_CASES", str(fuzz.DEFAULT_CASES_PER_TARGET)))
    given = env.get("KDESK_CHAOS_DIR")
    root = Path(given) if given else Path(tempfile.mkdtemp(prefix="kdesk-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    report = chaos(duration, seed, cases, root)
    out = Path(env.get("KDESK_CHAOS_OUT") or RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(json.dumps(report, indent=2, default=str))
    if report["ok"] and not given:
        shutil.rmtree(root, ignore_errors=True)
    elif not report["ok"]:
        print(f"chaos: invariants not 0: {report['invariants_failed']}; logs and data kept in {root}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
