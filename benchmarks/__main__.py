"""Run every benchmark module and print one JSON report (also benchmarks/results/latest.json).

Each module in `SUITES` exposes `async def run() -> dict[str, float | int | str]`; keys must be
unique across modules. Later issues append their modules here.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

SUITES = ("benchmarks.bus", "benchmarks.book", "benchmarks.feeds", "benchmarks.signals", "benchmarks.executor",
          "benchmarks.resolver", "benchmarks.prediction", "benchmarks.notifier", "benchmarks.llm",
          "benchmarks.dashboard", "benchmarks.scale", "benchmarks.strategies")
RESULTS = Path(__file__).parent / "results" / "latest.json"


async def main(names: list[str]) -> dict[str, object]:
    """Run the named suites (all by default) and merge their results."""
    report: dict[str, object] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.system()}",
    }
    for name in names or SUITES:
        started = time.perf_counter()
        result = await importlib.import_module(name).run()
        overlap = set(result) & set(report)
        if overlap:
            raise SystemExit(f"benchmark {name} reports keys already taken: {sorted(overlap)}")
        report.update(result)
        print(f"# {name}: {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return report


if __name__ == "__main__":
    from libs.common.logs import configure_logging

    configure_logging("bench", "WARNING", "console")
    out = asyncio.run(main(sys.argv[1:]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
