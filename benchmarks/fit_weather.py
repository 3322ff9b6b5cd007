"""Fit the weather model's parameters on honest sim days: `python -m benchmarks.fit_weather [--events N] [--grid G]`.

Builds the seeded sim days of `benchmarks.prediction` once (the feeds' inputs, the ideal and the crowd at
each moment), then scores every combination of the grid by mean |p_model - p_ideal| — which, the ideal being
the conditional probability, is the expected Brier excess over the ideal — and prints them best first with
the by-moment breakdown. The defaults of `WeatherParams` are the winner of such a run (see the note in
`services/signals/weather_model.py`). Real resolved days can be scored the same way against outcomes.

    python -m benchmarks.fit_weather --events 340 \\
        --grid '{"min_sd_f": [0.35, 0.45, 0.55], "lead_sd_f_per_day": [0.25, 0.5, 0.75]}'
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from dataclasses import asdict, replace
from typing import Any

from benchmarks.prediction import WeatherDays, scores
from services.signals.weather_model import WeatherParams


async def fit(n_events: int, grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Score each combination of `grid` (WeatherParams fields -> values); best first."""
    days = WeatherDays(n_events)
    base = WeatherParams()
    unknown = set(grid) - set(asdict(base))
    if unknown:
        raise SystemExit(f"fit_weather: not WeatherParams fields: {sorted(unknown)}")
    out = []
    for combo in itertools.product(*grid.values()):
        params = replace(base, **dict(zip(grid, combo, strict=True)))
        rows = await days.rows(params)
        total = scores([r for moment in rows.values() for r in moment])
        out.append({"params": dict(zip(grid, combo, strict=True)), "abs_error": round(total["abs_error"], 4),
                    "brier_model": round(total["brier_model"], 4),
                    "by_moment": {k: round(scores(v)["abs_error"], 4) for k, v in rows.items()}})
    return sorted(out, key=lambda r: r["abs_error"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=120, help="sim weather events (6 markets each)")
    ap.add_argument("--grid", default='{"min_sd_f": [0.35, 0.45, 0.55]}',
                    help="JSON object: WeatherParams field -> list of values")
    args = ap.parse_args()
    for row in asyncio.run(fit(args.events, json.loads(args.grid))):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
